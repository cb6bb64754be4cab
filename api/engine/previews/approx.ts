/**
 * The `approx` preview: each latent cell projected to one RGB pixel by a per-family linear map, as ComfyUI's
 * Latent2RGBPreviewer (latent_preview.py) does: rgb_k = Σ_c z_c · F[c][k] + b_k over the 4 latent channels z (the
 * latents as the UNet sees them, scaled by the VAE's scaling factor), then preview_to_image's
 * round((clamp(rgb, −1, 1) + 1) · 127.5). The picture is 1/8 of the image's size, one pixel per latent cell.
 *
 * F and b are ComfyUI's `latent_rgb_factors` and `latent_rgb_factors_bias` (comfyanonymous/ComfyUI,
 * comfy/latent_formats.py at commit 040a3243468ecefd1f2802592d90458f1ce4d65f): class SD15, which ComfyUI also uses
 * for SD 2.x and which has no bias, and class SDXL. AUTOMATIC1111's "Approx cheap"
 * (modules/sd_vae_approx.py cheap_approximation) projects with coefficients of its own and no bias; sdx uses
 * ComfyUI's for both families, since its SDXL set comes with the bias that centres SDXL's latents.
 */
import type { RgbPixels } from "../pipeline/types.ts";

/** A latent → RGB projection: F as [channel][r, g, b] and the bias b as [r, g, b]. */
export interface ApproxFactors {
  factors: readonly (readonly [number, number, number])[];
  bias: readonly [number, number, number];
}

/** ComfyUI's SD15 latent format (SD 1.x and 2.x). */
export const SD_APPROX: ApproxFactors = {
  factors: [
    [0.3512, 0.2297, 0.3227],
    [0.325, 0.4974, 0.235],
    [-0.2829, 0.1762, 0.2721],
    [-0.212, -0.2616, -0.7177],
  ],
  bias: [0, 0, 0],
};

/** ComfyUI's SDXL latent format. */
export const SDXL_APPROX: ApproxFactors = {
  factors: [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
  ],
  bias: [0.1084, -0.0175, -0.0011],
};

/**
 * One image's latents `[4, h, w]` (flat, channel-major) as interleaved 8-bit RGB at w × h. The map is computed in
 * float64 (ComfyUI in the latents' dtype); the two agree except at exact rounding ties. torch's round_ rounds half
 * to even, as here (⌊x + ½⌋, one less at an odd tie).
 */
export function approxRgb(
  latents: Float32Array,
  latentH: number,
  latentW: number,
  f: ApproxFactors,
): RgbPixels {
  const plane = latentH * latentW;
  if (latents.length < 4 * plane)
    throw new Error(`approx preview: ${latents.length} latent values for 4 × ${latentH} × ${latentW}`);
  // Plain float64 locals keep the loop to arithmetic (3–4× faster than destructuring the arrays).
  const k = Float64Array.from([...f.factors.flat(), ...f.bias]);
  const r0 = k[0] as number;
  const g0 = k[1] as number;
  const b0 = k[2] as number;
  const r1 = k[3] as number;
  const g1 = k[4] as number;
  const b1 = k[5] as number;
  const r2 = k[6] as number;
  const g2 = k[7] as number;
  const b2 = k[8] as number;
  const r3 = k[9] as number;
  const g3 = k[10] as number;
  const b3 = k[11] as number;
  const rb = k[12] as number;
  const gb = k[13] as number;
  const bb = k[14] as number;
  const data = new Uint8Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    const z0 = latents[p] as number;
    const z1 = latents[plane + p] as number;
    const z2 = latents[2 * plane + p] as number;
    const z3 = latents[3 * plane + p] as number;
    data[3 * p] = toByte(z0 * r0 + z1 * r1 + z2 * r2 + z3 * r3 + rb);
    data[3 * p + 1] = toByte(z0 * g0 + z1 * g1 + z2 * g2 + z3 * g3 + gb);
    data[3 * p + 2] = toByte(z0 * b0 + z1 * b1 + z2 * b2 + z3 * b3 + bb);
  }
  return { data, width: latentW, height: latentH };
}

/** ComfyUI's preview_to_image for one value: round((clamp(v, −1, 1) + 1) · 127.5), half to even. */
function toByte(v: number): number {
  if (v <= -1) return 0;
  if (v >= 1) return 255;
  const x = (v + 1) * 127.5;
  const r = Math.floor(x + 0.5);
  return r - x === 0.5 && (r & 1) === 1 ? r - 1 : r;
}
