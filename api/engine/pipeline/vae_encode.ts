/**
 * From pixels to latents, as diffusers' image-to-image pipelines do it: VaeImageProcessor.preprocess, the VAE
 * encoder's moments, and a sample of the diagonal Gaussian they describe drawn with the image's generator.
 */
import { OnnxModel } from "../onnx/runtime.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import { expf } from "../schedulers/sleef.ts";
import { GenerationInvalid } from "./errors.ts";
import type { GenerateHooks, PipelineComponents } from "./types.ts";

/** VaeImageProcessor.preprocess of 8-bit RGB: x = float32(v)/255, then 2x − 1, as NCHW [1, 3, H, W]. */
export function rgbToSample(rgb: Uint8Array, width: number, height: number): Float32Array {
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) out[c * plane + p] = f32(2 * f32((rgb[p * 3 + c] as number) / 255) - 1);
  }
  return out;
}

/** The encoder session, created on first use (most generations never need it). */
async function encoderOf(components: PipelineComponents, hooks: GenerateHooks): Promise<OnnxModel> {
  await hooks.enterStage?.("vae_encoder");
  if (components.vaeEncoder) return components.vaeEncoder;
  const path = components.paths.vae_encoder;
  if (path === null)
    throw new GenerationInvalid("this model has no VAE encoder, so it cannot start from an image");
  components.vaeEncoder = await OnnxModel.load(path, { provider: components.provider });
  return components.vaeEncoder;
}

/**
 * AutoencoderKL.encode's moments for one image: Encoder → quant_conv = mean ‖ logvar, `[2·C, H/8, W/8]` flat
 * (C latent channels).
 */
export async function encodeMoments(
  components: PipelineComponents,
  sample: Float32Array,
  width: number,
  height: number,
  hooks: GenerateHooks,
): Promise<Float32Array> {
  const encoder = await encoderOf(components, hooks);
  const out = await encoder.run({ sample: { data: sample, dims: [1, 3, height, width] } }, [
    "latent_parameters",
  ]);
  return (out.latent_parameters as { data: Float32Array }).data;
}

/**
 * DiagonalGaussianDistribution.sample(generator) times the VAE's scaling factor s (diffusers' vae.py, float32):
 *   z = s·(μ + σ·ε),  σ = exp(½·clamp(log σ², −30, 20)),  ε ~ N(0, I) drawn from `generator` (one draw of μ's shape)
 * (Kingma & Welling 2014, the reparameterisation z = μ + σ ⊙ ε).
 */
export function sampleLatents(
  moments: Float32Array,
  generator: TorchGenerator,
  scalingFactor: number,
  latentShape: readonly [number, number, number],
): Float32Array {
  const [c, h, w] = latentShape;
  const size = c * h * w;
  const eps = generator.randn([1, c, h, w]);
  const s = f32(scalingFactor);
  const z = new Float32Array(size);
  for (let k = 0; k < size; k++) {
    const logvar = Math.min(Math.max(moments[size + k] as number, -30), 20);
    const std = expf(f32(0.5 * logvar));
    z[k] = f32(s * f32((moments[k] as number) + f32(std * (eps[k] as number))));
  }
  return z;
}
