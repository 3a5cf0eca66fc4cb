// Object-centric images, the ImageNet analog of the detection-transfer
// miniature (docs/data.md, "Object images"): one clip-art sprite per image,
// roughly centred, labelled with its class. Methods pretrain on these and are
// then fine-tuned on the multi-object scenes of scenes.ts, which draw their
// sprites from the other half of each class's files (object_bank.ts).
//
// Image i is drawn from root.split(i) alone and shows class i mod 18, so every
// class has the same count (to within one) in each split; the first
// count - round(count * valFraction) images are train, the rest val.
//
// On disk an ImageNet-style folder, DIR/{train,val}/<NN_class>/<i>.png, whose
// class folders sort in SCENE_CLASSES order, and DIR/objects.json, written
// last: a folder without it is unfinished and nothing reads it.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { basename, join, sep } from 'node:path';
import sharp from 'sharp';
import { textSha256, writeFileAtomic } from '../core/files.js';
import { Rng } from '../core/random.js';
import { openBackgrounds, type BackgroundMode, type BackgroundSource } from './backgrounds.js';
import { loadImageFolder, type ImageFolder } from './image_folder.js';
import { selectImages } from './image_set.js';
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
  spriteKey,
  type ObjectRoots,
  type Sprite,
  type SpriteSelection,
} from './object_bank.js';
import { DATA_PACKAGES } from './packages.js';

export interface ObjectImageOptions {
  count: number;
  /** Square image side in pixels (default 64). */
  size?: number;
  seed?: number;
  /** Fraction of images in the val split (default 0.1). */
  valFraction?: number;
  /** Which half of each class's sprite files to draw from (default 'pretrain'). */
  sprites?: SpriteSelection;
  /** The sprite's longer side as a fraction of the image side (default 0.5-0.9). */
  scaleRange?: [number, number];
  /**
   * Largest offset of the sprite's box centre from the image centre, per axis,
   * as a fraction of the image side (default 0.1); less where the sprite
   * would otherwise leave the image.
   */
  maxOffset?: number;
  backgrounds?: BackgroundMode;
  backgroundDir?: string;
  objectRoots?: ObjectRoots;
}

export interface ObjectWriteOptions extends ObjectImageOptions {
  /** Replace a folder that holds another objects set (default: refuse). */
  overwrite?: boolean;
  /** Receives warnings (unreadable files, a removed unfinished run). Default console.warn. */
  warn?: (message: string) => void;
  /** Called after each image is written, with the number done so far. */
  onProgress?: (done: number, count: number) => void;
}

/** One generated image, before it is written. */
export interface ObjectImage {
  index: number;
  /** Class index into SCENE_CLASSES (the scenes' category id minus 1). */
  label: number;
  /** The sprite file pasted. */
  file: string;
  /** size x size x 3 bytes. */
  rgb: Uint8Array;
  /** size x size, 1 where the sprite's alpha is at least MASK_ALPHA. */
  mask: Uint8Array;
  /** Where the resampled sprite was pasted: x, y, w, h in pixels. */
  box: [number, number, number, number];
  background: string;
}

export type ResolvedObjectOptions = Required<Omit<ObjectImageOptions, 'backgroundDir' | 'objectRoots'>>;

export const OBJECTS_MANIFEST = 'objects.json';
/** Written before the first image and removed after the manifest: marks a folder this command may clear. */
const PARTIAL_MARKER = 'objects.partial.json';
const FORMAT = 'selfsup-objects';
const FORMAT_VERSION = 1;
const SPRITE_TRIES = 5;
/** A pasted sprite's mask should cover at least this many pixels and this fraction of its box. */
const MIN_MASK_PIXELS = 16;
const MIN_MASK_COVERAGE = 0.05;

function maskArea(rgba: Float32Array): number {
  let n = 0;
  for (let i = 3; i < rgba.length; i += 4) if (rgba[i]! >= MASK_ALPHA) n++;
  return n;
}

/** Class k's folder name: `00_mammal` ... `17_road_sign`, so sorted folders are in SCENE_CLASSES order. */
export function objectClassFolder(k: number): string {
  return `${String(k).padStart(2, '0')}_${SCENE_CLASSES[k]!.name.replace(/[^a-z0-9]+/gi, '_').toLowerCase()}`;
}

