// The input of the feature protocols (kNN, linear, ...): frozen backbone
// features of a training split (the kNN memory / probe training set) and a
// test split, with their labels. Fashion-MNIST has both splits; an image
// folder is split by a seeded permutation of the run's seed. Features are
// cached under the run folder, keyed by the checkpoint's checksum and a digest
// of the images read, so a second protocol on the same checkpoint and data
// skips the backbone.
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { dataFacts, defaultNormalization, hasTestSplit, loadTestSplit, loadTrainingSet, type DatasetConfig } from '../data/dataset_config.js';
import type { ImageSet } from '../data/image_set.js';
import type { LoadedBackbone } from '../io/backbone.js';
import { cachedFeatures, imageSetDigest } from './feature_cache.js';
import { extractFeatures, FEATURE_STAGES, type FeatureStage, type Features } from './features.js';
import type { LabeledFeatures } from './linear_probe.js';
import { holdoutSplit } from './splits.js';

export const FeatureInputOptions = z
  .object({
    stage: z.enum(FEATURE_STAGES).default('res5').describe('backbone stage whose pooled output is the feature'),
    limit: z.number().int().positive().optional().describe('use only the first N training images (default: all)'),
    testLimit: z.number().int().positive().optional().describe('use only the first N test images (default: all)'),
    data: z.string().min(1).optional().describe("Fashion-MNIST's folder, or the image folder, if not where the run read it"),
    testFraction: z.number().gt(0).lt(1).default(0.2).describe('image folders: fraction held out as the test split'),
    batchSize: z.number().int().positive().default(256).describe('images per forward pass when extracting features'),
    cache: z.boolean().default(true).describe('read and write cached features (<run>/features/)'),
  })
  .strict();
export type FeatureInputOptions = z.infer<typeof FeatureInputOptions>;

export interface FeatureSplits {
  stage: FeatureStage;
  dim: number;
  numClasses: number;
  /** The data set's name, as the run config gives it. */
  dataset: string;
  train: LabeledFeatures & { cached: boolean };
  test: LabeledFeatures & { cached: boolean };
}

/** The evaluation split's own stream, so it holds out other images than online kNN does. */
const HOLDOUT_STREAM = 0x65766c; // 'evl'

async function evaluationSets(dataset: DatasetConfig, seed: number, o: FeatureInputOptions): Promise<{ train: ImageSet; test: ImageSet; tag: string }> {
  if (hasTestSplit(dataset)) {
    // Fashion-MNIST's test set and an objects folder's val split: the images pretraining never saw.
    const train = await loadTrainingSet({ ...dataset, limit: o.limit });
    const test = await loadTestSplit({ ...dataset, limit: undefined }, o.testLimit ?? Number.MAX_SAFE_INTEGER);
    if (test) return { train, test, tag: dataset.name };
  }
  const all = await loadTrainingSet({ ...dataset, limit: undefined });
  const held = Math.max(1, Math.round(all.count * o.testFraction));
  const split = holdoutSplit(all, { seed, stream: HOLDOUT_STREAM, held, testLimit: o.testLimit, trainLimit: o.limit });
  return { ...split, tag: `${dataset.name}:seed${seed}:holdout${o.testFraction}` };
}

/** Extracts (or reads cached) train and test features of `loaded`'s backbone. */
export async function prepareFeatures(loaded: LoadedBackbone, o: FeatureInputOptions, log: (line: string) => void): Promise<FeatureSplits> {
  const { config, checkpoint } = loaded;
  const dataset: DatasetConfig = { ...config.dataset, dir: o.data ?? config.dataset.dir };
  for (const prefix of ['folder:', 'objects:']) if (o.data && dataset.name.startsWith(prefix)) dataset.name = `${prefix}${o.data}`;
  const sets = await evaluationSets(dataset, config.seed, o);
  const numClasses = Math.max(dataFacts(sets.train).numClasses, dataFacts(sets.test).numClasses);
  if (numClasses < 2 || sets.train.labels.some((l) => l < 0)) {
    throw new Error(`${dataset.name}: evaluation needs labelled images (one subfolder per class)`);
  }
  const checksum = checkpoint.sha256 ?? `random-init:${config.seed}:${checkpoint.arch}`;
  const cacheDir = o.cache ? join(dirname(checkpoint.path), 'features') : null;
  const size = config.dataset.size;
  const stats = defaultNormalization(loaded.data.channels);
  const features = async (split: 'train' | 'test', set: ImageSet): Promise<Features & { labels: Int32Array; cached: boolean }> => {
    const data = imageSetDigest(set);
    const key = { checkpoint: checksum, stage: o.stage, split: `${sets.tag}:${split}`, count: set.count, data, size, fit: 'resize', mean: stats?.mean ?? null, std: stats?.std ?? null };
    const t0 = performance.now();
    const tty = process.stderr.isTTY;
    const f = await cachedFeatures(cacheDir, key, () =>
      extractFeatures(loaded.backbone, set, {
        size,
        batchSize: o.batchSize,
        stage: o.stage,
        ...(stats ?? {}),
        onProgress: tty ? (done, total) => process.stderr.write(`\r${split} features: ${done}/${total}`) : undefined,
      }),
    );
    if (tty && !f.cached) process.stderr.write('\n');
    const s = ((performance.now() - t0) / 1000).toFixed(1);
    log(`${split}: ${set.count} images, ${o.stage} features ${f.cached ? 'from the cache' : `extracted in ${s} s`}`);
    return { ...f, labels: set.labels };
  };
  const train = await features('train', sets.train);
  const test = await features('test', sets.test);
  return { stage: o.stage, dim: train.dim, numClasses, dataset: dataset.name, train, test };
}
