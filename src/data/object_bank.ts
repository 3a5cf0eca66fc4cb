// Foreground objects for synthetic scenes: clip art with alpha from Debian's
// tuxpaint-stamps-default and openclipart-png, grouped into classes by their
// category folders. docs/data.md lists the same table for readers.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { decodeRgba } from './decode.js';
import { DATA_PACKAGES } from './packages.js';

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

/** Each class's PNG files, sorted so a seed picks the same objects on every machine with the same packages. */
export function listClassFiles(roots: ObjectRoots = DEFAULT_OBJECT_ROOTS): string[][] {
  return SCENE_CLASSES.map((cls) => {
    const files = cls.sources.flatMap((src) => {
      const [pkg, dir] = src.split(':') as [keyof ObjectRoots, string];
      return pngsUnder(join(roots[pkg], dir));
    });
    if (files.length === 0) {
      throw new Error(`scene class '${cls.name}': no PNG files under ${cls.sources.join(', ')} (roots ${roots.tuxpaint}, ${roots.openclipart})`);
    }
    return [...new Set(files)].sort();
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
 * Decodes an object and crops it to the bounding box of its alpha. Returns
 * null for images whose alpha is not a mask (almost no transparent pixels,
 * e.g. clip art on a white rectangle) or that are too small to scale up.
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
  if (Math.min(w, h) < 8) return null;
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
