/**
 * The request bodies mix1009/sdwebuiapi (webuiapi/webuiapi.py) posts to A1111, so tests send exactly what that
 * client sends: every default of WebUIApi.txt2img() and WebUIApi.img2img(), in its key order, with the client's
 * own defaults (sampler "Euler a", scheduler "automatic"; steps 20 unless given).
 */

/** What the tests choose; everything else is the client's default. */
export interface SdwebuiapiArgs {
  prompt: string;
  seed: number;
  batch_size?: number;
  n_iter?: number;
  steps?: number;
  width: number;
  height: number;
  negative_prompt?: string;
  sampler_name?: string;
  scheduler?: string;
  cfg_scale?: number;
  override_settings?: Record<string, unknown>;
}

/** The body of `WebUIApi().txt2img(…)`, hires-fix arguments included (enable_hr=True, hr_upscaler=…). */
export function sdwebuiapiTxt2img(
  args: SdwebuiapiArgs & {
    enable_hr?: boolean;
    denoising_strength?: number;
    hr_scale?: number;
    hr_upscaler?: string;
    hr_second_pass_steps?: number;
    hr_resize_x?: number;
    hr_resize_y?: number;
  },
): Record<string, unknown> {
  const sampler = args.sampler_name ?? "Euler a";
  return {
    enable_hr: args.enable_hr ?? false,
    hr_scale: args.hr_scale ?? 2,
    hr_upscaler: args.hr_upscaler ?? "Latent",
    hr_second_pass_steps: args.hr_second_pass_steps ?? 0,
    hr_resize_x: args.hr_resize_x ?? 0,
    hr_resize_y: args.hr_resize_y ?? 0,
    hr_checkpoint_name: null,
    hr_sampler_name: null,
    hr_scheduler: null,
    hr_prompt: "",
    hr_negative_prompt: "",
    denoising_strength: args.denoising_strength ?? 0.7,
    firstphase_width: 0,
    firstphase_height: 0,
    prompt: args.prompt,
    styles: [],
    seed: args.seed,
    subseed: -1,
    subseed_strength: 0.0,
    seed_resize_from_h: 0,
    seed_resize_from_w: 0,
    batch_size: args.batch_size ?? 1,
    n_iter: args.n_iter ?? 1,
    steps: args.steps ?? 20,
    cfg_scale: args.cfg_scale ?? 7.0,
    width: args.width,
    height: args.height,
    restore_faces: false,
    tiling: false,
    do_not_save_samples: false,
    do_not_save_grid: false,
    negative_prompt: args.negative_prompt ?? "",
    eta: 1.0,
    s_churn: 0,
    s_tmax: 0,
    s_tmin: 0,
    s_noise: 1,
    override_settings: args.override_settings ?? {},
    override_settings_restore_afterwards: true,
    sampler_name: sampler,
    scheduler: args.scheduler ?? "automatic",
    sampler_index: sampler,
    script_name: null,
    script_args: [],
    send_images: true,
    save_images: false,
    alwayson_scripts: {},
  };
}

/** sdwebuiapi's b64_img: a PNG as a data URL. */
export function b64Img(png: Uint8Array): string {
  return `data:image/png;base64,${Buffer.from(png).toString("base64")}`;
}

/**
 * The body of `WebUIApi().img2img(images=[…], mask_image=…, …)`: init_images as data URLs (b64_img), `mask` only
 * when a mask image is given, appended last as the client does.
 */
export function sdwebuiapiImg2img(
  args: SdwebuiapiArgs & {
    images: Uint8Array[];
    mask_image?: Uint8Array;
    resize_mode?: number;
    denoising_strength?: number;
    mask_blur?: number;
    inpainting_fill?: number;
    inpaint_full_res?: boolean;
    inpaint_full_res_padding?: number;
    inpainting_mask_invert?: number;
    initial_noise_multiplier?: number;
    include_init_images?: boolean;
  },
): Record<string, unknown> {
  const sampler = args.sampler_name ?? "Euler a";
  const payload: Record<string, unknown> = {
    init_images: args.images.map(b64Img),
    resize_mode: args.resize_mode ?? 0,
    denoising_strength: args.denoising_strength ?? 0.75,
    mask_blur: args.mask_blur ?? 4,
    inpainting_fill: args.inpainting_fill ?? 0,
    inpaint_full_res: args.inpaint_full_res ?? true,
    inpaint_full_res_padding: args.inpaint_full_res_padding ?? 0,
    inpainting_mask_invert: args.inpainting_mask_invert ?? 0,
    initial_noise_multiplier: args.initial_noise_multiplier ?? 1,
    prompt: args.prompt,
    styles: [],
    seed: args.seed,
    subseed: -1,
    subseed_strength: 0,
    seed_resize_from_h: 0,
    seed_resize_from_w: 0,
    batch_size: args.batch_size ?? 1,
    n_iter: args.n_iter ?? 1,
    steps: args.steps ?? 20,
    cfg_scale: args.cfg_scale ?? 7.0,
    image_cfg_scale: 1.5,
    width: args.width,
    height: args.height,
    restore_faces: false,
    tiling: false,
    do_not_save_samples: false,
    do_not_save_grid: false,
    negative_prompt: args.negative_prompt ?? "",
    eta: 1.0,
    s_churn: 0,
    s_tmax: 0,
    s_tmin: 0,
    s_noise: 1,
    override_settings: args.override_settings ?? {},
    override_settings_restore_afterwards: true,
    sampler_name: sampler,
    scheduler: args.scheduler ?? "automatic",
    sampler_index: sampler,
    include_init_images: args.include_init_images ?? false,
    script_name: null,
    script_args: [],
    send_images: true,
    save_images: false,
    alwayson_scripts: {},
  };
  if (args.mask_image) payload.mask = b64Img(args.mask_image);
  return payload;
}