export const OBJECT_CLASS_FOLDERS: readonly string[] = SCENE_CLASSES.map((_, k) => objectClassFolder(k));

/** Generates object images one at a time; holds the decoded sprites and backgrounds between images. */
export class ObjectImageGenerator {
  readonly size: number;
  readonly options: ResolvedObjectOptions;
  private readonly classFiles: string[][];
  private readonly roots: ObjectRoots;
  private readonly sprites: SpriteCache;
  private readonly backgrounds: BackgroundSource;
  private readonly root: Rng;
  private readonly unreadable: string[] = [];

  constructor(options: ObjectImageOptions) {
    const o: ResolvedObjectOptions = {
      count: options.count,
      size: options.size ?? 64,
      seed: options.seed ?? 0,
      valFraction: options.valFraction ?? 0.1,
      sprites: options.sprites ?? 'pretrain',
      scaleRange: options.scaleRange ?? [0.5, 0.9],
      maxOffset: options.maxOffset ?? 0.1,
      backgrounds: options.backgrounds ?? 'mixed',
    };
    if (!(Number.isInteger(o.count) && o.count > 0)) throw new Error(`objects: count must be a positive integer, got ${o.count}`);
    if (!(Number.isInteger(o.size) && o.size >= 16)) throw new Error(`objects: size must be an integer >= 16, got ${o.size}`);
    if (!(o.valFraction >= 0 && o.valFraction < 1)) throw new Error(`objects: valFraction must be in [0, 1), got ${o.valFraction}`);
    const [s0, s1] = o.scaleRange;
    if (!(s0 > 0 && s1 >= s0 && s1 <= 1)) throw new Error(`objects: scaleRange must satisfy 0 < min <= max <= 1, got ${s0}-${s1}`);
    if (!(o.maxOffset >= 0 && o.maxOffset <= 0.5)) throw new Error(`objects: maxOffset must be in [0, 0.5], got ${o.maxOffset}`);
    if (!['pretrain', 'transfer', 'all'].includes(o.sprites)) throw new Error(`objects: sprites must be pretrain, transfer or all, got '${o.sprites}'`);
    this.options = o;
    this.size = o.size;
    this.root = Rng.seeded(o.seed);
    this.roots = options.objectRoots ?? DEFAULT_OBJECT_ROOTS;
    this.classFiles = listClassFiles(this.roots, o.sprites);
    const onUnreadable = (file: string, reason: string) => this.unreadable.push(`${file}: ${reason}`);
    this.backgrounds = openBackgrounds('objects', o.backgrounds, options.backgroundDir ?? DATA_PACKAGES.gnomeBackgrounds.path, o.size, onUnreadable);
    this.sprites = new SpriteCache(Math.ceil(o.size * s1), onUnreadable);
  }

  /** Images in the train split; the rest are val. */
  get trainCount(): number {
    return this.options.count - Math.round(this.options.count * this.options.valFraction);
  }

  /** The sprite files class `label` draws from. */
  spriteFiles(label: number): readonly string[] {
    return this.classFiles[label]!;
  }

  /** Files that could not be decoded so far (they are skipped, never fatal). */
  unreadableFiles(): string[] {
    return [...this.unreadable];
  }

  /** What the images depend on besides the options: the sprite files (by package-relative name) and background photos. */
  sources(): ObjectsManifest['sources'] {
    return {
      spriteFilesPerClass: this.classFiles.map((f) => f.length),
      spriteListSha256: textSha256(JSON.stringify(this.classFiles.map((files) => files.map((f) => spriteKey(f, this.roots))))),
      backgroundPhotos: this.backgrounds.files.map((f) => basename(f)),
    };
  }

