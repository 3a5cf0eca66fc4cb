// What the transfer protocols (detect, segment) share: their options, the
// scenes as fine-tuning batches for a backbone of 1 or 3 input channels, the
// fine-tune settings (detectron2's short schedule scaled to the iteration
// budget), and precise BN before testing.
import { join } from 'node:path';
import * as tf from '../core/tf.js';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { Rng } from '../core/random.js';
import { textSha256 } from '../core/files.js';
import { defaultNormalization } from '../data/dataset_config.js';
import type { LoadedBackbone } from '../io/backbone.js';
import { estimateRunningStats } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { detectionBatches, loadDetectionSet, makeDetectionBatch, type DetectionBatch, type DetectionSet } from './data.js';
import type { FinetuneIo, FinetuneSettings, FinetuneTask } from './finetune.js';
import type { Scalar } from '@tensorflow/tfjs-core';

export const TransferOptions = z
  .object({
    scenes: z.string().min(1).describe('scene folder (made by `selfsup data scenes --out DIR`)'),
    iters: z.number().int().positive().default(1500).describe('fine-tuning iterations; the rate drops 10x at 75% and 92% of them'),
    batchSize: z.number().int().positive().default(8).describe('images per iteration'),
    lr: z.number().positive().default(0.01).describe('peak learning rate (detectron2: 0.02 at 16 images)'),
    warmupIters: z.number().int().min(0).default(100).describe('linear warm-up iterations from 1/1000 of the rate'),
    weightDecay: z.number().min(0).default(1e-4).describe('weight decay (not on BN or biases)'),
    trainLimit: z.number().int().positive().optional().describe('fine-tune on the first N training scenes only (low-data setting)'),
    valLimit: z.number().int().positive().optional().describe('evaluate on the first N val scenes only'),
    preciseBnBatches: z.number().int().min(0).default(50).describe('training batches that re-estimate BN statistics before testing'),
    checkpointEvery: z.number().int().positive().default(200).describe('save the resumable state every N iterations'),
    seed: z.number().int().min(0).default(0).describe("seed of the heads' initialisation, batch order, flips and samples"),
  })
  .strict();
export type TransferOptions = z.infer<typeof TransferOptions>;

export interface TransferData {
  train: DetectionSet;
  val: DetectionSet;
}

export async function loadTransferData(o: TransferOptions, what: string): Promise<TransferData> {
  const train = await loadDetectionSet(o.scenes, 'train', { limit: o.trainLimit });
  const val = await loadDetectionSet(o.scenes, 'val', { limit: o.valLimit });
  if (train.categoryIds.join() !== val.categoryIds.join()) {
    throw new Error(`${what}: --scenes ${o.scenes}: train and val have different categories ([${train.categoryIds}] vs [${val.categoryIds}])`);
  }
  if (train.count < o.batchSize) throw new Error(`${what}: --batch-size ${o.batchSize} is more than the ${train.count} training scenes`);
  return { train, val };
}

/** detectron2's short schedule (`*_12k`: steps at 9000 and 11000 of 12000) over `iters`. */
export function finetuneSettings(o: TransferOptions): FinetuneSettings {
  return {
    iters: o.iters,
    batchSize: o.batchSize,
    lr: o.lr,
    momentum: 0.9,
    weightDecay: o.weightDecay,
    warmupIters: Math.min(o.warmupIters, o.iters),
    warmupFactor: 0.001,
    milestones: [Math.round(0.75 * o.iters), Math.round((11 / 12) * o.iters)],
    gamma: 0.1,
    seed: o.seed,
    checkpointEvery: o.checkpointEvery,
  };
}

/**
 * Scene pixels as the backbone's input, normalised as pretraining normalised
 * its views (data/dataset_config.ts: RGB in [0, 1], grey with Fashion-MNIST's
 * statistics); a one-channel backbone (Fashion-MNIST runs) sees the luma.
 */
