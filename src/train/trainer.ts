// The training loop. It knows nothing about any particular method: it builds
// the data, the method (by name, from the registry), the optimizer and the
// schedule a config describes, lets a method that asks for it see the
// training set once (method.warmUp, before step 0), then for every batch
//   tensors -> variableGrads(method.loss) -> [clip] -> optimizer step
//   -> method.afterStep -> dispose,
// writing metrics, checkpoints and progress around it; an epoch that ends
// with an online kNN or a checkpoint first re-estimates the backbone's BN
// statistics on whole images (config.preciseBn). A resumed run takes
// the very same steps an uninterrupted one would: every input of a step is
// either in the checkpoint or a pure function of (seed, epoch, batch, step).
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import * as tf from '../core/tf.js';
import type { Scalar, Variable } from '@tensorflow/tfjs-core';
import { useBackend } from '../backend/select.js';
import { writeFileAtomic } from '../core/atomic_file.js';
import { Loader, type Batch } from '../data/index.js';
import { estimateBatchNormStatistics } from '../eval/features.js';
import { createMethod } from '../methods/index.js';
import type { Method, StepContext } from '../methods/method.js';
import {
  LAST_CHECKPOINT,
  assertCompatible,
  epochCheckpointName,
  readCheckpoint,
  restoreMethod,
  restoreOptimizer,
  saveCheckpoint,
  type Checkpoint,
  type CheckpointState,
  type EpochAccumulator,
  type TrainPosition,
} from '../io/checkpoint.js';
import type { RunConfig } from './config.js';
import { dataInfo, disposeTensorBatch, loadTestSet, loadTrainingSet, recipeOptions, toTensorBatch } from './data.js';
import { MetricsLog, createProgress, type EpochMetrics, type StepMetrics } from './metrics.js';
import { OnlineKnn } from './online_knn.js';
import { clipGradNorm, createOptimizer, namedParameters, type Optimizer } from './optimizers.js';
import { createLrSchedule } from './schedules.js';

export interface TrainOptions {
  /** Continue `<out>/last.safetensors` exactly where it stopped. */
  resume?: boolean;
  /** Where messages and (off a terminal) progress lines go; default stderr. */
  log?: (line: string) => void;
  /** Aborting it stops after the current step, with a checkpoint, as Ctrl-C does. */
  signal?: AbortSignal;
  /** No progress bar or progress lines (messages still go to `log`). */
  quiet?: boolean;
  /** Called after every step with what metrics.jsonl records (for tests and embedding). */
  onStep?: (step: StepMetrics) => void;
}

export interface TrainResult {
  outDir: string;
  /** Optimizer steps done, over every session of the run. */
  steps: number;
  /** Epochs completed. */
  epochs: number;
  lastLoss: number;
  /** The checkpoint holding the final state. */
  checkpoint: string;
  metrics: EpochMetrics[];
  /** Stopped by a signal or `opts.signal` before the last epoch ended. */
  stoppedEarly: boolean;
}

/** The loss became NaN or infinite; no update was applied and no checkpoint overwritten. */
export class NonFiniteLossError extends Error {
  constructor(
    message: string,
    readonly step: number,
    readonly lastCheckpoint: string | null,
  ) {
    super(message);
    this.name = 'NonFiniteLossError';
  }
}

/** Keys a resumed run takes from the new config; every other key comes from the checkpoint. */
const RUNTIME_KEYS = new Set<keyof RunConfig>(['out', 'epochs', 'workers', 'backend', 'checkpoint', 'onlineKnn']);

function resumeConfig(given: RunConfig, saved: RunConfig, log: (line: string) => void): RunConfig {
  const merged: Record<string, unknown> = { ...saved };
  for (const key of Object.keys(given) as Array<keyof RunConfig>) {
    if (RUNTIME_KEYS.has(key)) merged[key] = given[key];
    else if (JSON.stringify(given[key]) !== JSON.stringify(saved[key])) {
      log(`resume: keeping the checkpoint's ${key} ${JSON.stringify(saved[key])} (the given config says ${JSON.stringify(given[key])})`);
    }
  }
  return merged as RunConfig;
}

function emptyAccumulator(): EpochAccumulator {
  return { sums: {}, batches: 0, images: 0, seconds: 0 };
}

