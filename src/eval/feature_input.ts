// The input of the feature protocols (kNN, linear, ...): frozen backbone
// features of a training split (the kNN memory / probe training set) and a
// test split, with their labels. Fashion-MNIST has both splits; an image
// folder is split by a seeded permutation of the run's seed. Features are
// cached under the run folder, keyed by the checkpoint's checksum and a digest
// of the images read, so a second protocol on the same checkpoint and data
// skips the backbone.
//
// `--scenes DIR` swaps the run's data set for a scene folder (`selfsup data
// scenes`): its train scenes are the training side, its val scenes the test
// side, and the labels are multi-label, a multi-hot row per image of the COCO
// categories present in it (VOC07-style classification, as the svm protocol
// scores it). Protocols that need one class per image call singleLabel(),
// which refuses such input.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { dataFacts, defaultNormalization, hasTestSplit, loadTestSplit, loadTrainingSet, type DatasetConfig } from '../data/dataset_config.js';
import type { ImageSet } from '../data/image_set.js';
import { loadSceneSplit, type SceneSplit } from '../data/scenes_reader.js';
import type { LoadedBackbone } from '../io/backbone.js';
import { cachedFeatures, imageSetDigest } from './feature_cache.js';
import { extractFeatures, FEATURE_STAGES, type FeatureStage } from './features.js';
import type { LabeledFeatures } from './linear_probe.js';
import { holdoutSplit } from './splits.js';

export const FeatureInputOptions = z
  .object({
    stage: z.enum(FEATURE_STAGES).default('res5').describe('backbone stage whose pooled output is the feature'),
    limit: z.number().int().positive().optional().describe('use only the first N training images (default: all)'),
    testLimit: z.number().int().positive().optional().describe('use only the first N test images (default: all)'),
    data: z.string().min(1).optional().describe("Fashion-MNIST's folder, or the image folder, if not where the run read it"),
    scenes: z
      .string()
      .min(1)
      .optional()
      .describe("a scene folder (`selfsup data scenes --out DIR`) instead of the run's data: train scenes as the training side, val scenes as the test side; multi-label (the classes present in each scene), so svm only"),
    testFraction: z.number().gt(0).lt(1).default(0.2).describe('image folders: fraction held out as the test split'),
    batchSize: z.number().int().positive().default(256).describe('images per forward pass when extracting features'),
    cache: z.boolean().default(true).describe('read and write cached features (<run>/features/)'),
  })
  .strict();
export type FeatureInputOptions = z.infer<typeof FeatureInputOptions>;

/** One side's features and labels. */
export interface SplitFeatures extends LabeledFeatures {
  cached: boolean;
  /**
   * Multi-label data (--scenes): count x numClasses, row-major, 1 where the
   * class is in the image, else 0; `labels` are then all -1.
   */
  multiLabels?: Uint8Array;
}

export interface FeatureSplits {
  stage: FeatureStage;
  dim: number;
  numClasses: number;
  /** Class names by index, where the data names them (scenes: the COCO categories by id). */
  classNames?: string[];
  /** The data set's name, as the run config gives it (`scenes:DIR` for --scenes). */
  dataset: string;
  train: SplitFeatures;
  test: SplitFeatures;
}

/** Whether the splits hold several classes per image (multi-hot `multiLabels`), as --scenes gives. */
export function isMultiLabel(f: FeatureSplits): boolean {
  return f.train.multiLabels !== undefined || f.test.multiLabels !== undefined;
}

/** `f`, for a protocol that needs one class per image: multi-label splits are refused, naming the protocol that takes them. */
export function singleLabel(f: FeatureSplits, protocol: string): FeatureSplits {
  if (isMultiLabel(f)) {
    throw new Error(`${protocol} needs one class per image; ${f.dataset.startsWith('scenes:') ? '--scenes gives' : `${f.dataset} is`} multi-label data: use svm`);
  }
  return f;
}

/** The evaluation split's own stream, so it holds out other images than online kNN does. */
const HOLDOUT_STREAM = 0x65766c; // 'evl'

/** What the features are extracted from, and how each side's images reach the network. */
interface EvaluationSets {
  train: ImageSet;
  test: ImageSet;
  /** Where the data came from, for the cache key (the images' digest says what they were). */
  tag: string;
  name: string;
  numClasses: number;
  classNames?: string[];
  multiLabels?: { train: Uint8Array; test: Uint8Array };
  /** Network input side per split. */
  size: { train: number; test: number };
}

