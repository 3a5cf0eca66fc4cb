// Synthetic detection and segmentation scenes (docs/architecture.md, data sources): clip-art
// objects with alpha masks pasted onto background crops. Every image has
// exact boxes, classes and instance masks, so detection AP, mask AP and
// semantic mIoU are all measured on the same images. By default the objects
// come from the transfer half of each class's clip art (object_bank.ts), so
// they are instances the object-centric pretraining images (objects.ts) never show.
//
// Image i is drawn from root.split(i) alone, so a seed gives the same images
// whatever the count, and the train/val split is by index: the first
// count - round(count * valFraction) images are train, the rest val.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { writeFileAtomic } from '../core/files.js';
import { openBackgrounds, type BackgroundMode, type BackgroundSource } from './backgrounds.js';
import { encodeRle, maskBox, type CocoAnnotation, type CocoCategory, type CocoDataset, type CocoImage } from './coco.js';
import { mapLimited } from './map_limited.js';
import {
  DEFAULT_OBJECT_ROOTS,
  fitSprite,
  listClassFiles,
  MASK_ALPHA,
  pasteSprite,
  renderSprite,
  SCENE_CLASSES,
  SpriteCache,
  type ObjectRoots,
  type Sprite,
  type SpriteSelection,
} from './object_bank.js';
import { DATA_PACKAGES } from './packages.js';
import { Rng } from '../core/random.js';

export interface SceneOptions {
  count: number;
  /** Square image side in pixels (default 128). */
  size?: number;
  seed?: number;
  /** Fraction of images in the val split (default 0.2). */
  valFraction?: number;
  /** Objects per image, drawn uniformly (default 1-4). */
  minObjects?: number;
  maxObjects?: number;
  /** An object's longer side as a fraction of the image side (default 0.2-0.6). */
  scaleRange?: [number, number];
  /**
   * Largest fraction of an object that later objects may cover (default 0.5).
   * Placements that would hide more are retried, then the object is dropped.
   */
  maxOcclusion?: number;
  backgrounds?: BackgroundMode;
  backgroundDir?: string;
  objectRoots?: ObjectRoots;
  /**
   * Which half of each class's sprite files objects come from (default
   * 'transfer': instances that `selfsup data objects` does not pretrain on).
   */
  sprites?: SpriteSelection;
  /** Receives warnings (unreadable files). Default console.warn. */
  warn?: (message: string) => void;
  /** Called after each image is written, with the number done so far. */
  onProgress?: (done: number, count: number) => void;
}

/** One generated scene, before it is written. */
export interface Scene {
  index: number;
  /** size x size x 3 bytes. */
  rgb: Uint8Array;
  /** size x size category ids, 0 = background. */
  semantic: Uint8Array;
  /** Visible masks and their boxes; `fullArea` is the mask area before later objects covered it. */
  objects: { categoryId: number; mask: Uint8Array; box: [number, number, number, number]; area: number; fullArea: number; file: string }[];
  background: string;
}

export interface SceneSummary {
  outDir: string;
  train: number;
  val: number;
  objects: number;
}

const PLACEMENT_TRIES = 10;
const SPRITE_TRIES = 5;

/** Generates scenes one image at a time; holds the decoded objects between images. */
export class SceneGenerator {
  readonly size: number;
  readonly options: Required<Omit<SceneOptions, 'warn' | 'onProgress' | 'objectRoots' | 'backgroundDir'>>;
  private readonly classFiles: string[][];
  private readonly sprites: SpriteCache;
  private readonly backgrounds: BackgroundSource;
  private readonly root: Rng;
  private readonly unreadable: string[] = [];

