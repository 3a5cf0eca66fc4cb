// The detection data set: a scene folder (src/data/scenes.ts) or any COCO
// split of same-sized images with RLE masks, as boxes, contiguous classes
// and full-image bitmasks per image, and the batches the detector trains on
// (horizontal flip as detectron2's INPUT.RANDOM_FLIP "horizontal").
import { join } from 'node:path';
import type { Rng } from '../core/random.js';
import { decodeRle, type CocoAnnotation } from '../data/coco.js';
import { takeImages } from '../data/image_set.js';
import { loadSceneSplit, type SceneSplit } from '../data/scenes_reader.js';

export interface DetectionTarget {
  /** G*4 (x0, y0, x1, y1) in pixels: the annotation's bbox [x, y, w, h] as [x, y, x + w, y + h]. */
  boxes: Float32Array;
  /** G contiguous class indices 0..K-1 (see DetectionSet.categoryIds). */
  classes: Int32Array;
  /** G full-image H x W bitmasks, row-major 0/1. */
  masks: Uint8Array[];
  /** G flags, 1 for iscrowd annotations (kept; a trainer that follows detectron2 skips them). */
  crowd: Uint8Array;
}

export interface DetectionSet {
  split: SceneSplit;
  height: number;
  width: number;
  count: number;
  numClasses: number;
  /** Contiguous class index -> COCO category id (ids ascending, as detectron2's COCO loader). */
  categoryIds: number[];
  categoryNames: string[];
  /** One per image, in `split.coco.images` order. */
  targets: DetectionTarget[];
  /** Annotations left out for an empty box or mask (detectron2's filter_empty_instances). */
  emptyDropped: number;
}

/**
 * Reads `dir/annotations/instances_{split}.json` and its images. `limit`
 * keeps only the first `limit` images (the low-data setting). Annotations
 * whose box has no width or height, or whose mask is empty, are dropped as
 * detectron2's DatasetMapper does: such a GT box would overlap no anchor, and
 * the matcher's low-quality rule would then make every anchor positive.
 */
export async function loadDetectionSet(dir: string, split: 'train' | 'val', options: { limit?: number } = {}): Promise<DetectionSet> {
  const jsonPath = join(dir, 'annotations', `instances_${split}.json`);
  const { limit } = options;
  if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) {
    throw new Error(`loadDetectionSet: limit must be a positive whole number, got ${limit}`);
  }
  let scenes = await loadSceneSplit(dir, split);
  if (limit !== undefined && limit < scenes.images.count) scenes = firstImages(scenes, limit);
  const { height, width, count } = scenes.images;
  const categories = [...scenes.coco.categories].sort((a, b) => a.id - b.id);
  if (categories.length === 0) throw new Error(`${jsonPath}: no categories`);
  const contiguous = new Map<number, number>();
  categories.forEach((c, k) => {
    if (contiguous.has(c.id)) throw new Error(`${jsonPath}: category id ${c.id} appears twice`);
    contiguous.set(c.id, k);
  });
  let emptyDropped = 0;
  const targets = scenes.annotations.map((anns) => {
    const kept: { box: number[]; cls: number; mask: Uint8Array; crowd: number }[] = [];
    for (const ann of anns) {
      const where = `${jsonPath}: annotation ${ann.id} (image ${ann.image_id})`;
      const cls = contiguous.get(ann.category_id);
      if (cls === undefined) throw new Error(`${where}: category id ${ann.category_id} is not among the categories [${categories.map((c) => c.id).join(', ')}]`);
      const box = annotationBox(ann, where);
      const mask = annotationMask(ann, height, width, where);
      if (!(box[2]! - box[0]! > 1e-5 && box[3]! - box[1]! > 1e-5) || !mask.includes(1)) {
        emptyDropped++;
        continue;
      }
      kept.push({ box, cls, mask, crowd: ann.iscrowd ? 1 : 0 });
    }
    return {
      boxes: Float32Array.from(kept.flatMap((k) => k.box)),
      classes: Int32Array.from(kept, (k) => k.cls),
      masks: kept.map((k) => k.mask),
      crowd: Uint8Array.from(kept, (k) => k.crowd),
    };
  });
  return {
    split: scenes,
    height,
    width,
    count,
    numClasses: categories.length,
    categoryIds: categories.map((c) => c.id),
    categoryNames: categories.map((c) => c.name),
    targets,
    emptyDropped,
  };
}