interface StepOutcome {
  loss: number;
  terms: Record<string, number>;
}

/**
 * One optimizer step on `batch`. Every tensor it makes is disposed before it
 * returns, except the new parameter and optimizer values. A non-finite loss
 * returns before any update.
 */
function trainStep(
  method: Method,
  trainable: Variable[],
  optimizer: Optimizer,
  batch: Batch,
  ctx: StepContext,
  lr: number,
  gradClip: number | undefined,
): StepOutcome {
  const tensors = toTensorBatch(batch);
  let terms: Record<string, Scalar> = {};
  try {
    const { value, grads } = tf.variableGrads(() => {
      const out = method.loss(tensors, ctx);
      // Terms are read after the tape closes; keep them past its tidy.
      terms = out.terms;
      for (const t of Object.values(terms)) tf.keep(t);
      return out.loss;
    }, trainable);
    let outcome: StepOutcome;
    try {
      outcome = { loss: value.dataSync()[0]!, terms: {} };
      for (const [name, t] of Object.entries(terms)) outcome.terms[name] = t.dataSync()[0]!;
      if (!Number.isFinite(outcome.loss)) return outcome;
      if (gradClip !== undefined) outcome.terms.gradNorm = clipGradNorm(grads, gradClip);
      optimizer.step(grads, lr);
    } finally {
      value.dispose();
      tf.dispose(Object.values(grads));
    }
    // Methods keep their state in buffers (Variable.assign), so a tidy loses nothing.
    tf.tidy(() => method.afterStep(ctx));
    return outcome;
  } finally {
    tf.dispose(Object.values(terms));
    disposeTensorBatch(tensors);
  }
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** The warm-up pass draws its own order and augmentations, not epoch 0's. */
const WARM_UP_EPOCH = -1;

/**
 * Runs `method.warmUp` over one pass of the loader; false if a stop was
 * requested first. The run's checkpoint then sits at step 0, and resuming it
 * warms up again from the start.
 */
async function warmUp(method: Method, loader: Loader, log: (line: string) => void, stopped: () => boolean): Promise<boolean> {
  const started = performance.now();
  log(`warm-up: ${method.name} embeds the training set once before the first step (${loader.batchesPerEpoch} batches)`);
  for await (const batch of loader.epoch(WARM_UP_EPOCH)) {
    const tensors = toTensorBatch(batch);
    try {
      tf.tidy(() => method.warmUp!(tensors));
    } finally {
      disposeTensorBatch(tensors);
    }
    await yieldToEventLoop();
    if (stopped()) return false;
  }
  log(`warm-up: done in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  return true;
}

/** Trains `config` and returns where its results are. */
export async function train(config: RunConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const log = opts.log ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const outDir = resolve(config.out);
  const lastPath = join(outDir, LAST_CHECKPOINT);

  let resumed: Checkpoint | null = null;
  if (opts.resume) {
    if (!existsSync(lastPath)) throw new Error(`resume: ${lastPath} not found; there is no run to resume in ${outDir}`);
    resumed = readCheckpoint(lastPath);
    assertCompatible(resumed, config);
    config = resumeConfig(config, resumed.state.config, log);
  } else if (existsSync(lastPath)) {
    throw new Error(`${outDir} already holds a run (${LAST_CHECKPOINT}); resume it, or choose another output folder`);
  }
  mkdirSync(outDir, { recursive: true });

  const backend = await useBackend(config.backend);
  const trainSet = await loadTrainingSet(config.dataset);
  const info = dataInfo(trainSet);
  const method = createMethod(config, { ...info, recipe: recipeOptions(config, info.channels) });
  const loader = new Loader(trainSet, method.pipeline(), {
    batchSize: config.batchSize,
    seed: config.seed,
    workers: config.workers,
    shuffle: true,
    // Equal batches keep BN statistics comparable; a set smaller than a batch is one batch.
    dropLast: trainSet.count >= config.batchSize,
  });
  const stepsPerEpoch = loader.batchesPerEpoch;
  const totalSteps = stepsPerEpoch * config.epochs;
  const params = namedParameters(method);
  const trainable = params.map((p) => p.variable);
  const optimizer = createOptimizer(config.optimizer, params);
  const lrAt = createLrSchedule(config, stepsPerEpoch);
  const data: CheckpointState['data'] = {
    ...info,
    seed: config.seed,
    datasetCount: trainSet.count,
    batchSize: config.batchSize,
    stepsPerEpoch,
  };

  let position: TrainPosition = { step: 0, epoch: 0, batch: 0 };
  let metrics: EpochMetrics[] = [];
  let accumulator = emptyAccumulator();
  let elapsedBefore = 0;
  let lastSaved: { path: string; step: number } | null = null;
  const metricsLog = new MetricsLog(join(outDir, 'metrics.jsonl'));
  const cleanups: Array<() => unknown> = [() => loader.close(), () => method.dispose(), () => optimizer.dispose()];

  let stopRequested: string | null = null;
  const requestStop = (why: string) => {
    if (stopRequested) return;
    stopRequested = why;
    log(`${why}: stopping after this step and writing a checkpoint${why.startsWith('SIG') ? ' (again to exit at once)' : ''}`);
  };
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopRequested) process.exit(sig === 'SIGINT' ? 130 : 143);
    requestStop(sig);
  };
  const onAbort = () => requestStop('aborted');
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  opts.signal?.addEventListener('abort', onAbort);
  cleanups.push(() => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    opts.signal?.removeEventListener('abort', onAbort);
  });
  if (opts.signal?.aborted) onAbort();

  let progress = createProgress({ totalSteps, startStep: 0, epochs: config.epochs, quiet: true, log });
  cleanups.push(() => progress.stop());
  try {
    if (resumed) {
      const saved = resumed.state;
      if (saved.data.datasetCount !== trainSet.count || saved.data.batchSize !== config.batchSize) {
        throw new Error(
          `checkpoint ${resumed.path}: trained on ${saved.data.datasetCount} images in batches of ${saved.data.batchSize}, ` +
            `this run has ${trainSet.count} in batches of ${config.batchSize}; the data order would differ`,
        );
      }
      restoreMethod(resumed, method);
      restoreOptimizer(resumed, optimizer);
      position = saved.position;
      metrics = saved.metrics;
      accumulator = saved.epoch;
      elapsedBefore = saved.elapsed;
      lastSaved = { path: lastPath, step: position.step };
      metricsLog.truncateTo(position.step);
      log(`resume: ${lastPath} at step ${position.step} (epoch ${position.epoch + 1}, batch ${position.batch})`);
    } else {
      writeFileAtomic(metricsLog.path, '');
    }
    writeFileAtomic(join(outDir, 'config.yaml'), toYaml(config));

    const test = config.onlineKnn.every > 0 ? loadTestSet(config.dataset, config.onlineKnn.testSamples) : null;
    const knn = OnlineKnn.fromConfig(config, trainSet, test, info.numClasses);
    if (typeof knn === 'string' && config.onlineKnn.every > 0) log(knn);

    log(
      `train: ${config.method} on ${config.dataset.name} (${trainSet.count} images), ${config.model.arch} width ${config.model.width}, ` +
        `${config.epochs} epochs x ${stepsPerEpoch} steps of ${config.batchSize}, ${config.optimizer.name}, backend ${backend}, out ${outDir}`,
    );
    progress = createProgress({ totalSteps, startStep: position.step, epochs: config.epochs, quiet: opts.quiet ?? false, log });

    const started = performance.now();
    const elapsed = () => elapsedBefore + (performance.now() - started) / 1000;
    const state = (): CheckpointState => ({ config, position, data, metrics, epoch: accumulator, elapsed: elapsed() });
    const save = (extra: string[] = []) => {
      saveCheckpoint([lastPath, ...extra], method, optimizer, state());
      lastSaved = { path: lastPath, step: position.step };
    };

    let lastLoss = metrics.at(-1)?.loss ?? Number.NaN;
    let stoppedEarly = false;
    method.train();
    if (method.warmUp && position.step === 0) stoppedEarly = !(await warmUp(method, loader, log, () => stopRequested !== null));
    let tick = performance.now();
    outer: for (let epoch = stoppedEarly ? config.epochs : position.epoch; epoch < config.epochs; epoch++) {
      const from = epoch === position.epoch ? position.batch : 0;
      for await (const batch of loader.epoch(epoch, from)) {
        if (stopRequested) {
          save();
          stoppedEarly = true;
          break outer;
        }
        const step = position.step;
        const ctx: StepContext = { step, epoch, totalSteps };
        const lr = lrAt(step);
        const { loss, terms } = trainStep(method, trainable, optimizer, batch, ctx, lr, config.optimizer.gradClip);
        if (!Number.isFinite(loss)) {
          const kept = lastSaved ? `the last good checkpoint, ${lastSaved.path} (step ${lastSaved.step}), is kept` : 'no checkpoint had been written yet';
          const message = `loss is ${loss} at step ${step} (epoch ${epoch + 1}, batch ${batch.index}); training stopped, no update applied; ${kept}`;
          log(message);
          throw new NonFiniteLossError(message, step, lastSaved?.path ?? null);
        }
        const now = performance.now();
        const seconds = (now - tick) / 1000;
        tick = now;
        const images = batch.indices.length;
        lastLoss = loss;
        position = { step: step + 1, epoch, batch: batch.index + 1 };
        accumulator.batches++;
        accumulator.images += images;
        accumulator.seconds += seconds;
        for (const [name, v] of Object.entries({ loss, ...terms })) accumulator.sums[name] = (accumulator.sums[name] ?? 0) + v;
        const line: StepMetrics = { kind: 'step', step, epoch, batch: batch.index, loss, terms, lr, imagesPerSec: images / seconds, elapsed: elapsed() };
        metricsLog.append(line);
        progress.update({ step, epoch, loss, lr, imagesPerSec: line.imagesPerSec });
        opts.onStep?.(line);

        const endOfEpoch = batch.index + 1 === stepsPerEpoch;
        let epochDue = false;
        if (endOfEpoch) {
          const n = accumulator.batches;
          const means = Object.fromEntries(Object.entries(accumulator.sums).map(([k, v]) => [k, v / n]));
          const { loss: meanLoss, ...meanTerms } = means;
          const summary: EpochMetrics = {
            epoch,
            step: position.step,
            loss: meanLoss!,
            terms: meanTerms,
            lr,
            imagesPerSec: accumulator.images / accumulator.seconds,
            seconds: accumulator.seconds,
          };
          const lastEpoch = epoch + 1 === config.epochs;
          const dueKnn = knn instanceof OnlineKnn && ((epoch + 1) % config.onlineKnn.every === 0 || lastEpoch) ? knn : null;
          epochDue = (epoch + 1) % config.checkpoint.everyEpochs === 0;
          if ((dueKnn || epochDue || lastEpoch) && config.preciseBn.images > 0) {
            estimateBatchNormStatistics(method.backbone, trainSet, { size: config.dataset.size, batchSize: config.batchSize, limit: config.preciseBn.images });
          }
          if (dueKnn) summary.knn = await dueKnn.evaluate(method.backbone);
          metrics = [...metrics, summary];
          metricsLog.append({ kind: 'epoch', ...summary, elapsed: elapsed() });
          if (!opts.quiet) {
            const knnText = summary.knn ? `, kNN top-1 ${summary.knn.top1.toFixed(1)}%` : '';
            log(`epoch ${epoch + 1}/${config.epochs}: loss ${meanLoss!.toFixed(4)}, ${summary.imagesPerSec.toFixed(0)} img/s${knnText}`);
          }
          position = { step: position.step, epoch: epoch + 1, batch: 0 };
          accumulator = emptyAccumulator();
          tick = performance.now();
        }
        // Signal handlers and abort listeners run here, between steps.
        await yieldToEventLoop();
        const stepDue = config.checkpoint.everySteps !== undefined && position.step % config.checkpoint.everySteps === 0;
        const finished = position.step === totalSteps;
        if (finished || stepDue || epochDue || stopRequested) {
          save(epochDue && config.checkpoint.keepEpochs ? [join(outDir, epochCheckpointName(epoch + 1))] : []);
        }
        if (stopRequested && !finished) {
          stoppedEarly = true;
          break outer;
        }
      }
    }
    if (!lastSaved) save(); // resumed a finished run, or an empty one
    return {
      outDir,
      steps: position.step,
      epochs: position.epoch,
      lastLoss,
      checkpoint: lastPath,
      metrics,
      stoppedEarly,
    };
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup();
  }
}
