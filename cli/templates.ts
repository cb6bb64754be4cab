/** The commented files `sdx init` writes: a project that works as-is against a GPU server on this machine. */
import { DEFAULT_SERVER_URL, GENERATE_DEFAULTS } from "../contract/index.ts";

export function configTemplate(name: string, serverUrl: string = DEFAULT_SERVER_URL): string {
  return `# sdx project "${name}". Every key is checked before anything runs: \`sdx validate --project ${name}\`;
# \`sdx list --project ${name}\` shows the parameters each prompt set would be sent with.

# The sdx server (start one with \`bun api/index.ts\`); \`--server URL\` overrides it for one command.
server_url: ${serverUrl}

# Name of this project's folder under the outputs folder (default: the project's folder name).
# name: ${name}

# The server's model to use (\`sdx models\` lists them; default: the server's default model). \`--model\` and
# \`--all-models\` override it for one command.
# model: my-model

# Generation parameters for every prompt set; a set's own \`params\` override them, and \`--batch\`/\`--seed\`
# override both. \`sdx gen --help\` and the API docs (/swagger on the server) list every parameter.
default_params:
  width: 512 # multiple of 64 for SD UNets; omit to use the model's native size
  height: 512
  num_steps: ${GENERATE_DEFAULTS.num_steps}
  guidance_scale: ${GENERATE_DEFAULTS.guidance_scale} # 1 or less turns classifier-free guidance (and the negative prompt) off
  scheduler_type: ${GENERATE_DEFAULTS.scheduler_type} # \`curl <server>/v1/schedulers\` lists them all
  karras_sigmas: true
  # clip_skip: ${GENERATE_DEFAULTS.clip_skip} # AUTOMATIC1111 counting: 1 = last text-encoder layer
  # seed: 42 # omit (or -1) for a random seed per run; image i of a batch uses seed + i
  # batch_size: ${GENERATE_DEFAULTS.batch_size} # images per run when --batch is not given

# A local LLM (https://ollama.com) that writes a new prompt for every image of \`sdx gen --ollama\`.
# Prompts are cut to CLIP's 75 tokens at a word boundary; when Ollama is slow, unreachable or lacks the
# model, \`fallback_prompt\` is used and the image's metadata says so.
ollama:
  server_url: http://127.0.0.1:11434
  model: llama3.2 # \`ollama pull llama3.2\` first
  system_message: >-
    You write one vivid, concrete Stable Diffusion prompt per answer: subject, setting, lighting and style
    as comma-separated phrases, under 60 words, no preamble, no quotes.
  prompt: Write a prompt for a surprising landscape painting.
  negative_prompt: blurry, low quality, watermark, text
  fallback_prompt: a quiet mountain lake at sunrise, mist, pine forest, oil painting
  # temperature: 0.8
  # timeout_seconds: 60
`;
}

export function promptsTemplate(): string {
  return `# Prompt sets: \`sdx gen --project <project> --prompt <name>\`. \`name\` is also the output folder name:
# letters, digits, '.', '-' and '_'. Each set may override any of config.yaml's default_params.
prompt_sets:
  - name: lighthouse
    prompt: a lighthouse on a rocky coast at dawn, dramatic clouds, oil painting
    negative_prompt: blurry, low quality, watermark

  - name: portrait
    prompt: portrait of an old fisherman, weathered face, soft window light, 85mm photograph
    negative_prompt: cartoon, deformed hands, text
    params:
      guidance_scale: 6
      seed: 1234 # the same seed and parameters remake the same image

  # Image to image and inpainting: files relative to this folder (PNG, JPEG or WebP; never outside it).
  # - name: harbour-at-dusk
  #   prompt: the same harbour at dusk, warm lamplight, oil painting
  #   params:
  #     init_image: images/harbour.png
  #     mask_image: images/harbour_sky.png # optional: white is repainted, black kept
  #     strength: 0.6 # how much is repainted, in (0, 1]
  #     hires: { scale: 2, strength: 0.5 } # optional: a second pass at twice the size
`;
}
