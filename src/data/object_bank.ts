// Foreground objects for synthetic scenes: clip art with alpha from Debian's
// tuxpaint-stamps-default and openclipart-png, grouped into classes by their
// category folders. docs/data.md lists the same table for readers.
//
// Each class's files are split by a hash of their path into a pretraining half
// (the ImageNet analog, `selfsup data objects`) and a transfer half (the COCO
// analog, `selfsup data scenes`), so the scenes a pretrained backbone is
// fine-tuned on show object instances it never saw in pretraining
// (docs/data.md, "Sprite halves").
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import type { Rng } from '../core/random.js';
import { decodeRgba } from './decode.js';
import { DATA_PACKAGES } from './packages.js';
import { resizedCrop } from './transforms.js';

export interface SceneClass {
  name: string;
  supercategory: string;
  /** Folders, searched recursively: `tuxpaint:<dir>` or `openclipart:<dir>`. */
  sources: string[];
}

/** Category id k+1 is SCENE_CLASSES[k]; 0 is background in semantic masks. */
export const SCENE_CLASSES: SceneClass[] = [
  { name: 'mammal', supercategory: 'animal', sources: ['tuxpaint:animals/mammals', 'openclipart:animals/mammals'] },
  { name: 'bird', supercategory: 'animal', sources: ['tuxpaint:animals/birds', 'openclipart:animals/birds'] },
  { name: 'fish', supercategory: 'animal', sources: ['tuxpaint:animals/fish', 'openclipart:animals/fish'] },
  { name: 'insect', supercategory: 'animal', sources: ['tuxpaint:animals/insects', 'openclipart:animals/bugs'] },
  { name: 'fruit', supercategory: 'food', sources: ['tuxpaint:food/fruit', 'openclipart:food/fruit'] },
  { name: 'vegetable', supercategory: 'food', sources: ['tuxpaint:food/vegetables', 'openclipart:food/vegetables'] },
  { name: 'dessert', supercategory: 'food', sources: ['openclipart:food/desserts', 'openclipart:food/breads_and_carbs'] },
  { name: 'beverage', supercategory: 'food', sources: ['openclipart:food/beverages'] },
  { name: 'flower', supercategory: 'plant', sources: ['tuxpaint:plants/flowers', 'openclipart:plants/flowers'] },
  { name: 'tree', supercategory: 'plant', sources: ['tuxpaint:plants/trees', 'openclipart:plants/trees'] },
  {
    name: 'road vehicle',
    supercategory: 'vehicle',
    sources: [
      'openclipart:transportation/vehicles', 'tuxpaint:vehicles/auto', 'tuxpaint:vehicles/emergency',
      'tuxpaint:vehicles/construction', 'tuxpaint:vehicles/masstransit', 'tuxpaint:vehicles/race',
    ],
  },
  { name: 'boat', supercategory: 'vehicle', sources: ['openclipart:transportation/boating', 'tuxpaint:vehicles/ship'] },
  { name: 'house', supercategory: 'building', sources: ['openclipart:buildings/homes', 'tuxpaint:town/houses'] },
  { name: 'musical instrument', supercategory: 'object', sources: ['openclipart:recreation/music', 'tuxpaint:hobbies/music'] },
  { name: 'tool', supercategory: 'object', sources: ['openclipart:tools', 'tuxpaint:household/tools'] },
  { name: 'sports gear', supercategory: 'object', sources: ['openclipart:recreation/sports', 'tuxpaint:sports'] },
  { name: 'smiley', supercategory: 'symbol', sources: ['openclipart:people/smilies', 'tuxpaint:symbols/faces'] },
  { name: 'road sign', supercategory: 'symbol', sources: ['openclipart:transportation/roadsigns', 'tuxpaint:town/roadsigns'] },
];

export interface ObjectRoots {
  tuxpaint: string;
  openclipart: string;
}

export const DEFAULT_OBJECT_ROOTS: ObjectRoots = {
  tuxpaint: DATA_PACKAGES.tuxpaintStamps.path,
  openclipart: DATA_PACKAGES.openclipart.path,
};

function pngsUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...pngsUnder(p));
    else if (e.name.toLowerCase().endsWith('.png')) out.push(p);
  }
  return out;
}

export type SpriteHalf = 'pretrain' | 'transfer';
/** Which sprite files a generator draws from: one half, or every file. */
export type SpriteSelection = SpriteHalf | 'all';
export const SPRITE_SELECTIONS = ['pretrain', 'transfer', 'all'] as const;

