// Frozen-backbone features for the evaluation protocols: every image is
// brought to the working size the way the training views see it at crop
// scale 1 (a bilinear resize of the whole image, or zero padding on request),
// normalised with the training statistics, passed through the backbone in eval
// mode (BN running statistics) without a gradient tape, and the chosen stage
// is globally average-pooled.
import * as tf from '../core/tf.js';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import { imageBytes, selectImages, type ImageSet } from '../data/image_set.js';
import { defaultNormalization } from '../data/dataset_config.js';
import { normalize, resizedCrop } from '../data/transforms.js';
import { estimateRunningStats } from '../nn/index.js';
import { noGrad } from '../nn/module.js';
import { globalAvgPool, type ResNet, type ResNetStages } from '../nn/resnet.js';

export const FEATURE_STAGES = ['res2', 'res3', 'res4', 'res5'] as const;
export type FeatureStage = (typeof FEATURE_STAGES)[number];

/**
 * How an image reaches `size` x `size`. `resize` is what a training view at
 * crop scale 1 is (the recipes scale Fashion-MNIST's 28 px up to 32); `pad`
 * centres the image on a black canvas (cropping the centre if it is larger).
 */
export type FitMode = 'resize' | 'pad';

export interface ExtractOptions {
  /** Side of the square network input. */
  size: number;
  batchSize: number;
  stage?: FeatureStage;
  /** Per-channel normalisation; default: `defaultNormalization(channels)`. */
  mean?: number[];
  std?: number[];
  fit?: FitMode;
  /** Called after each batch with the number of images done. */
  onProgress?: (done: number, total: number) => void;
}

/** The backbone produced NaN or infinite features: its weights or BN statistics diverged. */
export class NonFiniteFeaturesError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NonFiniteFeaturesError';
  }
}

export interface Features {
  /** count x dim floats, row-major. */
  features: Float32Array;
  dim: number;
}

/** Writes images [start, start + n) of `set` as an n x size x size x C float batch into `out`. */
export function prepareBatch(
  set: ImageSet,
  start: number,
  n: number,
  size: number,
  fit: FitMode,
  stats: { mean: number[]; std: number[] } | null,
  out: Float32Array,
): void {
  const c = set.channels;
  const perImage = size * size * c;
  const srcBytes = imageBytes(set);
  for (let i = 0; i < n; i++) {
    const srcOffset = (start + i) * srcBytes;
    const o = i * perImage;
    if (fit === 'resize') {
      const box = { x: 0, y: 0, w: set.width, h: set.height };
      resizedCrop(set.images, srcOffset, set.width, set.height, c, box, false, out, o, size, size);
    } else {
      padCentered(set, srcOffset, size, out, o);
    }
    if (stats) normalize(out, o, size * size, c, stats.mean, stats.std);
  }
}

/** Centres the image on a zero canvas; a larger image loses its borders. */
function padCentered(set: ImageSet, srcOffset: number, size: number, out: Float32Array, o: number): void {
  const c = set.channels;
  out.fill(0, o, o + size * size * c);
  const dy = Math.floor((size - set.height) / 2);
  const dx = Math.floor((size - set.width) / 2);
  for (let y = Math.max(0, dy); y < Math.min(size, dy + set.height); y++) {
    const srcRow = srcOffset + (y - dy) * set.width * c;
    const x0 = Math.max(0, dx);
    const x1 = Math.min(size, dx + set.width);
    for (let x = x0; x < x1; x++) {
      for (let k = 0; k < c; k++) out[o + (y * size + x) * c + k] = set.images[srcRow + (x - dx) * c + k]! / 255;
    }
  }
}

function inputChannels(backbone: ResNet): number | undefined {
  return backbone.stateDict()['conv1.weight']?.shape[2];
}

/**
 * Pooled features of `stage` (default res5) for every image of `images`. The
 * backbone runs in eval mode and is returned to the modes it had; no tensor
 * outlives a batch.
 */
