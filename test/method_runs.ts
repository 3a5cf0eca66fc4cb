// Shared by the method tests: a tiny training configuration and a run that
// reports its per-epoch losses.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTestSet, loadTrainingSet, type DataFacts } from '../src/data/dataset_config.js';
import { CheckpointConfig, saveCheckpoint, type CheckpointState } from '../src/io/checkpoint.js';
import type { Method } from '../src/methods/index.js';
import { parseRunConfig, type RunConfig } from '../src/train/config.js';
import type { EpochMetrics } from '../src/train/metrics.js';
import { buildMethod } from '../src/train/setup.js';
import { OnlineKnn } from '../src/train/online_knn.js';
import { train, type TrainResult } from '../src/train/trainer.js';

/**
 * The kNN top-1 (%) a short run's features must stay above when the run is not
 * expected to beat the untrained network (pretext tasks, SimSiam): four times
 * chance (10 classes), where collapsed features fall to about chance.
 */
export const USABLE_KNN = 40;

/** ResNet-18 width 4, 128 Fashion-MNIST images, batches of 32, 3 epochs: 12 steps on native. */
export function tinyConfig(method: string, over: Record<string, unknown> = {}, lr = 0.1): RunConfig {
  return parseRunConfig({
    method,
    out: join(mkdtempSync(join(tmpdir(), `selfsup-${method}-`)), 'run'),
    backend: 'native',
    workers: 0,
    epochs: 3,
    batchSize: 32,
    dataset: { limit: 128 },
    model: { width: 4 },
    optimizer: { lr },
    onlineKnn: { every: 0 },
    ...over,
  });
}

/** The method `config` names, built for Fashion-MNIST (grey, 10 classes) and the config's image count, as a run would build it. */
export function fashionMethod(config: RunConfig, facts: Partial<DataFacts & { datasetSize: number }> = {}): Method {
  return buildMethod(config, { channels: 1, numClasses: 10, datasetSize: config.dataset.limit ?? 60_000, ...facts });
}

/**
 * Saves `method` as a one-step checkpoint of a width-4 CIFAR-stem run of
 * `name` whose config recorded `methodOptions` (as a checkpoint from before an
 * option existed recorded them), at `path`; returns `path`.
 */
export function saveMethodCheckpoint(method: Method, name: string, methodOptions: Record<string, unknown>, path: string): string {
  const state: CheckpointState = {
    config: CheckpointConfig.parse({ method: name, seed: 0, model: { arch: 'resnet18', width: 4, stem: 'cifar' }, dataset: {}, methodOptions }),
    position: { step: 1, epoch: 1, batch: 0 },
    data: { channels: 1, numClasses: 10, seed: 0, datasetCount: 64, batchSize: 16, stepsPerEpoch: 4 },
    metrics: [],
    epoch: { sums: {}, batches: 0, images: 0, seconds: 0 },
    elapsed: 0,
  };
  saveCheckpoint(path, method, null, state);
  return path;
}

/** Trains `config` and returns the mean loss of each epoch. */
export async function epochLosses(config: RunConfig): Promise<number[]> {
  const started = performance.now();
  const result = await train(config, { quiet: true, log: () => undefined });
  const losses = result.metrics.map((m) => m.loss);
  console.log(`# ${config.method}: ${result.steps} steps in ${((performance.now() - started) / 1000).toFixed(1)} s, epoch losses ${losses.map((l) => l.toFixed(3)).join(' ')}`);
  return losses;
}

/** Trains `config` and returns the result with every step's loss. */
export async function stepLosses(config: RunConfig): Promise<{ result: TrainResult; losses: number[] }> {
  const losses: number[] = [];
  const started = performance.now();
  const result = await train(config, { quiet: true, log: () => undefined, onStep: (s) => losses.push(s.loss) });
  console.log(`# ${config.method}: ${result.steps} steps in ${((performance.now() - started) / 1000).toFixed(1)} s; step losses ${losses.map((l) => l.toFixed(2)).join(' ')}`);
  return { result, losses };
}

/** The online kNN top-1 of `config`'s backbone as initialised (its seed), on the config's kNN subsets of Fashion-MNIST. */
export async function untrainedKnnTop1(config: RunConfig): Promise<number> {
  const knn = OnlineKnn.fromConfig(config, await loadTrainingSet(config.dataset), loadTestSet(config.dataset, 1000), 10);
  if (typeof knn === 'string') throw new Error(knn);
  const untrained = fashionMethod(config);
  const top1 = (await knn.evaluate(untrained.backbone)).top1;
  untrained.dispose();
  return top1;
}

/**
 * A short real pretraining run against its own starting point: ResNet-18
 * width `width` (default 4) on 2,000 Fashion-MNIST images, `epochs` (default
 * 10) of `batchSize` (default 128: 15 steps each), optionally `warmupEpochs` of linear warm-up
 * (else the method's default), and the online kNN (k 20, 1,000 training images
 * as memory, 1,000 test images) of the untrained network and after the last
 * epoch. Only the last epoch is scored and checkpointed: the suite's time
 * goes to steps.
 */
export async function knnAgainstRandomInit(
  method: string,
  lr = 0.06,
  {
    epochs: epochCount = 10,
    width = 4,
    methodOptions = {},
    warmupEpochs,
    batchSize = 128,
  }: { epochs?: number; width?: number; methodOptions?: Record<string, unknown>; warmupEpochs?: number; batchSize?: number } = {},
): Promise<{ random: number; trained: number; losses: number[]; config: RunConfig; metrics: EpochMetrics[] }> {
  const config = tinyConfig(method, {
    epochs: epochCount,
    methodOptions,
    ...(warmupEpochs === undefined ? {} : { schedule: { warmupEpochs } }),
    batchSize,
    dataset: { limit: 2000 },
    model: { width },
    onlineKnn: { every: epochCount, trainSamples: 1000, testSamples: 1000, k: 20 },
    checkpoint: { everyEpochs: epochCount },
  }, lr);
  const random = await untrainedKnnTop1(config);
  const result = await train(config, { quiet: true, log: () => undefined });
  const trained = result.metrics.at(-1)?.knn?.top1;
  if (trained === undefined) throw new Error(`${method}: the last epoch has no online kNN`);
  const losses = result.metrics.map((m) => m.loss);
  console.log(`# ${method}: kNN random init ${random.toFixed(1)}, trained ${trained.toFixed(1)}; losses ${losses.map((l) => l.toFixed(2)).join(' ')}`);
  return { random, trained, losses, config, metrics: result.metrics };
}