  async generate(index: number): Promise<ObjectImage> {
    const { size } = this;
    const o = this.options;
    const rng = this.root.split(index);
    const label = index % SCENE_CLASSES.length;
    const canvas = new Float32Array(size * size * 3);
    const background = await this.backgrounds.render(o.backgrounds, rng.split(0), canvas);
    const spriteRng = rng.split(1);
    const placeRng = rng.split(2);
    let drawn: { file: string; rgba: Float32Array; w: number; h: number } | null = null;
    for (let t = 0; t < SPRITE_TRIES && !drawn; t++) {
      const { sprite, file } = await this.drawSprite(label, spriteRng);
      const { w, h } = fitSprite(sprite, placeRng.uniform(o.scaleRange[0], o.scaleRange[1]) * size);
      const rgba = renderSprite(sprite, w, h, placeRng.chance(0.5));
      // Thin outlines can shrink to a few mask pixels: draw again, keeping the last try if all are thin.
      if (maskArea(rgba) >= Math.max(MIN_MASK_PIXELS, MIN_MASK_COVERAGE * w * h) || t === SPRITE_TRIES - 1) drawn = { file, rgba, w, h };
    }
    const { file, rgba, w, h } = drawn!;
    const offset = o.maxOffset * size;
    const cx = size / 2 + placeRng.uniform(-offset, offset);
    const cy = size / 2 + placeRng.uniform(-offset, offset);
    const x0 = Math.min(size - w, Math.max(0, Math.round(cx - w / 2)));
    const y0 = Math.min(size - h, Math.max(0, Math.round(cy - h / 2)));
    const mask = new Uint8Array(size * size);
    pasteSprite(canvas, size, rgba, w, h, x0, y0, (p) => (mask[p] = 1));
    const rgb = new Uint8Array(size * size * 3);
    for (let i = 0; i < rgb.length; i++) rgb[i] = Math.round(Math.min(1, Math.max(0, canvas[i]!)) * 255);
    return { index, label, file, rgb, mask, box: [x0, y0, w, h], background };
  }

  /**
   * A random usable sprite of the class; after a few random misses (files
   * that do not decode or have no alpha mask), the first usable file from a
   * random start, so every image shows an object.
   */
  private async drawSprite(label: number, rng: Rng): Promise<{ sprite: Sprite; file: string }> {
    const files = this.classFiles[label]!;
    const drawn = await this.sprites.draw(files, rng, SPRITE_TRIES);
    if (drawn) return drawn;
    const start = rng.int(0, files.length - 1);
    for (let k = 0; k < files.length; k++) {
      const file = files[(start + k) % files.length]!;
      const sprite = await this.sprites.get(file);
      if (sprite) return { sprite, file };
    }
    throw new Error(`objects: class '${SCENE_CLASSES[label]!.name}' has no usable sprite among its ${files.length} ${this.options.sprites} files`);
  }
}

/** DIR/objects.json: what was generated, with what, and how many of each class. */
export interface ObjectsManifest {
  format: typeof FORMAT;
  version: number;
  generator: string;
  options: ResolvedObjectOptions;
  sources: { spriteFilesPerClass: number[]; spriteListSha256: string; backgroundPhotos: string[] };
  /** Folder names, label order; label k is scene category k + 1. */
  classes: { label: number; folder: string; name: string; supercategory: string }[];
  counts: { train: number[]; val: number[] };
  train: number;
  val: number;
  /** Files that could not be decoded and were skipped. */
  unreadable: string[];
}

export interface ObjectsSummary {
  outDir: string;
  train: number;
  val: number;
  /** True when the folder already held this very set and nothing was written. */
  reused: boolean;
  manifest: ObjectsManifest;
}

/** The identity of a set: two manifests with equal identities describe the same images. */
function identity(m: Pick<ObjectsManifest, 'options' | 'sources'>): string {
  return JSON.stringify({ options: m.options, sources: m.sources });
}

function describeSet(m: Pick<ObjectsManifest, 'options'>): string {
  const o = m.options;
  return `count ${o.count}, size ${o.size}, seed ${o.seed}, valFraction ${o.valFraction}, sprites ${o.sprites}, scale ${o.scaleRange.join('-')}, maxOffset ${o.maxOffset}, backgrounds ${o.backgrounds}`;
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return null;
  }
}

/**
 * Decides what to do with `outDir` before generating: 'fresh' (it is empty or
 * cleared), or 'done' (it already holds this set). Refuses a folder holding
 * anything but an objects set, and one holding another set unless `overwrite`.
 */
