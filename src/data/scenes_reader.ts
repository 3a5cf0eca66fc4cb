// Reads a scene folder written by writeScenes (or any COCO split whose images
// share one size) back into memory, for detection and segmentation evaluation.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import type { CocoAnnotation, CocoDataset } from './coco.js';
import type { ImageSet } from './image_set.js';
import { mapLimited } from './map_limited.js';

export interface SceneSplit {
  /** RGB images, unlabeled (labels are -1: scenes hold several objects). */
  images: ImageSet;
  /** Per-pixel category ids, count * height * width, 0 = background. */
  semantic: Uint8Array;
  coco: CocoDataset;
  /** Annotations of image k (in `coco.images` order). */
  annotations: CocoAnnotation[][];
}

/** `limit`: read only the first N images (in `coco.images` order) and their annotations. */
export async function loadSceneSplit(dir: string, split: 'train' | 'val', { limit }: { limit?: number } = {}): Promise<SceneSplit> {
  const jsonPath = join(dir, 'annotations', `instances_${split}.json`);
  let coco: CocoDataset;
  try {
    coco = JSON.parse(readFileSync(jsonPath, 'utf8')) as CocoDataset;
  } catch (err) {
    throw new Error(`${jsonPath}: cannot read COCO annotations (${(err as Error).message})`);
  }
  if (coco.images.length === 0) throw new Error(`${jsonPath}: no images`);
  const allIds = new Set(coco.images.map((im) => im.id));
  if (limit !== undefined && limit < coco.images.length) {
    const images = coco.images.slice(0, limit);
    const kept = new Set(images.map((im) => im.id));
    // Annotations of a missing image stay, so the check below still names them.
    coco = { ...coco, images, annotations: coco.annotations.filter((a) => kept.has(a.image_id) || !allIds.has(a.image_id)) };
  }
  const { width, height } = coco.images[0]!;
  const count = coco.images.length;
  const pixels = new Uint8Array(count * height * width * 3);
  const semantic = new Uint8Array(count * height * width);
  await mapLimited(coco.images, 4, async (image, k) => {
    if (image.width !== width || image.height !== height) {
      throw new Error(`${jsonPath}: image ${image.id} is ${image.width}x${image.height}, the first is ${width}x${height}`);
    }
    const file = join(dir, split, 'images', image.file_name);
    const rgb = await sharp(file).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    if (rgb.info.width !== width || rgb.info.height !== height || rgb.info.channels !== 3) {
      throw new Error(`${file}: ${rgb.info.width}x${rgb.info.height}x${rgb.info.channels}, annotations say ${width}x${height}x3`);
    }
    pixels.set(rgb.data, k * height * width * 3);
    if (image.semantic_mask) {
      // extractChannel: sharp would otherwise widen the grey PNG to RGB.
      const mask = await sharp(join(dir, split, 'masks', image.semantic_mask)).extractChannel(0).raw().toBuffer();
      semantic.set(mask, k * height * width);
    }
  });
  const byImage = new Map<number, CocoAnnotation[]>(coco.images.map((im) => [im.id, []]));
  for (const ann of coco.annotations) {
    const list = byImage.get(ann.image_id);
    if (!list) throw new Error(`${jsonPath}: annotation ${ann.id} refers to missing image ${ann.image_id}`);
    list.push(ann);
  }
  return {
    images: { images: pixels, count, height, width, channels: 3, labels: new Int32Array(count).fill(-1) },
    semantic,
    coco,
    annotations: coco.images.map((im) => byImage.get(im.id)!),
  };
}
