// `selfsup eval knn|linear`: rebuilds the method a checkpoint was trained
// with, loads its weights, extracts frozen backbone features of the training
// split (the kNN memory / probe training set) and of the test split, and runs
// the protocol. Features are cached under the run folder, keyed by the
// checkpoint's checksum, so `eval linear` after `eval knn` skips the backbone.
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Option, type Command } from 'commander';
import { useBackend, type BackendChoice } from '../backend/select.js';
import type { ImageSet } from '../data/image_set.js';
import { Rng } from '../core/random.js';
import { extractFeatures, FEATURE_STAGES, type FeatureStage, type Features } from '../eval/features.js';
import { cachedFeatures, fileChecksum } from '../eval/feature_cache.js';
import { knnEvaluate, type KnnReport } from '../eval/knn.js';
import { trainLinearProbe, type LinearProbeResult } from '../eval/linear_probe.js';
import { createMethod } from '../methods/index.js';
import { LAST_CHECKPOINT, readCheckpoint, restoreBackbone } from '../io/checkpoint.js';
import { dataInfo, loadTestSet, loadTrainingSet, recipeOptions } from '../train/data.js';
import { nonNegativeInt, nonNegativeNumber, positiveInt, positiveNumber } from './options.js';

export interface EvalFlags {
  checkpoint: string;
  stage: FeatureStage;
  limit?: number;
  testLimit?: number;
  json?: boolean;
  backend: BackendChoice;
  data?: string;
  batchSize: number;
  cache: boolean;
  /** Image folders only: the fraction held out as the test split. */
  testFraction: number;
  /** Evaluate the checkpoint's architecture at its random initialisation (the baseline every method must beat). */
  randomInit?: boolean;
}

export interface KnnFlags extends EvalFlags {
  k: number;
  temperature: number;
  majorityK: number;
}

export interface LinearFlags extends EvalFlags {
  epochs: number;
  lr: number;
  weightDecay: number;
  seed: number;
}

/** Feature extraction's settings: the CLI's defaults, and what demo and bench use. */
export const FEATURE_DEFAULTS = { stage: 'res5', batchSize: 256, cache: true, testFraction: 0.2 } as const;
/** The protocols' standard settings (Wu et al. 2018 kNN; a 30-epoch probe): the CLI's defaults, and what demo and bench use. */
export const KNN_DEFAULTS = { k: 200, temperature: 0.1, majorityK: 20 } as const;
export const LINEAR_DEFAULTS = { epochs: 30, lr: 0.1, weightDecay: 0, seed: 0 } as const;

export interface EvalSetup {
  checkpoint: string;
  method: string;
  arch: string;
  backend: string;
  stage: FeatureStage;
  dim: number;
  numClasses: number;
  train: Features & { labels: Int32Array; cached: boolean };
  test: Features & { labels: Int32Array; cached: boolean };
}

/** A run folder means its last checkpoint. */
export function resolveCheckpointPath(path: string): string {
  if (!existsSync(path)) throw new Error(`--checkpoint: ${path} does not exist`);
  if (!statSync(path).isDirectory()) return path;
  const last = join(path, LAST_CHECKPOINT);
  if (!existsSync(last)) throw new Error(`--checkpoint: the folder ${path} holds no ${LAST_CHECKPOINT}`);
  return last;
}

/** The images at `indices`, copied. */
function subset(set: ImageSet, indices: Int32Array): ImageSet {
  const bytes = set.height * set.width * set.channels;
  const images = new Uint8Array(indices.length * bytes);
  const labels = new Int32Array(indices.length);
  indices.forEach((j, i) => {
    images.set(set.images.subarray(j * bytes, (j + 1) * bytes), i * bytes);
    labels[i] = set.labels[j]!;
  });
  return { ...set, images, labels, count: indices.length };
}

const HOLDOUT_STREAM = 0x65766c; // 'evl'

/**
 * Training and test images. Fashion-MNIST has both splits; an image folder
 * is split by a seeded permutation (the run's seed), `testFraction` held out.
 */
async function evaluationSets(
  dataset: { name: string; dir?: string; size: number },
  seed: number,
  flags: EvalFlags,
): Promise<{ train: ImageSet; test: ImageSet; tag: string }> {
  if (dataset.name === 'fashion-mnist') {
    const train = await loadTrainingSet({ ...dataset, limit: flags.limit });
    const test = loadTestSet({ ...dataset, limit: undefined }, flags.testLimit ?? Number.MAX_SAFE_INTEGER)!;
    return { train, test, tag: 'fashion-mnist' };
  }
  const all = await loadTrainingSet({ ...dataset, limit: undefined });
  if (!(flags.testFraction > 0 && flags.testFraction < 1)) throw new Error(`--test-fraction must be between 0 and 1, got ${flags.testFraction}`);
  const perm = Rng.seeded(seed).split(HOLDOUT_STREAM).permutation(all.count);
  const held = Math.max(1, Math.round(all.count * flags.testFraction));
  const test = perm.subarray(0, Math.min(held, flags.testLimit ?? held));
  const train = perm.subarray(held, held + (flags.limit ?? all.count));
  return { train: subset(all, train), test: subset(all, test), tag: `${dataset.name}:seed${seed}:holdout${flags.testFraction}` };
}