export function backboneInput(channels: number): { mean: number[]; std: number[]; toTensor(batch: DetectionBatch, height: number, width: number): Tensor4D } {
  if (channels === 3) {
    const { mean, std } = defaultNormalization(3) ?? { mean: [0, 0, 0], std: [1, 1, 1] };
    return { mean, std, toTensor: (b, h, w) => tf.tensor4d(b.images, [b.indices.length, h, w, 3]) };
  }
  if (channels !== 1) throw new Error(`transfer: backbones of ${channels} input channels are not supported (1 or 3)`);
  const grey = defaultNormalization(1) ?? { mean: [0], std: [1] };
  return {
    mean: [0, 0, 0],
    std: [1, 1, 1],
    toTensor: (b, h, w) =>
      tf.tidy(() => {
        const rgb = tf.tensor4d(b.images, [b.indices.length, h, w, 3]);
        // ITU-R BT.601 luma, as sharp's and PIL's greyscale conversion.
        const luma = tf.sum(tf.mul(rgb, tf.tensor1d([0.299, 0.587, 0.114])), 3, true) as Tensor4D;
        return tf.div(tf.sub(luma, grey.mean[0]!), grey.std[0]!) as Tensor4D;
      }),
  };
}

/** A fine-tuning task over the training scenes: shuffled epochs with random flips, per the seed. */
export function sceneTask(
  model: Module,
  data: DetectionSet,
  o: TransferOptions,
  input: ReturnType<typeof backboneInput>,
  losses: (images: Tensor4D, batch: DetectionBatch, rng: Rng) => Record<string, Scalar>,
): FinetuneTask<DetectionBatch> {
  const itersPerEpoch = Math.floor(data.count / o.batchSize);
  let current: { epoch: number; next: number; batches: Generator<DetectionBatch> } | undefined;
  const root = Rng.seeded(o.seed);
  return {
    model,
    itersPerEpoch,
    batch(epoch, index) {
      if (!current || current.epoch !== epoch || current.next > index) {
        current = { epoch, next: 0, batches: detectionBatches(data, o.batchSize, root.split(epoch), { flipProbability: 0.5, mean: input.mean, std: input.std }) };
      }
      // Skipping only happens on a resume mid-epoch.
      for (; current.next < index; current.next++) current.batches.next();
      current.next++;
      return current.batches.next().value as DetectionBatch;
    },
    losses(batch, rng) {
      return losses(input.toTensor(batch, data.height, data.width), batch, rng);
    },
  };
}

/** The set's images in order, unflipped, `batchSize` at a time: what testing reads. */
export function* testBatches(set: DetectionSet, batchSize: number, input: ReturnType<typeof backboneInput>): Generator<DetectionBatch> {
  for (let at = 0; at < set.count; at += batchSize) {
    const indices = Array.from({ length: Math.min(batchSize, set.count - at) }, (_, k) => at + k);
    yield makeDetectionBatch(set, indices, { flip: indices.map(() => false), mean: input.mean, std: input.std });
  }
}

/** Re-estimates every BN's statistics over training batches (detectron2's PreciseBN before each test). */
export function preciseBatchNorm(model: Module, data: DetectionSet, o: TransferOptions, input: ReturnType<typeof backboneInput>, forward: (images: Tensor4D) => void): void {
  const batches = Math.min(o.preciseBnBatches, Math.floor(data.count / o.batchSize));
  if (batches === 0) return;
  const it = detectionBatches(data, o.batchSize, Rng.seeded(o.seed).split(7_777_777), { flipProbability: 0, mean: input.mean, std: input.std });
  estimateRunningStats(model, batches, () => {
    const batch = it.next().value as DetectionBatch;
    tf.tidy(() => forward(input.toTensor(batch, data.height, data.width)));
  });
}

/** Where the fine-tune keeps its resumable state, and the fingerprint that ties it to these settings. */
export function finetuneIo(loaded: LoadedBackbone, workDir: string | null, o: TransferOptions, what: string, log: (line: string) => void): FinetuneIo {
  return {
    stateFile: workDir ? join(workDir, 'finetune.safetensors') : null,
    fingerprint: textSha256(JSON.stringify({ protocol: what, checkpoint: loaded.checkpoint.sha256, randomInit: loaded.checkpoint.randomInit, o })),
    log,
  };
}

export function dataSummary(o: TransferOptions, data: TransferData): { name: string; trainImages: number; testImages: number } {
  return { name: `scenes ${o.scenes}`, trainImages: data.train.count, testImages: data.val.count };
}

/** A percentage with COCO's -1 (no ground truth in the range) kept as -1. */
export function percent(v: number): number {
  return v < 0 ? -1 : 100 * v;
}
