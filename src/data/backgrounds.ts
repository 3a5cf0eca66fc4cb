// Scene backgrounds: random crops of the gnome-backgrounds photos, or
// procedural textures (gradients, smooth noise, stripes) so that a detector
// cannot learn "the object is whatever is not one of 25 photos"; or one
// uniform colour ('plain'), which gives instance discrimination no background
// to tell copies of the same sprite apart by.
import { existsSync, readdirSync } from 'node:fs';
import { extname, join } from 'node:path';
import { decodeRgbShortSide, type RawImage } from './decode.js';
import type { Rng } from '../core/random.js';
import { resizedCrop } from './transforms.js';

export type BackgroundMode = 'photos' | 'procedural' | 'mixed' | 'plain';
export const BACKGROUND_MODES: readonly BackgroundMode[] = ['photos', 'procedural', 'mixed', 'plain'];

const PHOTO_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.svg']);

export function listBackgroundFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => PHOTO_EXTENSIONS.has(extname(f).toLowerCase()))
    .sort()
    .map((f) => join(dir, f));
}

/**
 * The background source a generator of `size` px images draws from: the
 * photos in `dir` (none is an error only when `mode` is 'photos'). `who` names
 * the generator in the error.
 */
export function openBackgrounds(
  who: string,
  mode: BackgroundMode,
  dir: string,
  size: number,
  onUnreadable: (file: string, reason: string) => void,
): BackgroundSource {
  const files = listBackgroundFiles(dir);
  if (files.length === 0 && mode === 'photos') {
    throw new Error(`${who}: no background photos in ${dir} (install them with \`apt-get install gnome-backgrounds\`, or use --backgrounds procedural)`);
  }
  return new BackgroundSource(files, size, onUnreadable);
}

/** Decodes photos once, at a short side of 2x the scene size, and hands out crops. */
export class BackgroundSource {
  private readonly photos = new Map<string, Promise<RawImage | null>>();

  constructor(
    readonly files: string[],
    readonly size: number,
    private readonly onUnreadable: (file: string, reason: string) => void,
  ) {}

  private photo(file: string): Promise<RawImage | null> {
    let p = this.photos.get(file);
    if (!p) {
      p = decodeRgbShortSide(file, 2 * this.size).catch((err: Error) => {
        this.onUnreadable(file, err.message);
        return null;
      });
      this.photos.set(file, p);
    }
    return p;
  }

  /** Fills `canvas` (size x size x 3 floats) with a background drawn from `rng`. */
  async render(mode: BackgroundMode, rng: Rng, canvas: Float32Array): Promise<string> {
    if (mode === 'plain') {
      const colour = [rng.next(), rng.next(), rng.next()];
      for (let i = 0; i < canvas.length; i++) canvas[i] = colour[i % 3]!;
      return 'plain';
    }
    const usePhoto = rng.chance(mode === 'photos' ? 1 : mode === 'procedural' ? 0 : 0.5) && this.files.length > 0;
    const pick = rng.int(0, Math.max(0, this.files.length - 1));
    const textureRng = rng.split(1);
    if (usePhoto) {
      const img = await this.photo(this.files[pick]!);
      if (img) {
        const short = Math.min(img.width, img.height);
        const side = rng.uniform(0.35, 1) * short;
        const box = { x: rng.uniform(0, img.width - side), y: rng.uniform(0, img.height - side), w: side, h: side };
        resizedCrop(img.data, 0, img.width, img.height, 3, box, rng.chance(0.5), canvas, 0, this.size, this.size);
        return `photo:${this.files[pick]}`;
      }
    }
    return `texture:${proceduralTexture(textureRng, canvas, this.size)}`;
  }
}

/** Writes one of a few texture families into an RGB canvas; returns its name. */
export function proceduralTexture(rng: Rng, canvas: Float32Array, size: number): string {
  const a = [rng.next(), rng.next(), rng.next()];
  const b = [rng.next(), rng.next(), rng.next()];
  const kind = rng.int(0, 2);
  const angle = rng.uniform(0, Math.PI);
  const dx = Math.cos(angle);
  const dy = Math.sin(angle);
  // Smooth noise: a coarse random grid, bilinearly interpolated.
  const cells = rng.int(2, 8);
  const grid = new Float32Array((cells + 1) * (cells + 1));
  for (let i = 0; i < grid.length; i++) grid[i] = rng.next();
  const period = rng.uniform(4, size / 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let t: number;
      if (kind === 0) {
        t = ((x - size / 2) * dx + (y - size / 2) * dy) / size + 0.5;
      } else if (kind === 1) {
        const gx = (x / size) * cells;
        const gy = (y / size) * cells;
        const ix = Math.floor(gx);
        const iy = Math.floor(gy);
        const fx = gx - ix;
        const fy = gy - iy;
        const r = cells + 1;
        const top = grid[iy * r + ix]! * (1 - fx) + grid[iy * r + ix + 1]! * fx;
        const bottom = grid[(iy + 1) * r + ix]! * (1 - fx) + grid[(iy + 1) * r + ix + 1]! * fx;
        t = top * (1 - fy) + bottom * fy;
      } else {
        t = Math.sin(((x * dx + y * dy) / period) * Math.PI) > 0 ? 0.8 : 0.2;
      }
      t = Math.min(1, Math.max(0, t + (rng.next() - 0.5) * 0.06));
      const o = (y * size + x) * 3;
      for (let c = 0; c < 3; c++) canvas[o + c] = a[c]! + (b[c]! - a[c]!) * t;
    }
  }
  return ['gradient', 'noise', 'stripes'][kind]!;
}