/**
 * A sprite file's name independent of where its package is installed:
 * `tuxpaint:animals/mammals/cat.png`, `openclipart:food/fruit/apple.png`.
 */
export function spriteKey(file: string, roots: ObjectRoots = DEFAULT_OBJECT_ROOTS): string {
  for (const pkg of ['tuxpaint', 'openclipart'] as const) {
    const rel = relative(roots[pkg], file);
    if (rel !== '' && !rel.startsWith('..') && !rel.startsWith(sep)) return `${pkg}:${rel.split(sep).join('/')}`;
  }
  throw new Error(`sprite ${file}: not under the tuxpaint (${roots.tuxpaint}) or openclipart (${roots.openclipart}) root`);
}

/** The first 32 bits of sha256(key) as a number in [0, 1): a file's place in the split. */
export function spriteHash(key: string): number {
  return createHash('sha256').update(key).digest().readUInt32BE(0) / 2 ** 32;
}

/** The half a sprite's hash gives it: below 0.5 pretrain, else transfer (see splitClassFiles for the one exception). */
export function spriteHalf(key: string): SpriteHalf {
  return spriteHash(key) < 0.5 ? 'pretrain' : 'transfer';
}

/**
 * One class's files by half: each file goes where spriteHalf puts it, except
 * that a class of two or more files never leaves a half empty. If the hash puts
 * every file on one side, the file whose hash is nearest 0.5 moves across.
 * Adding or removing other files never moves a file, unless it changes which
 * file that exception picks.
 */
export function splitClassFiles(files: readonly string[], roots: ObjectRoots = DEFAULT_OBJECT_ROOTS): Record<SpriteHalf, string[]> {
  const hashed = files.map((file) => ({ file, h: spriteHash(spriteKey(file, roots)) }));
  const halves: Record<SpriteHalf, string[]> = { pretrain: [], transfer: [] };
  for (const { file, h } of hashed) halves[h < 0.5 ? 'pretrain' : 'transfer'].push(file);
  if (files.length >= 2 && (halves.pretrain.length === 0 || halves.transfer.length === 0)) {
    const from: SpriteHalf = halves.pretrain.length === 0 ? 'transfer' : 'pretrain';
    const to: SpriteHalf = from === 'pretrain' ? 'transfer' : 'pretrain';
    let nearest = hashed[0]!;
    for (const x of hashed) if (Math.abs(x.h - 0.5) < Math.abs(nearest.h - 0.5)) nearest = x;
    halves[from] = halves[from].filter((f) => f !== nearest.file);
    halves[to].push(nearest.file);
  }
  return halves;
}

/**
 * Each class's PNG files (all of them, or one half), sorted so a seed picks the
 * same objects on every machine with the same packages.
 */
export function listClassFiles(roots: ObjectRoots = DEFAULT_OBJECT_ROOTS, half: SpriteSelection = 'all'): string[][] {
  return SCENE_CLASSES.map((cls) => {
    const files = cls.sources.flatMap((src) => {
      const [pkg, dir] = src.split(':') as [keyof ObjectRoots, string];
      return pngsUnder(join(roots[pkg], dir));
    });
    if (files.length === 0) {
      throw new Error(`scene class '${cls.name}': no PNG files under ${cls.sources.join(', ')} (roots ${roots.tuxpaint}, ${roots.openclipart})`);
    }
    const all = [...new Set(files)].sort();
    return half === 'all' ? all : splitClassFiles(all, roots)[half].sort();
  });
}

/**
 * A clip-art object cropped to its alpha: RGBA bytes with the colour
 * premultiplied by alpha, so that resampling does not bleed the colour of
 * transparent pixels (often black) into the object's edge.
 */
export interface Sprite {
  rgba: Uint8Array;
  width: number;
  height: number;
}

const ALPHA_ON = 128;
/**
 * Smallest fraction of its box a sprite's mask may cover. Below it are
 * outlines and faint drawings (a horse of a few strokes, rugby goal posts,
 * a semi-transparent cat) whose pasted mask is a handful of pixels.
 */
const MIN_COVERAGE = 0.05;

/**
 * Decodes an object and crops it to the bounding box of its alpha. Returns
 * null for images whose alpha is not a mask (almost no transparent pixels,
 * e.g. clip art on a white rectangle), whose mask covers less than
 * MIN_COVERAGE of its box, or that are too small to scale up.
 */