function prepareOutDir(outDir: string, wanted: Pick<ObjectsManifest, 'options' | 'sources'>, o: ObjectWriteOptions): 'fresh' | 'done' {
  if (!existsSync(outDir)) return 'fresh';
  if (!statSync(outDir).isDirectory()) throw new Error(`objects: --out ${outDir} is not a folder`);
  const manifestPath = join(outDir, OBJECTS_MANIFEST);
  const ours = new Set(['train', 'val', OBJECTS_MANIFEST, PARTIAL_MARKER]);
  const all = readdirSync(outDir);
  // writeFileAtomic's temporary files, left by an interrupted write.
  const temporary = all.filter((e) => e.startsWith(`${OBJECTS_MANIFEST}.tmp-`) || e.startsWith(`${PARTIAL_MARKER}.tmp-`));
  const entries = all.filter((e) => !temporary.includes(e));
  if (entries.length === 0) return 'fresh';
  const foreign = entries.filter((e) => !ours.has(e));
  const existing = readJson(manifestPath) as ObjectsManifest | null;
  const marked = existsSync(join(outDir, PARTIAL_MARKER));
  if (foreign.length > 0 || (!existing && !marked) || (existing && existing.format !== FORMAT)) {
    throw new Error(
      `objects: --out ${outDir} is not empty and is not an objects folder (${existing ? 'its objects.json is not ours' : `it holds ${entries.slice(0, 5).join(', ')}`}); ` +
        'choose a new or empty folder',
    );
  }
  if (existing && identity(existing) === identity(wanted)) return 'done';
  if (existing && !o.overwrite) {
    throw new Error(
      `objects: ${outDir} already holds another objects set (${describeSet(existing)}; asked for ${describeSet(wanted)}` +
        `${identity({ ...existing, sources: wanted.sources }) === identity(wanted) ? ', from other sprite or background files' : ''}); ` +
        'pass --overwrite to replace it, or choose another --out',
    );
  }
  if (!existing) (o.warn ?? console.warn)(`objects: ${outDir} holds an unfinished set (no ${OBJECTS_MANIFEST}); removing its train/ and val/ and starting again`);
  // The manifest goes first, so an interruption from here on leaves an unfinished folder, never a wrong finished one.
  rmSync(manifestPath, { force: true });
  rmSync(join(outDir, 'train'), { recursive: true, force: true });
  rmSync(join(outDir, 'val'), { recursive: true, force: true });
  for (const e of temporary) rmSync(join(outDir, e), { force: true });
  return 'fresh';
}

/**
 * Writes `options.count` object images under `outDir`:
 *   train/<NN_class>/<i>.png, val/<NN_class>/<i>.png, objects.json (last).
 * When `outDir` already holds exactly this set, writes nothing.
 */
export async function writeObjectImages(outDir: string, options: ObjectWriteOptions): Promise<ObjectsSummary> {
  const gen = new ObjectImageGenerator(options);
  const o = gen.options;
  const warn = options.warn ?? ((m: string) => console.warn(m));
  const wanted = { options: o, sources: gen.sources() };
  if (prepareOutDir(outDir, wanted, options) === 'done') {
    const manifest = readObjectsManifest(outDir);
    return { outDir, train: manifest.train, val: manifest.val, reused: true, manifest };
  }
  writeFileAtomic(join(outDir, PARTIAL_MARKER), JSON.stringify(wanted));
  const trainCount = gen.trainCount;
  const counts = { train: SCENE_CLASSES.map(() => 0), val: SCENE_CLASSES.map(() => 0) };
  for (const split of ['train', 'val'] as const) {
    for (const folder of OBJECT_CLASS_FOLDERS) mkdirSync(join(outDir, split, folder), { recursive: true });
  }
  let done = 0;
  const indices = Array.from({ length: o.count }, (_, i) => i);
  // A few images in flight: PNG encoding runs on libuv threads while the next image is drawn.
  await mapLimited(indices, 4, async (i) => {
    const image = await gen.generate(i);
    const split = i < trainCount ? 'train' : 'val';
    const file = join(outDir, split, OBJECT_CLASS_FOLDERS[image.label]!, objectFileName(i));
    await sharp(image.rgb, { raw: { width: o.size, height: o.size, channels: 3 } }).png().toFile(file);
    counts[split][image.label]!++;
    options.onProgress?.(++done, o.count);
  });
  // Sorted: images in flight finish in any order.
  const unreadable = gen.unreadableFiles().sort();
  if (unreadable.length > 0) warn(`objects: skipped ${unreadable.length} unreadable files:\n  ${unreadable.join('\n  ')}`);
  const manifest: ObjectsManifest = {
    format: FORMAT,
    version: FORMAT_VERSION,
    generator: 'selfsup data objects',
    ...wanted,
    classes: SCENE_CLASSES.map((c, k) => ({ label: k, folder: OBJECT_CLASS_FOLDERS[k]!, name: c.name, supercategory: c.supercategory })),
    counts,
    train: trainCount,
    val: o.count - trainCount,
    unreadable,
  };
  writeFileAtomic(join(outDir, OBJECTS_MANIFEST), `${JSON.stringify(manifest, null, 1)}\n`);
  rmSync(join(outDir, PARTIAL_MARKER), { force: true });
  return { outDir, train: manifest.train, val: manifest.val, reused: false, manifest };
}