  constructor(options: SceneOptions) {
    const o = {
      count: options.count,
      size: options.size ?? 128,
      seed: options.seed ?? 0,
      valFraction: options.valFraction ?? 0.2,
      minObjects: options.minObjects ?? 1,
      maxObjects: options.maxObjects ?? 4,
      scaleRange: options.scaleRange ?? ([0.2, 0.6] as [number, number]),
      maxOcclusion: options.maxOcclusion ?? 0.5,
      backgrounds: options.backgrounds ?? 'mixed',
      sprites: options.sprites ?? 'transfer',
    };
    if (!(Number.isInteger(o.count) && o.count > 0)) throw new Error(`scenes: count must be a positive integer, got ${o.count}`);
    if (!(Number.isInteger(o.size) && o.size >= 16)) throw new Error(`scenes: size must be an integer >= 16, got ${o.size}`);
    if (!(o.valFraction >= 0 && o.valFraction < 1)) throw new Error(`scenes: valFraction must be in [0, 1), got ${o.valFraction}`);
    if (!(o.minObjects >= 0 && o.maxObjects >= o.minObjects)) {
      throw new Error(`scenes: need 0 <= minObjects <= maxObjects, got ${o.minObjects}-${o.maxObjects}`);
    }
    const [s0, s1] = o.scaleRange;
    if (!(s0 > 0 && s1 >= s0 && s1 <= 1)) throw new Error(`scenes: scaleRange must satisfy 0 < min <= max <= 1, got ${s0}-${s1}`);
    if (!(o.maxOcclusion >= 0 && o.maxOcclusion <= 1)) throw new Error(`scenes: maxOcclusion must be in [0, 1], got ${o.maxOcclusion}`);
    this.options = o;
    this.size = o.size;
    this.root = Rng.seeded(o.seed);
    this.classFiles = listClassFiles(options.objectRoots ?? DEFAULT_OBJECT_ROOTS, o.sprites);
    const onUnreadable = (file: string, reason: string) => this.unreadable.push(`${file}: ${reason}`);
    const bgDir = options.backgroundDir ?? DATA_PACKAGES.gnomeBackgrounds.path;
    this.backgrounds = openBackgrounds('scenes', o.backgrounds, bgDir, o.size, onUnreadable);
    // Decoded at the largest size any object can take, so pasting only ever shrinks.
    this.sprites = new SpriteCache(Math.ceil(o.size * o.scaleRange[1]), onUnreadable);
  }

  /** The sprite files objects of class `classIndex` (0-based) are drawn from. */
  spriteFiles(classIndex: number): readonly string[] {
    return this.classFiles[classIndex]!;
  }

  /** Category list in COCO form, ids from 1. */
  categories(): CocoCategory[] {
    return SCENE_CLASSES.map((c, k) => ({ id: k + 1, name: c.name, supercategory: c.supercategory }));
  }

  /** Files that could not be decoded so far (they are skipped, never fatal). */
  unreadableFiles(): string[] {
    return [...this.unreadable];
  }

  async generate(index: number): Promise<Scene> {
    const { size } = this;
    const o = this.options;
    const rng = this.root.split(index);
    const canvas = new Float32Array(size * size * 3);
    const background = await this.backgrounds.render(o.backgrounds, rng.split(0), canvas);
    // owner[p] = index of the object visible at p, -1 for background.
    const owner = new Int16Array(size * size).fill(-1);
    const placed: { categoryId: number; fullArea: number; file: string }[] = [];
    const objRng = rng.split(1);
    const wanted = objRng.int(o.minObjects, o.maxObjects);
    for (let n = 0; n < wanted; n++) {
      const classIndex = objRng.int(0, SCENE_CLASSES.length - 1);
      const drawn = await this.sprites.draw(this.classFiles[classIndex]!, objRng, SPRITE_TRIES);
      if (!drawn) continue;
      const area = this.place(drawn.sprite, objRng, canvas, owner, placed);
      if (area > 0) placed.push({ categoryId: classIndex + 1, fullArea: area, file: drawn.file });
    }
    return this.finish(index, canvas, owner, placed, background);
  }

  /**
   * Tries to paste `sprite` as the next object without hiding more than
   * maxOcclusion of any earlier one. Returns its mask area, or 0 when every
   * placement would have hidden too much.
   */
  private place(sprite: Sprite, rng: Rng, canvas: Float32Array, owner: Int16Array, placed: readonly { fullArea: number }[]): number {
    const k = placed.length;
    const { size } = this;
    const o = this.options;
    for (let attempt = 0; attempt < PLACEMENT_TRIES; attempt++) {
      const { w, h } = fitSprite(sprite, rng.uniform(o.scaleRange[0], o.scaleRange[1]) * size);
      const flip = rng.chance(0.5);
      const x0 = rng.int(0, size - w);
      const y0 = rng.int(0, size - h);
      const rgba = renderSprite(sprite, w, h, flip);
      // Pixels each earlier object would lose.
      const lost = new Int32Array(k);
      let area = 0;
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          if (rgba[(y * w + x) * 4 + 3]! < MASK_ALPHA) continue;
          area++;
          const prev = owner[(y + y0) * size + x + x0]!;
          if (prev >= 0) lost[prev]!++;
        }
      }
      if (area < 16) continue;
      const visible = new Int32Array(k);
      for (let p = 0; p < owner.length; p++) if (owner[p]! >= 0) visible[owner[p]!]!++;
      let ok = true;
      for (let j = 0; j < k && ok; j++) {
        ok = visible[j]! - lost[j]! >= (1 - o.maxOcclusion) * placed[j]!.fullArea && visible[j]! - lost[j]! > 0;
      }
      if (!ok) continue;
      pasteSprite(canvas, size, rgba, w, h, x0, y0, (p) => (owner[p] = k));
      return area;
    }
    return 0;
  }

  private finish(
    index: number,
    canvas: Float32Array,
    owner: Int16Array,
    placed: { categoryId: number; fullArea: number; file: string }[],
    background: string,
  ): Scene {
    const { size } = this;
    const rgb = new Uint8Array(size * size * 3);
    for (let i = 0; i < rgb.length; i++) rgb[i] = Math.round(Math.min(1, Math.max(0, canvas[i]!)) * 255);
    const semantic = new Uint8Array(size * size);
    const objects: Scene['objects'] = [];
    placed.forEach((obj, k) => {
      const mask = new Uint8Array(size * size);
      let area = 0;
      for (let p = 0; p < owner.length; p++) {
        if (owner[p] !== k) continue;
        mask[p] = 1;
        semantic[p] = obj.categoryId;
        area++;
      }
      const box = maskBox(mask, size, size);
      if (box) objects.push({ categoryId: obj.categoryId, mask, box, area, fullArea: obj.fullArea, file: obj.file });
    });
    return { index, rgb, semantic, objects, background };
  }
}