export async function loadSprite(file: string, maxSide: number): Promise<Sprite | null> {
  const img = await decodeRgba(file, maxSide);
  const { width, height, data } = img;
  let x0 = width;
  let y0 = height;
  let x1 = -1;
  let y1 = -1;
  let opaque = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (data[(y * width + x) * 4 + 3]! < ALPHA_ON) continue;
      opaque++;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
  }
  if (x1 < 0 || opaque > 0.97 * width * height) return null;
  const w = x1 - x0 + 1;
  const h = y1 - y0 + 1;
  if (Math.min(w, h) < 8 || opaque < MIN_COVERAGE * w * h) return null;
  const rgba = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const s = ((y + y0) * width + (x + x0)) * 4;
      const o = (y * w + x) * 4;
      const a = data[s + 3]!;
      for (let c = 0; c < 3; c++) rgba[o + c] = Math.round((data[s + c]! * a) / 255);
      rgba[o + 3] = a;
    }
  }
  return { rgba, width: w, height: h };
}

/** The clip art a generator has decoded, by file; unreadable files are reported once and give null. */
export class SpriteCache {
  private readonly sprites = new Map<string, Promise<Sprite | null>>();

  /** `maxSide`: the largest size any pasted object takes, so pasting only ever shrinks. */
  constructor(
    readonly maxSide: number,
    private readonly onUnreadable: (file: string, reason: string) => void,
    private readonly capacity = 2048,
  ) {}

  get(file: string): Promise<Sprite | null> {
    let p = this.sprites.get(file);
    if (!p) {
      // Bounded memory at large sizes; evicting changes speed, never content.
      if (this.sprites.size >= this.capacity) this.sprites.delete(this.sprites.keys().next().value!);
      p = loadSprite(file, this.maxSide).catch((err: Error) => {
        this.onUnreadable(file, err.message);
        return null;
      });
      this.sprites.set(file, p);
    }
    return p;
  }

  /** Draws up to `tries` files of `files` from `rng` until one is a usable sprite. */
  async draw(files: readonly string[], rng: Rng, tries: number): Promise<{ sprite: Sprite; file: string } | null> {
    for (let t = 0; t < tries; t++) {
      const file = files[rng.int(0, files.length - 1)]!;
      const sprite = await this.get(file);
      if (sprite) return { sprite, file };
    }
    return null;
  }
}

/** A pixel belongs to a pasted object's mask where its alpha is at least this. */
export const MASK_ALPHA = 0.5;

/** Width and height of `sprite` scaled so its longer side is `longSide` px (at least 4 px each). */
export function fitSprite(sprite: Sprite, longSide: number): { w: number; h: number } {
  const scale = longSide / Math.max(sprite.width, sprite.height);
  return { w: Math.max(4, Math.round(sprite.width * scale)), h: Math.max(4, Math.round(sprite.height * scale)) };
}

/** `sprite` resampled to w x h, mirrored when `flip`: premultiplied RGBA floats in [0, 1]. */
export function renderSprite(sprite: Sprite, w: number, h: number, flip: boolean): Float32Array {
  const rgba = new Float32Array(w * h * 4);
  resizedCrop(sprite.rgba, 0, sprite.width, sprite.height, 4, { x: 0, y: 0, w: sprite.width, h: sprite.height }, flip, rgba, 0, w, h);
  return rgba;
}

/**
 * Alpha-composites a rendered sprite (w x h, premultiplied) onto a size x size
 * RGB canvas with its top-left corner at (x0, y0), which must keep it inside.
 * `onMask(p)` is called for each canvas pixel p the object's mask covers.
 */
export function pasteSprite(
  canvas: Float32Array,
  size: number,
  rgba: Float32Array,
  w: number,
  h: number,
  x0: number,
  y0: number,
  onMask?: (p: number) => void,
): void {
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const s = (y * w + x) * 4;
      const a = rgba[s + 3]!;
      if (a <= 0) continue;
      const p = (y + y0) * size + x + x0;
      // Premultiplied colour: over-compositing is canvas * (1 - a) + colour.
      for (let c = 0; c < 3; c++) canvas[p * 3 + c] = canvas[p * 3 + c]! * (1 - a) + rgba[s + c]!;
      if (a >= MASK_ALPHA) onMask?.(p);
    }
  }
}