/** The split cut to its first n images and their annotations. */
function firstImages(scenes: SceneSplit, n: number): SceneSplit {
  const { height, width } = scenes.images;
  const images = scenes.coco.images.slice(0, n);
  const ids = new Set(images.map((im) => im.id));
  return {
    images: takeImages(scenes.images, n),
    semantic: scenes.semantic.subarray(0, n * height * width),
    coco: { ...scenes.coco, images, annotations: scenes.coco.annotations.filter((a) => ids.has(a.image_id)) },
    annotations: scenes.annotations.slice(0, n),
  };
}

function annotationBox(ann: CocoAnnotation, where: string): number[] {
  const b = ann.bbox as unknown;
  if (!Array.isArray(b) || b.length !== 4 || b.some((v) => typeof v !== 'number' || !Number.isFinite(v))) {
    throw new Error(`${where}: bbox must be four finite numbers [x, y, w, h], got ${JSON.stringify(b)}`);
  }
  const [x, y, w, h] = b as number[];
  if (w! < 0 || h! < 0) throw new Error(`${where}: bbox [${b.join(', ')}] has a negative width or height`);
  return [x!, y!, x! + w!, y! + h!];
}

function annotationMask(ann: CocoAnnotation, height: number, width: number, where: string): Uint8Array {
  const seg = ann.segmentation as unknown as { size?: unknown; counts?: unknown } | undefined;
  if (!seg || typeof seg !== 'object' || Array.isArray(seg) || typeof seg.counts !== 'string' || !Array.isArray(seg.size)) {
    throw new Error(`${where}: segmentation must be a compressed RLE {size, counts: string} (polygons are not supported)`);
  }
  const [h, w] = seg.size as number[];
  if (h !== height || w !== width) throw new Error(`${where}: RLE size [${h}, ${w}] differs from the image's [${height}, ${width}]`);
  try {
    return decodeRle(ann.segmentation);
  } catch (err) {
    throw new Error(`${where}: ${(err as Error).message}`);
  }
}

export interface DetectionBatch {
  /** B*H*W*3 NHWC: (pixel / 255 - mean) / std, mirrored where flipped. */
  images: Float32Array;
  /** Image indices into the set. */
  indices: number[];
  flipped: boolean[];
  /** Targets in the flipped frame; boxes and classes are copies, masks are shared with the set where not flipped (read-only). */
  targets: DetectionTarget[];
  /** B*H*W semantic masks (COCO category ids, 0 = background), mirrored where flipped. */
  semantic: Uint8Array;
}

/** A horizontally mirrored target: x0' = W - x1, x1' = W - x0, masks mirrored row by row. */
export function flipTarget(target: DetectionTarget, height: number, width: number): DetectionTarget {
  const boxes = new Float32Array(target.boxes.length);
  for (let o = 0; o < boxes.length; o += 4) {
    boxes[o] = width - target.boxes[o + 2]!;
    boxes[o + 1] = target.boxes[o + 1]!;
    boxes[o + 2] = width - target.boxes[o]!;
    boxes[o + 3] = target.boxes[o + 3]!;
  }
  const masks = target.masks.map((m) => {
    const out = new Uint8Array(m.length);
    mirrorRows(m, out, 0, height, width, 1);
    return out;
  });
  return { boxes, classes: target.classes.slice(), masks, crowd: target.crowd.slice() };
}