/** Loads the checkpoint, rebuilds its backbone and extracts (or reads cached) train and test features. */
export async function prepareEvaluation(flags: EvalFlags, say: (line: string) => void): Promise<EvalSetup> {
  if (!FEATURE_STAGES.includes(flags.stage)) throw new Error(`--stage must be one of ${FEATURE_STAGES.join(', ')}, got '${flags.stage}'`);
  const path = resolveCheckpointPath(flags.checkpoint);
  const backend = await useBackend(flags.backend);
  const checkpoint = readCheckpoint(path);
  const { config } = checkpoint.state;
  const { channels, numClasses } = checkpoint.state.data;
  const recipe = recipeOptions(config, channels);
  const method = createMethod(config, { channels, numClasses, recipe });
  try {
    if (!flags.randomInit) restoreBackbone(checkpoint, method);
    const dataset = { ...config.dataset, dir: flags.data ?? config.dataset.dir };
    if (flags.data && dataset.name.startsWith('folder:')) dataset.name = `folder:${flags.data}`;
    const sets = await evaluationSets(dataset, config.seed, flags);
    const classes = Math.max(dataInfo(sets.train).numClasses, dataInfo(sets.test).numClasses);
    if (classes < 2 || sets.train.labels.some((l) => l < 0)) {
      throw new Error(`${dataset.name}: evaluation needs labelled images (one subfolder per class)`);
    }
    const checksum = flags.randomInit ? `random-init:${config.seed}:${checkpoint.arch}` : fileChecksum(path);
    const cacheDir = flags.cache ? join(dirname(path), 'features') : null;
    const size = config.dataset.size;
    const stats = recipe.normalize ?? null;
    const features = async (split: 'train' | 'test', set: ImageSet) => {
      const key = { checkpoint: checksum, stage: flags.stage, split: `${sets.tag}:${split}`, count: set.count, size, fit: 'resize', mean: stats?.mean ?? null, std: stats?.std ?? null };
      const t0 = performance.now();
      const f = await cachedFeatures(cacheDir, key, () =>
        extractFeatures(method.backbone, set, {
          size,
          batchSize: flags.batchSize,
          stage: flags.stage,
          ...(stats ?? {}),
          onProgress: process.stderr.isTTY ? (done, total) => process.stderr.write(`\r${split} features: ${done}/${total}`) : undefined,
        }),
      );
      if (process.stderr.isTTY && !f.cached) process.stderr.write('\n');
      const s = ((performance.now() - t0) / 1000).toFixed(1);
      say(`${split}: ${set.count} images, ${flags.stage} features ${f.cached ? 'from the cache' : `extracted in ${s} s`}`);
      return { ...f, labels: set.labels };
    };
    const train = await features('train', sets.train);
    const test = await features('test', sets.test);
    return { checkpoint: path, method: checkpoint.method, arch: checkpoint.arch, backend, stage: flags.stage, dim: train.dim, numClasses: classes, train, test };
  } finally {
    method.dispose();
  }
}

export async function runKnn(flags: KnnFlags, say: (line: string) => void): Promise<{ setup: EvalSetup; report: KnnReport }> {
  const setup = await prepareEvaluation(flags, say);
  const report = knnEvaluate(setup.train.features, setup.train.labels, setup.test.features, setup.test.labels, setup.dim, {
    numClasses: setup.numClasses,
    weightedK: flags.k,
    temperature: flags.temperature,
    majorityK: flags.majorityK,
  });
  return { setup, report };
}

export async function runLinear(flags: LinearFlags, say: (line: string) => void): Promise<{ setup: EvalSetup; result: LinearProbeResult }> {
  const setup = await prepareEvaluation(flags, say);
  const result = trainLinearProbe(setup.train, setup.test, setup.dim, {
    numClasses: setup.numClasses,
    epochs: flags.epochs,
    lr: flags.lr,
    weightDecay: flags.weightDecay,
    seed: flags.seed,
    onEpoch: (epoch, loss) => {
      if ((epoch + 1) % 10 === 0 || epoch + 1 === flags.epochs) say(`linear probe epoch ${epoch + 1}/${flags.epochs}: loss ${loss.toFixed(4)}`);
    },
  });
  return { setup, result };
}

function summary(setup: EvalSetup) {
  return {
    checkpoint: setup.checkpoint,
    method: setup.method,
    arch: setup.arch,
    backend: setup.backend,
    stage: setup.stage,
    dim: setup.dim,
    trainImages: setup.train.labels.length,
    testImages: setup.test.labels.length,
  };
}

function table(title: string, rows: Array<[string, number, number]>): string {
  const width = Math.max(...rows.map(([name]) => name.length), 8);
  const lines = rows.map(([name, t1, t5]) => `${name.padEnd(width)}  ${t1.toFixed(2).padStart(6)}  ${t5.toFixed(2).padStart(6)}`);
  return `${title}\n${'protocol'.padEnd(width)}   top-1   top-5\n${lines.join('\n')}\n`;
}

function commonOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--checkpoint <path>', `a checkpoint, or a run folder (its ${LAST_CHECKPOINT})`)
    .addOption(new Option('--stage <name>', 'backbone stage whose pooled output is the feature').choices([...FEATURE_STAGES]).default(FEATURE_DEFAULTS.stage))
    .option('--limit <n>', 'use only the first N training images (default: all)', positiveInt)
    .option('--test-limit <n>', 'use only the first N test images (default: all)', positiveInt)
    .option('--data <dir>', "Fashion-MNIST's folder, or the image folder, if not where the run read it")
    .option('--test-fraction <f>', 'image folders: fraction held out as the test split', nonNegativeNumber, FEATURE_DEFAULTS.testFraction)
    .option('--batch-size <n>', 'images per forward pass when extracting features', positiveInt, FEATURE_DEFAULTS.batchSize)
    .option('--no-cache', 'neither read nor write cached features (cache: <run>/features/)')
    .option('--random-init', "evaluate the run's architecture at its random initialisation instead (the baseline to beat)")
    .addOption(new Option('--backend <name>', 'tfjs backend').choices(['auto', 'native', 'wasm', 'webgpu', 'cpu']).default('auto'))
    .option('--json', 'print the result as one JSON object on stdout');
}

/** Progress goes to stderr, so stdout holds only the table or the JSON. */
const say = (line: string): void => void process.stderr.write(`${line}\n`);

export function registerEvalCommand(program: Command): void {
  const evaluation = program
    .command('eval')
    .description('Evaluate a checkpoint\'s frozen backbone: kNN or linear probe on Fashion-MNIST (or an image folder)')
    .addHelpText(
      'after',
      `
Examples:
  $ selfsup eval knn --checkpoint runs/sup/last.safetensors
  $ selfsup eval linear --checkpoint runs/sup --stage res4 --json
  $ selfsup eval knn --checkpoint runs/sup --limit 20000 --test-limit 2000`,
    );

  commonOptions(
    evaluation
      .command('knn')
      .description('k-nearest neighbours on L2-normalised features: k=200 weighted by exp(cos/T), and k=20 majority; top-1 and top-5'),
  )
    .option('--k <n>', 'neighbours of the weighted protocol', positiveInt, KNN_DEFAULTS.k)
    .option('--temperature <t>', 'temperature of the weighted votes', positiveNumber, KNN_DEFAULTS.temperature)
    .option('--majority-k <n>', 'neighbours of the majority protocol', positiveInt, KNN_DEFAULTS.majorityK)
    .addHelpText('after', '\nThe memory is the training split (first --limit images), the queries the test split.')
    .action(async (opts: KnnFlags) => {
      const t0 = performance.now();
      const { setup, report } = await runKnn(opts, say);
      const seconds = (performance.now() - t0) / 1000;
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({ protocol: 'knn', ...summary(setup), ...report, seconds })}\n`);
        return;
      }
      const { weighted: w, majority: m } = report;
      process.stdout.write(
        table(`kNN on ${setup.stage} (${setup.dim}-d), ${setup.train.labels.length} train -> ${setup.test.labels.length} test images`, [
          [`k=${w.k} weighted, T=${w.temperature}`, w.top1, w.top5],
          [`k=${m.k} majority`, m.top1, m.top5],
        ]),
      );
    });

  commonOptions(
    evaluation
      .command('linear')
      .description('linear classifier on frozen, standardised features (SGD + momentum, cosine rate); top-1 and top-5 on the test split'),
  )
    .option('--epochs <n>', 'epochs over the cached training features', positiveInt, LINEAR_DEFAULTS.epochs)
    .option('--lr <x>', 'peak learning rate', positiveNumber, LINEAR_DEFAULTS.lr)
    .option('--weight-decay <x>', 'L2 weight decay', nonNegativeNumber, LINEAR_DEFAULTS.weightDecay)
    .option('--seed <n>', 'seed of the mini-batch order', nonNegativeInt, LINEAR_DEFAULTS.seed)
    .action(async (opts: LinearFlags) => {
    const t0 = performance.now();
    const { setup, result } = await runLinear(opts, say);
    const seconds = (performance.now() - t0) / 1000;
    if (opts.json) {
      const { test, train, losses } = result;
      process.stdout.write(`${JSON.stringify({ protocol: 'linear', ...summary(setup), epochs: opts.epochs, top1: test.top1, top5: test.top5, train, finalLoss: losses.at(-1), seconds })}\n`);
      return;
    }
    process.stdout.write(
      table(`linear probe on ${setup.stage} (${setup.dim}-d), ${opts.epochs} epochs, ${setup.train.labels.length} train -> ${setup.test.labels.length} test images`, [
        ['linear (test)', result.test.top1, result.test.top5],
        ['linear (train)', result.train.top1, result.train.top5],
      ]),
    );
  });
}