export async function extractFeatures(backbone: ResNet, images: ImageSet, opts: ExtractOptions): Promise<Features> {
  const { size, batchSize, stage = 'res5', fit = 'resize', onProgress } = opts;
  if (!(Number.isInteger(size) && size >= 1)) throw new Error(`extractFeatures: size must be a positive integer, got ${size}`);
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) {
    throw new Error(`extractFeatures: batchSize must be a positive integer, got ${batchSize}`);
  }
  if (!FEATURE_STAGES.includes(stage)) throw new Error(`extractFeatures: stage must be one of ${FEATURE_STAGES.join(', ')}, got '${stage}'`);
  if (fit !== 'resize' && fit !== 'pad') throw new Error(`extractFeatures: fit must be resize or pad, got '${String(fit)}'`);
  const c = images.channels;
  const expected = inputChannels(backbone);
  if (expected !== undefined && expected !== c) {
    throw new Error(`extractFeatures: the backbone takes ${expected}-channel images, the set has ${c} channels`);
  }
  if ((opts.mean === undefined) !== (opts.std === undefined)) throw new Error('extractFeatures: give both mean and std, or neither');
  const stats = opts.mean && opts.std ? { mean: opts.mean, std: opts.std } : defaultNormalization(c);
  if (stats && (stats.mean.length !== c || stats.std.length !== c)) {
    throw new Error(`extractFeatures: ${c}-channel images need ${c} mean and std values, got ${stats.mean.length} and ${stats.std.length}`);
  }

  const dim = backbone.channels[stage as keyof ResNetStages];
  const features = new Float32Array(images.count * dim);
  const restoreModes = backbone.saveModes();
  backbone.eval();
  const input = new Float32Array(Math.min(batchSize, images.count) * size * size * c);
  try {
    for (let start = 0; start < images.count; start += batchSize) {
      const n = Math.min(batchSize, images.count - start);
      prepareBatch(images, start, n, size, fit, stats, input);
      const pooled = tf.tidy(() =>
        noGrad(() => {
          const x = tf.tensor4d(input.subarray(0, n * size * size * c), [n, size, size, c]) as Tensor4D;
          return globalAvgPool(backbone.forward(x)[stage]);
        }),
      );
      try {
        features.set((await pooled.data()) as Float32Array, start * dim);
      } finally {
        pooled.dispose();
      }
      onProgress?.(start + n, images.count);
    }
  } finally {
    restoreModes();
  }
  // Distances and classifiers on NaN features still yield numbers (every vote ties), so a diverged backbone would score as chance.
  for (let i = 0; i < features.length; i++) {
    if (!Number.isFinite(features[i]!)) {
      throw new NonFiniteFeaturesError(
        `the backbone's ${stage} features are not finite (${features[i]} at image ${Math.floor(i / dim)}, channel ${i % dim}): its weights or BN statistics diverged`,
      );
    }
  }
  return { features, dim };
}

/**
 * Re-estimates `backbone`'s BN running statistics on the images its features
 * are extracted from: up to `limit` images spaced evenly through `images`,
 * brought to `size` and normalised as extractFeatures does, in training-mode
 * batches of `batchSize` (a last short batch is dropped, so that SplitBatchNorm
 * groups divide every batch), averaged (estimateRunningStats). Training
 * accumulates these statistics over augmented views (crops, jitter, blur,
 * jigsaw patches), which evaluation's whole images do not look like. Returns
 * the number of images used.
 */
export function estimateBatchNormStatistics(backbone: ResNet, images: ImageSet, { size, batchSize, limit }: { size: number; batchSize: number; limit: number }): number {
  const n = Math.min(limit, images.count);
  if (n < 1) return 0;
  const chosen = n === images.count ? images : selectImages(images, Int32Array.from({ length: n }, (_, i) => Math.floor((i * images.count) / n)));
  const perBatch = Math.min(batchSize, n);
  const batches = Math.floor(n / perBatch);
  const c = images.channels;
  const stats = defaultNormalization(c);
  const input = new Float32Array(perBatch * size * size * c);
  estimateRunningStats(backbone, batches, (b) => {
    prepareBatch(chosen, b * perBatch, perBatch, size, 'resize', stats, input);
    tf.tidy(() => noGrad(() => void backbone.forward(tf.tensor4d(input, [perBatch, size, size, c]))));
  });
  return batches * perBatch;
}