/** Writes `src` (H x W x C) into `dst` at `offset`, each row reversed. */
function mirrorRows(src: ArrayLike<number>, dst: Uint8Array | Float32Array, offset: number, height: number, width: number, channels: number): void {
  for (let y = 0; y < height; y++) {
    const row = y * width * channels;
    for (let x = 0; x < width; x++) {
      const from = row + (width - 1 - x) * channels;
      const to = offset + row + x * channels;
      for (let c = 0; c < channels; c++) dst[to + c] = src[from + c]!;
    }
  }
}

/** The batch of images `indices`, image b mirrored when flip[b]. */
export function makeDetectionBatch(set: DetectionSet, indices: number[], options: { flip: boolean[]; mean: number[]; std: number[] }): DetectionBatch {
  const { flip, mean, std } = options;
  const { height, width } = set;
  if (flip.length !== indices.length) throw new Error(`makeDetectionBatch: ${indices.length} images but ${flip.length} flip flags`);
  if (mean.length !== 3 || std.length !== 3) throw new Error(`makeDetectionBatch: mean and std need 3 entries (RGB), got ${mean.length} and ${std.length}`);
  const pixels = height * width;
  const images = new Float32Array(indices.length * pixels * 3);
  const semantic = new Uint8Array(indices.length * pixels);
  const source = set.split.images.images;
  const scale = [0, 1, 2].map((c) => 1 / (255 * std[c]!));
  const shift = [0, 1, 2].map((c) => mean[c]! / std[c]!);
  const targets = indices.map((index, b) => {
    if (!Number.isInteger(index) || index < 0 || index >= set.count) throw new Error(`makeDetectionBatch: image index ${index} is outside 0..${set.count - 1}`);
    const rgb = source.subarray(index * pixels * 3, (index + 1) * pixels * 3);
    const sem = set.split.semantic.subarray(index * pixels, (index + 1) * pixels);
    const out = b * pixels * 3;
    if (flip[b]) {
      mirrorRows(rgb, images, out, height, width, 3);
      mirrorRows(sem, semantic, b * pixels, height, width, 1);
    } else {
      images.set(rgb, out);
      semantic.set(sem, b * pixels);
    }
    for (let i = out; i < out + pixels * 3; i += 3) {
      for (let c = 0; c < 3; c++) images[i + c] = images[i + c]! * scale[c]! - shift[c]!;
    }
    const t = set.targets[index]!;
    return flip[b] ? flipTarget(t, height, width) : { boxes: t.boxes.slice(), classes: t.classes.slice(), masks: t.masks, crowd: t.crowd.slice() };
  });
  return { images, indices: [...indices], flipped: [...flip], targets, semantic };
}

/**
 * One epoch of batches: the images in the order rng.permutation(count), each
 * flipped when rng.chance(flipProbability), the last incomplete batch
 * dropped. The order and every flip are drawn from `rng` when this is called
 * (not as batches are taken), so a seed fixes the epoch; pass a new generator
 * per epoch (root.split(epoch)) or the same one, which then moves on.
 */
export function detectionBatches(
  set: DetectionSet,
  batchSize: number,
  rng: Rng,
  options: { flipProbability: number; mean: number[]; std: number[] },
): Generator<DetectionBatch> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`detectionBatches: batch size must be a positive whole number, got ${batchSize}`);
  const { flipProbability, mean, std } = options;
  if (!(flipProbability >= 0 && flipProbability <= 1)) throw new Error(`detectionBatches: flipProbability must be in [0, 1], got ${flipProbability}`);
  const order = Array.from(rng.permutation(set.count));
  const flips = order.map(() => rng.chance(flipProbability));
  const batches = Math.floor(set.count / batchSize);
  return (function* () {
    for (let b = 0; b < batches; b++) {
      const at = b * batchSize;
      yield makeDetectionBatch(set, order.slice(at, at + batchSize), { flip: flips.slice(at, at + batchSize), mean, std });
    }
  })();
}