/**
 * Writes `options.count` scenes under `outDir`:
 *   train/images/000000.png, train/masks/000000.png (semantic, category ids),
 *   val/..., annotations/instances_{train,val}.json (COCO, RLE masks).
 */
export async function writeScenes(outDir: string, options: SceneOptions): Promise<SceneSummary> {
  const gen = new SceneGenerator(options);
  const { count, size } = gen.options;
  const valCount = Math.round(count * gen.options.valFraction);
  const trainCount = count - valCount;
  const splits: Record<'train' | 'val', SplitParts> = { train: newDataset(gen, 'train'), val: newDataset(gen, 'val') };
  for (const split of ['train', 'val']) {
    mkdirSync(join(outDir, split, 'images'), { recursive: true });
    mkdirSync(join(outDir, split, 'masks'), { recursive: true });
  }
  mkdirSync(join(outDir, 'annotations'), { recursive: true });
  let objects = 0;
  let done = 0;
  const indices = Array.from({ length: count }, (_, i) => i);
  // Two images in flight: PNG encoding runs on libuv threads while the next scene is drawn.
  await mapLimited(indices, 2, async (i) => {
    const scene = await gen.generate(i);
    const split: 'train' | 'val' = i < trainCount ? 'train' : 'val';
    const name = `${String(i).padStart(6, '0')}.png`;
    await sharp(scene.rgb, { raw: { width: size, height: size, channels: 3 } }).png().toFile(join(outDir, split, 'images', name));
    // b-w keeps the PNG single-channel; sharp would otherwise widen it to RGB.
    await sharp(scene.semantic, { raw: { width: size, height: size, channels: 1 } }).toColourspace('b-w').png().toFile(join(outDir, split, 'masks', name));
    const image: CocoImage = { id: i + 1, file_name: name, width: size, height: size, semantic_mask: name };
    splits[split].images[i] = image;
    splits[split].annotations[i] = scene.objects.map((obj) => ({
      id: 0,
      image_id: i + 1,
      category_id: obj.categoryId,
      bbox: obj.box,
      area: obj.area,
      iscrowd: 0 as const,
      segmentation: encodeRle(obj.mask, size, size),
    }));
    objects += scene.objects.length;
    options.onProgress?.(++done, count);
  });
  for (const [split, parts] of Object.entries(splits)) {
    const dataset = parts.dataset;
    dataset.images = parts.images.filter(Boolean);
    // Ids in image order, so they do not depend on which image finished first.
    dataset.annotations = parts.annotations.filter(Boolean).flat();
    dataset.annotations.forEach((a, k) => (a.id = k + 1));
    writeFileAtomic(join(outDir, 'annotations', `instances_${split}.json`), JSON.stringify(dataset));
  }
  const unreadable = gen.unreadableFiles();
  if (unreadable.length > 0) {
    (options.warn ?? ((m: string) => console.warn(m)))(`scenes: skipped ${unreadable.length} unreadable files:\n  ${unreadable.join('\n  ')}`);
  }
  return { outDir, train: trainCount, val: valCount, objects };
}

interface SplitParts {
  dataset: CocoDataset;
  /** By scene index; holes for the other split's images. */
  images: CocoImage[];
  annotations: CocoAnnotation[][];
}

function newDataset(gen: SceneGenerator, split: string): SplitParts {
  const { options } = gen;
  return {
    dataset: {
      info: {
        description: `selfsup synthetic scenes (${split})`,
        generator: 'selfsup data scenes',
        seed: options.seed,
        size: options.size,
        count: options.count,
        valFraction: options.valFraction,
        objectsPerImage: [options.minObjects, options.maxObjects],
        scaleRange: options.scaleRange,
        maxOcclusion: options.maxOcclusion,
        backgrounds: options.backgrounds,
        sprites: options.sprites,
      },
      licenses: [],
      images: [],
      annotations: [],
      categories: gen.categories(),
    },
    images: [],
    annotations: [],
  };
}