/** `000123.png` for image 123. */
export function objectFileName(index: number): string {
  return `${String(index).padStart(6, '0')}.png`;
}

/**
 * DIR's manifest; `who` names the flag or field that gave DIR in the errors
 * (a missing folder, an unfinished one, a manifest of another format).
 */
export function readObjectsManifest(dir: string, who = `objects folder ${dir}`): ObjectsManifest {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new Error(`${who}: ${dir} is not a folder (make one with \`selfsup data objects --out ${dir}\`)`);
  }
  const path = join(dir, OBJECTS_MANIFEST);
  if (!existsSync(path)) {
    throw new Error(
      `${who}: ${dir} has no ${OBJECTS_MANIFEST}, so it is not a finished \`selfsup data objects\` folder ` +
        `(an interrupted run leaves none; run \`selfsup data objects --out ${dir}\` again)`,
    );
  }
  const m = readJson(path) as ObjectsManifest | null;
  if (!m || m.format !== FORMAT || m.version !== FORMAT_VERSION) {
    throw new Error(`${who}: ${path} is not a ${FORMAT} manifest of version ${FORMAT_VERSION}`);
  }
  return m;
}

export interface LoadObjectsOptions {
  /** Names the flag or field that gave the folder, in errors. */
  who?: string;
  /** Image-folder cache (loadImageFolder's cacheDir; null disables it). */
  cacheDir?: string | null;
  warn?: (message: string) => void;
}

/**
 * One split of an objects folder at the size it was generated at, in
 * generation order (so the first N images are a class-balanced sample, as
 * `limit` and online kNN take them), labels in SCENE_CLASSES order. Null for
 * an empty val split.
 */
export async function loadObjectImages(dir: string, split: 'train' | 'val', o: LoadObjectsOptions = {}): Promise<ImageFolder | null> {
  const who = o.who ?? `objects folder ${dir}`;
  const manifest = readObjectsManifest(dir, who);
  if (manifest[split] === 0) return null;
  const folder = await loadImageFolder(join(dir, split), { size: manifest.options.size, channels: 3, cacheDir: o.cacheDir, warn: o.warn });
  if (folder.count !== manifest[split]) {
    throw new Error(`${who}: ${join(dir, split)} holds ${folder.count} readable images, ${OBJECTS_MANIFEST} says ${manifest[split]}; generate it again`);
  }
  const folders = manifest.classes.map((c) => c.folder);
  // loadImageFolder numbers only the class folders that hold images; map its labels back to the manifest's.
  const labelOf = (folder.classNames ?? []).map((name) => {
    const k = folders.indexOf(name);
    if (k < 0) throw new Error(`${who}: ${join(dir, split, name)} is not one of the classes in ${OBJECTS_MANIFEST}`);
    return k;
  });
  const id = folder.files.map((f) => Number.parseInt(basename(f.split(sep).pop()!), 10));
  const order = Array.from({ length: folder.count }, (_, i) => i).sort((a, b) => id[a]! - id[b]!);
  const sorted = selectImages(folder, order);
  for (let i = 0; i < sorted.count; i++) sorted.labels[i] = labelOf[sorted.labels[i]!]!;
  return { ...sorted, classNames: folders, files: order.map((i) => folder.files[i]!), skipped: folder.skipped, cachedCount: folder.cachedCount, summary: folder.summary };
}
