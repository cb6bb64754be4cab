/**
 * Tiled VAE decoding as diffusers' AutoencoderKL.tiled_decode: the latents are cut into overlapping tiles
 * (tile_latent_min_size with 25 % overlap), each tile is decoded alone, and neighbouring tiles are blended
 * linearly over `blend_extent` pixels (blend_v, then blend_h) before the rows are cropped and stitched.
 * Peak memory is that of one tile whatever the image size.
 */

export interface TileGeometry {
  /** Latent tile edge (diffusers' tile_latent_min_size = sample_size / vae_scale_factor). */
  latentTile: number;
  /** Pixel tile edge (tile_sample_min_size = the VAE config's sample_size). */
  sampleTile: number;
  /** diffusers' tile_overlap_factor. */
  overlap: number;
}

/** A decoded image in CHW layout. */
export interface Chw {
  data: Float32Array;
  c: number;
  h: number;
  w: number;
}

export type DecodeTile = (latents: Chw) => Promise<Chw>;

function crop(src: Chw, y0: number, x0: number, h: number, w: number): Chw {
  const out = new Float32Array(src.c * h * w);
  for (let c = 0; c < src.c; c++) {
    for (let y = 0; y < h; y++) {
      const from = c * src.h * src.w + (y0 + y) * src.w + x0;
      out.set(src.data.subarray(from, from + w), c * h * w + y * w);
    }
  }
  return { data: out, c: src.c, h, w };
}

/** b's first rows fade in over a's last rows: b[y] = a[H−e+y]·(1 − y/e) + b[y]·(y/e). In place on b. */
function blendV(a: Chw, b: Chw, extent: number): void {
  const e = Math.min(a.h, b.h, extent);
  for (let c = 0; c < b.c; c++) {
    for (let y = 0; y < e; y++) {
      const t = Math.fround(y / e);
      const aRow = c * a.h * a.w + (a.h - e + y) * a.w;
      const bRow = c * b.h * b.w + y * b.w;
      for (let x = 0; x < b.w; x++) {
        const av = a.data[aRow + x] as number;
        const bv = b.data[bRow + x] as number;
        b.data[bRow + x] = Math.fround(Math.fround(av * Math.fround(1 - t)) + Math.fround(bv * t));
      }
    }
  }
}

/** The same across columns: b[:, x] = a[:, W−e+x]·(1 − x/e) + b[:, x]·(x/e). In place on b. */
function blendH(a: Chw, b: Chw, extent: number): void {
  const e = Math.min(a.w, b.w, extent);
  for (let c = 0; c < b.c; c++) {
    for (let y = 0; y < b.h; y++) {
      const aRow = c * a.h * a.w + y * a.w;
      const bRow = c * b.h * b.w + y * b.w;
      for (let x = 0; x < e; x++) {
        const t = Math.fround(x / e);
        const av = a.data[aRow + a.w - e + x] as number;
        const bv = b.data[bRow + x] as number;
        b.data[bRow + x] = Math.fround(Math.fround(av * Math.fround(1 - t)) + Math.fround(bv * t));
      }
    }
  }
}

/** Whether diffusers would tile these latents (an edge longer than one latent tile). */
export function needsTiling(latentH: number, latentW: number, geometry: TileGeometry): boolean {
  return latentH > geometry.latentTile || latentW > geometry.latentTile;
}

/** Decodes one image's latents (CHW) tile by tile; returns the CHW image and how many tiles were decoded. */
export async function decodeTiled(
  latents: Chw,
  geometry: TileGeometry,
  decode: DecodeTile,
): Promise<{ image: Chw; tiles: number }> {
  const overlapSize = Math.floor(geometry.latentTile * (1 - geometry.overlap));
  const blendExtent = Math.floor(geometry.sampleTile * geometry.overlap);
  const rowLimit = geometry.sampleTile - blendExtent;
  const rows: Chw[][] = [];
  let tiles = 0;
  for (let i = 0; i < latents.h; i += overlapSize) {
    const row: Chw[] = [];
    for (let j = 0; j < latents.w; j += overlapSize) {
      const tile = crop(
        latents,
        i,
        j,
        Math.min(geometry.latentTile, latents.h - i),
        Math.min(geometry.latentTile, latents.w - j),
      );
      row.push(await decode(tile));
      tiles++;
    }
    rows.push(row);
  }
  const croppedRows: Chw[][] = rows.map((row, i) =>
    row.map((tile, j) => {
      const above = rows[i - 1]?.[j];
      if (above) blendV(above, tile, blendExtent);
      const left = row[j - 1];
      if (left) blendH(left, tile, blendExtent);
      return crop(tile, 0, 0, Math.min(rowLimit, tile.h), Math.min(rowLimit, tile.w));
    }),
  );
  const c = croppedRows[0]?.[0]?.c ?? 3;
  const h = croppedRows.reduce((sum, row) => sum + (row[0]?.h ?? 0), 0);
  const w = (croppedRows[0] ?? []).reduce((sum, tile) => sum + tile.w, 0);
  const out = new Float32Array(c * h * w);
  let y0 = 0;
  for (const row of croppedRows) {
    let x0 = 0;
    for (const tile of row) {
      for (let ch = 0; ch < c; ch++) {
        for (let y = 0; y < tile.h; y++) {
          const from = ch * tile.h * tile.w + y * tile.w;
          out.set(tile.data.subarray(from, from + tile.w), ch * h * w + (y0 + y) * w + x0);
        }
      }
      x0 += tile.w;
    }
    y0 += row[0]?.h ?? 0;
  }
  return { image: { data: out, c, h, w }, tiles };
}