async function evaluationSets(dataset: DatasetConfig, seed: number, o: FeatureInputOptions): Promise<Omit<EvaluationSets, 'name' | 'numClasses' | 'size'>> {
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

/** The run's data set (or --data): single-label, at the run's working size. */
async function runSets(loaded: LoadedBackbone, o: FeatureInputOptions): Promise<EvaluationSets> {
  const { config } = loaded;
  const dataset: DatasetConfig = { ...config.dataset, dir: o.data ?? config.dataset.dir };
  for (const prefix of ['folder:', 'objects:']) if (o.data && dataset.name.startsWith(prefix)) dataset.name = `${prefix}${o.data}`;
  const sets = await evaluationSets(dataset, config.seed, o);
  const numClasses = Math.max(dataFacts(sets.train).numClasses, dataFacts(sets.test).numClasses);
  if (numClasses < 2 || sets.train.labels.some((l) => l < 0)) {
    throw new Error(`${dataset.name}: evaluation needs labelled images (one subfolder per class)`);
  }
  const size = config.dataset.size;
  return { ...sets, name: dataset.name, numClasses, size: { train: size, test: size } };
}

/**
 * A scene folder's train and val scenes (the first --limit / --test-limit),
 * with a multi-hot row per image over the COCO categories (index k is the
 * k-th category by id).
 *
 * Size: each scene is fed at its own side (fit 'resize' at scale 1 is a
 * plain copy), not resized to the run's working size. The stages are
 * globally average-pooled, so the feature has the same dimension either way,
 * and at their own size the objects (0.2-0.6 of a 128-px scene: about 26-77
 * px) stay near the scale the object-centric pretraining showed them at
 * (objects filling most of a 64-px image); halving the scene to 64 px would
 * shrink them to 13-38 px and blur their detail. The detection and
 * segmentation transfer read the scenes at their own size too. The cost is
 * (side / run size)^2 times the backbone's work per image.
 */
async function sceneSets(dir: string, loaded: LoadedBackbone, o: FeatureInputOptions): Promise<EvaluationSets> {
  if (o.data) throw new Error(`--scenes ${dir} and --data ${o.data} both name the evaluation data: give one`);
  const channels = loaded.data.channels;
  if (channels !== 3) {
    throw new Error(
      `--scenes ${dir}: the checkpoint's backbone takes ${channels} channel${channels === 1 ? '' : 's'}; scenes are RGB: use a checkpoint pretrained on colour images (e.g. the objects set)`,
    );
  }
  for (const split of ['train', 'val']) {
    const file = join(dir, 'annotations', `instances_${split}.json`);
    if (!existsSync(file)) throw new Error(`--scenes ${dir} has no annotations (${file} is missing); make one with \`selfsup data scenes --out DIR\``);
  }
  const train = await loadSceneSplit(dir, 'train', { limit: o.limit });
  const test = await loadSceneSplit(dir, 'val', { limit: o.testLimit });
  const categories = [...train.coco.categories].sort((a, b) => a.id - b.id);
  const ids = (s: SceneSplit) => [...s.coco.categories].map((c) => c.id).sort((a, b) => a - b).join(',');
  if (ids(test) !== ids(train)) throw new Error(`--scenes ${dir}: the train and val annotations list different categories (ids ${ids(train)} and ${ids(test)})`);
  const numClasses = categories.length;
  if (numClasses < 2) throw new Error(`--scenes ${dir}: ${numClasses} categor${numClasses === 1 ? 'y' : 'ies'}; classification needs at least 2`);
  const index = new Map(categories.map((c, k) => [c.id, k]));
  const multiHot = (s: SceneSplit, split: string): Uint8Array => {
    const rows = new Uint8Array(s.annotations.length * numClasses);
    s.annotations.forEach((anns, i) => {
      for (const a of anns) {
        const k = index.get(a.category_id);
        if (k === undefined) throw new Error(`--scenes ${dir}: ${split} annotation ${a.id} has category ${a.category_id}, which the categories do not list`);
        rows[i * numClasses + k] = 1;
      }
    });
    return rows;
  };
  const side = (s: SceneSplit) => Math.max(s.images.width, s.images.height);
  return {
    train: train.images,
    test: test.images,
    tag: `scenes:${dir}`,
    name: `scenes:${dir}`,
    numClasses,
    classNames: categories.map((c) => c.name),
    multiLabels: { train: multiHot(train, 'train'), test: multiHot(test, 'val') },
    size: { train: side(train), test: side(test) },
  };
}

/** Extracts (or reads cached) train and test features of `loaded`'s backbone. */
export async function prepareFeatures(loaded: LoadedBackbone, o: FeatureInputOptions, log: (line: string) => void): Promise<FeatureSplits> {
  const { config, checkpoint } = loaded;
  const sets = o.scenes ? await sceneSets(o.scenes, loaded, o) : await runSets(loaded, o);
  const checksum = checkpoint.sha256 ?? `random-init:${config.seed}:${checkpoint.arch}`;
  const cacheDir = o.cache ? join(dirname(checkpoint.path), 'features') : null;
  const stats = defaultNormalization(loaded.data.channels);
  const features = async (split: 'train' | 'test', set: ImageSet): Promise<SplitFeatures & { dim: number }> => {
    const data = imageSetDigest(set);
    const size = sets.size[split];
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
    const multiLabels = sets.multiLabels?.[split];
    return { ...f, labels: set.labels, ...(multiLabels ? { multiLabels } : {}) };
  };
  const train = await features('train', sets.train);
  const test = await features('test', sets.test);
  return {
    stage: o.stage,
    dim: train.dim,
    numClasses: sets.numClasses,
    ...(sets.classNames ? { classNames: sets.classNames } : {}),
    dataset: sets.name,
    train,
    test,
  };
}
