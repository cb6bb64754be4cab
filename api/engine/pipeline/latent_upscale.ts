/**
 * The hires fix's latent upscalers, as torch.nn.functional.interpolate computes them on x86 CPUs (torch 1.13,
 * the build the references ran on): "bilinear" (align_corners=False, no antialias) — AUTOMATIC1111's "Latent" —
 * and "nearest" — its "Latent (nearest)". Each channel of `[C, H, W]` flat latents is resized alone.
 */
import { f32, fmaF32 } from "../rng/float32.ts";

export type LatentUpscaleMode = "bilinear" | "nearest";

/** One axis of bilinear resampling: source indices and weights per output index. */
interface AxisWeights {
  i0: Int32Array;
  i1: Int32Array;
  w0: Float32Array;
  w1: Float32Array;
}

/**
 * torch's `area_pixel_compute_source_index` with align_corners=False: the scale in/out is a float32, the source
 * coordinate src = max(0, scale·(dst + ½) − ½) is computed in float64, i0 = ⌊src⌋, i1 = min(i0 + 1, in − 1),
 * λ1 = float32(src − i0), λ0 = float32(1 − λ1).
 */
function bilinearAxis(inSize: number, outSize: number): AxisWeights {
  const scale = f32(inSize / outSize);
  const axis: AxisWeights = {
    i0: new Int32Array(outSize),
    i1: new Int32Array(outSize),
    w0: new Float32Array(outSize),
    w1: new Float32Array(outSize),
  };
  for (let d = 0; d < outSize; d++) {
    const src = Math.max(0, scale * (d + 0.5) - 0.5);
    const i0 = Math.floor(src);
    const l1 = f32(src - i0);
    axis.i0[d] = i0;
    axis.i1[d] = Math.min(i0 + 1, inSize - 1);
    axis.w1[d] = l1;
    axis.w0[d] = f32(1 - l1);
  }
  return axis;
}

/** torch's `nearest_idx`: src = min(⌊dst · float32(in/out)⌋, in − 1), the product in float32. */
function nearestAxis(inSize: number, outSize: number): Int32Array {
  const scale = f32(inSize / outSize);
  const idx = new Int32Array(outSize);
  for (let d = 0; d < outSize; d++) idx[d] = Math.min(Math.floor(f32(d * scale)), inSize - 1);
  return idx;
}

/**
 * Resizes `[channels, inH, inW]` latents to `[channels, outH, outW]`. Bilinear interpolates along the width first
 * and then the height, each as one fused multiply-add a·w0 + float32(b·w1) — the contraction the compiler made
 * in torch's kernel, which this reproduces bit for bit.
 */
export function upscaleLatents(
  latents: Float32Array,
  channels: number,
  inH: number,
  inW: number,
  outH: number,
  outW: number,
  mode: LatentUpscaleMode,
): Float32Array {
  const out = new Float32Array(channels * outH * outW);
  if (mode === "nearest") {
    const rows = nearestAxis(inH, outH);
    const cols = nearestAxis(inW, outW);
    for (let c = 0; c < channels; c++) {
      for (let y = 0; y < outH; y++) {
        const src = c * inH * inW + (rows[y] as number) * inW;
        const dst = c * outH * outW + y * outW;
        for (let x = 0; x < outW; x++) out[dst + x] = latents[src + (cols[x] as number)] as number;
      }
    }
    return out;
  }
  const ry = bilinearAxis(inH, outH);
  const rx = bilinearAxis(inW, outW);
  const lerp = (a: number, wa: number, b: number, wb: number) => fmaF32(a, wa, f32(b * wb));
  for (let c = 0; c < channels; c++) {
    const plane = c * inH * inW;
    for (let y = 0; y < outH; y++) {
      const r0 = plane + (ry.i0[y] as number) * inW;
      const r1 = plane + (ry.i1[y] as number) * inW;
      const l0 = ry.w0[y] as number;
      const l1 = ry.w1[y] as number;
      const dst = c * outH * outW + y * outW;
      for (let x = 0; x < outW; x++) {
        const j0 = rx.i0[x] as number;
        const j1 = rx.i1[x] as number;
        const m0 = rx.w0[x] as number;
        const m1 = rx.w1[x] as number;
        const t0 = lerp(latents[r0 + j0] as number, m0, latents[r0 + j1] as number, m1);
        const t1 = lerp(latents[r1 + j0] as number, m0, latents[r1 + j1] as number, m1);
        out[dst + x] = lerp(t0, l0, t1, l1);
      }
    }
  }
  return out;
}
