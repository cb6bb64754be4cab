/** Reading galleries back in tests: the links of a page and where they lead, the image rows of a contact sheet. */
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import sharp from "sharp";

/** Every href and src of an HTML text, as written. */
export function pageLinks(html: string): string[] {
  return [...html.matchAll(/\s(?:href|src)="([^"]*)"/g)].map((m) => m[1] as string);
}

/** The links of `html` (the page at `pageFile`) that are not relative or lead to no file. */
export function brokenLinks(pageFile: string, html: string): string[] {
  return pageLinks(html).filter((link) => {
    if (/^[a-z]+:|^\/|^#/i.test(link)) return true;
    return !existsSync(resolve(dirname(pageFile), decodeURIComponent(link)));
  });
}

/** `<img` elements in a serialized DOM. */
export const imgCount = (dom: string) => (dom.match(/<img\s/g) ?? []).length;

/**
 * The blocks of pixel rows of a contact sheet that hold images, at columns x … x+2 (a cell's left edge, where the
 * centred label text never reaches): [top, height] of each run of rows that are not pure background.
 */
export async function imageRows(png: string, x: number): Promise<[number, number][]> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  const blocks: [number, number][] = [];
  let start = -1;
  for (let y = 0; y <= info.height; y++) {
    let ink = false;
    for (let dx = 0; dx < 3 && y < info.height; dx++) {
      const o = (y * info.width + x + dx) * info.channels;
      if ((data[o] as number) + (data[o + 1] as number) + (data[o + 2] as number) > 0) ink = true;
    }
    if (ink && start < 0) start = y;
    if (!ink && start >= 0) {
      blocks.push([start, y - start]);
      start = -1;
    }
  }
  return blocks;
}

/** Whether the sheet has light pixels (label text) in rows top … bottom − 1. */
export async function hasText(png: string, top: number, bottom: number): Promise<boolean> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  for (let y = top; y < bottom; y++) {
    for (let x = 0; x < info.width; x++) {
      const o = (y * info.width + x) * info.channels;
      if ((data[o] as number) > 200 && (data[o + 1] as number) > 200 && (data[o + 2] as number) > 200)
        return true;
    }
  }
  return false;
}
