// The training loop. It knows nothing about any particular method and builds
// nothing: `fit` takes a built run (setup.ts) and, for every batch,
//   tensors -> method.beforeStep -> variableGrads(method.loss)
//   -> method.transformGradients -> [clip] -> optimizer step
//   -> method.afterStep -> dispose,
// and tells its callbacks (callbacks.ts) what happened: after each step, at
// each epoch's end, once the step has settled, on a stop and at the end.
// Checkpoints, the metrics log, progress, precise BN, online kNN and Ctrl-C
// are callbacks. A method that asks for it sees the training set once before
// step 0 (method.warmUp); one that clusters (method.recluster) sees its
// features at each epoch's start, and may choose the epoch's order. A resumed run takes the very same steps an
// uninterrupted one would: every input of a step is either in the checkpoint
// or a pure function of (seed, epoch, batch, step).
//
// Data-parallel (run.comm of several ranks): each rank trains on its share of
// every global batch (shard.ts); the step's loss and terms are averaged
// across ranks before anything reads them (so a non-finite loss stops every
// rank at the same step) and the gradients before the method, clipping and
// the optimizer see them, so every rank applies the same update. A stop
// (Ctrl-C, abort) is agreed between ranks once per step: ranks that stopped
// at different steps would leave a collective waiting.
import * as tf from '../core/tf.js';
import { firstNonFiniteIndex } from '../backend/ops.js';
import type { NamedTensorMap, Scalar, Tensor, Variable } from '@tensorflow/tfjs-core';
import type { Batch, Loader } from '../data/index.js';
import type { CheckpointState } from '../io/checkpoint.js';
import type { Method, StepContext } from '../methods/method.js';
import { disposeTensorBatch, toTensorBatch } from './data.js';
import type { RunConfig } from './config.js';
import { extractFeatures } from '../eval/features.js';
import { normalizedMutualInfo } from '../eval/nmi.js';
import type { ClusteringMetrics, EpochMetrics, StepMetrics } from './metrics.js';
import { clipGradNorm, namedParameters, type Optimizer } from './optimizers.js';
import type { Run } from './setup.js';
import type { Communicator } from '../dist/communicator.js';
import { averageGradients } from '../dist/tensors.js';
import { rankEpoch } from './shard.js';

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
  /** Stopped by a signal or an abort before the last epoch ended. */
  stoppedEarly: boolean;
  /** What stopped it early ('SIGINT', 'SIGTERM', 'aborted', 'another rank stopped'), null when it ran to the end. */
  stoppedBy: string | null;
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

/**
 * A gradient, parameter or buffer (BN running statistics, EMA twins, queues)
 * became NaN or infinite. A finite loss does not rule this out: BN running
 * variances can overflow while the loss stays finite. `tensor` names it.
 */
export class NonFiniteStateError extends NonFiniteLossError {
  constructor(
    message: string,
    step: number,
    lastCheckpoint: string | null,
    readonly tensor: string,
  ) {
    super(message, step, lastCheckpoint);
    this.name = 'NonFiniteStateError';
  }
}

/**
 * The name of the first float tensor of `named` that holds a NaN or an
 * infinity, or null (one native call for all of them: backend/ops.ts).
 */
export function firstNonFinite(named: Array<[string, Tensor]>): string | null {
  const floats = named.filter(([, t]) => t.dtype === 'float32');
  const index = firstNonFiniteIndex(floats.map(([, t]) => t));
  return index < 0 ? null : floats[index]![0];
}

/** What `fit` tells its callbacks; each hook may be async, and they run in list order. */
export interface TrainerCallback {
  onTrainStart?(loop: Loop): void | Promise<void>;
  onStepEnd?(loop: Loop, step: StepMetrics): void | Promise<void>;
  /** An epoch's summary, before it is recorded: monitors may add to it (online kNN). */
  onEpochEnd?(loop: Loop, summary: EpochMetrics): void | Promise<void>;
  /** After each step and any epoch end, once pending signals have been heard: persistence goes here. */
  onStepSettled?(loop: Loop, settled: { epochEnded: number | null; finished: boolean }): void | Promise<void>;
  /** A stop was requested before the next step; the run ends after this. */
  onStop?(loop: Loop): void | Promise<void>;
  /** The loop ended without an error. */
  onTrainEnd?(loop: Loop): void | Promise<void>;
  /** Always called, last, even when training failed. */
  dispose?(): void | Promise<void>;
}

/** The running state of one `fit`, which the checkpoint records, and the stop request. */
export class Loop {
  position: CheckpointState['position'];
  metrics: EpochMetrics[];
  accumulator: CheckpointState['epoch'];
  /** The last checkpoint written (or resumed from), for the NaN message. */
  lastSaved: { path: string; step: number } | null = null;
  stopRequested: string | null = null;
  private readonly elapsedBefore: number;
  private started = performance.now();

  constructor(
    readonly run: Run,
    readonly log: (line: string) => void,
  ) {
    this.position = run.state.position;
    this.metrics = run.state.metrics;
    this.accumulator = run.state.epoch;
    this.elapsedBefore = run.state.elapsed;
  }

  /** Starts the clock of this session. */
  startClock(): void {
    this.started = performance.now();
  }

  /** Seconds of training, over every session of the run. */
  elapsed(): number {
    return this.elapsedBefore + (performance.now() - this.started) / 1000;
  }

  /** Stops after the current step, with a checkpoint. */
  requestStop(why: string): void {
    if (this.stopRequested) return;
    this.stopRequested = why;
    this.log(`${why}: stopping after this step and writing a checkpoint${why.startsWith('SIG') ? ' (again to exit at once)' : ''}`);
  }

  /** What the last checkpoint is, for the messages that stop a run. */
  kept(): string {
    const saved = this.lastSaved;
    return saved ? `the last good checkpoint, ${saved.path} (step ${saved.step}), is kept` : 'no checkpoint had been written yet';
  }

  /** Logs and throws: `tensor` went non-finite (`what` says when) at step `step`. */
  stopNonFinite(tensor: string, what: string, step: number): never {
    const message = `${tensor} ${what}; ${this.kept()}`;
    this.log(message);
    throw new NonFiniteStateError(message, step, this.lastSaved?.path ?? null, tensor);
  }

  /** Stops the run if any tensor of the method's state (parameters, BN statistics, EMA twins, queues) is NaN or infinite. */
  assertFiniteState(when: string, step = this.position.step): void {
    const bad = firstNonFinite(Object.entries(this.run.method.stateDict()));
    if (bad !== null) this.stopNonFinite(bad, `holds NaN or infinite values ${when}; training stopped, this state is not saved`, step);
  }

  /** What a checkpoint written now records besides the tensors. */
  checkpointState(): CheckpointState<RunConfig, EpochMetrics> {
    const { config, data } = this.run;
    return { config, position: this.position, data, metrics: this.metrics, epoch: this.accumulator, elapsed: this.elapsed() };
  }
}

export function emptyAccumulator(): CheckpointState['epoch'] {
  return { sums: {}, batches: 0, images: 0, seconds: 0 };
}

interface StepOutcome {
  loss: number;
  terms: Record<string, number>;
  /** Set when the gradients were not finite (no update applied): what was. */
  badGradient?: string;
}

/**
 * One optimizer step on `batch`. Every tensor it makes is disposed before it
 * returns, except the new parameter and optimizer values. A non-finite loss
 * returns before any update.
 */
export function trainStep(
  method: Method,
  trainable: Variable[],
  optimizer: Optimizer,
  batch: Batch,
  ctx: StepContext,
  lr: number,
  gradClip: number | undefined,
  paramName: Map<string, string>,
  comm: Communicator,
): StepOutcome {
  const tensors = toTensorBatch(batch);
  let terms: Record<string, Scalar> = {};
  try {
    tf.tidy(() => method.beforeStep(ctx));
    const { value, grads } = tf.variableGrads(() => {
      const out = method.loss(tensors, ctx);
      // Terms are read after the tape closes; keep them past its tidy.
      terms = out.terms;
      for (const t of Object.values(terms)) tf.keep(t);
      return out.loss;
    }, trainable);
    let used: NamedTensorMap = grads;
    // The ranks' mean, when data-parallel; `grads` itself otherwise.
    let averaged: NamedTensorMap = grads;
    const outcome: StepOutcome = { loss: Number.NaN, terms: {} };
    try {
      outcome.loss = value.dataSync()[0]!;
      for (const [name, t] of Object.entries(terms)) outcome.terms[name] = t.dataSync()[0]!;
      if (comm.size > 1) {
        // Every rank has the same terms (same method), in the same key order.
        const names = Object.keys(outcome.terms);
        const values = Float64Array.from([outcome.loss, ...names.map((n) => outcome.terms[n]!)]);
        comm.allreduceF64(values, 'sum');
        outcome.loss = values[0]! / comm.size;
        names.forEach((n, i) => (outcome.terms[n] = values[i + 1]! / comm.size));
      }
      if (!Number.isFinite(outcome.loss)) return outcome;
      if (comm.size > 1) averaged = averageGradients(comm, grads, trainable.map((v) => v.name));
      used = method.transformGradients(averaged, ctx);
      if (gradClip !== undefined) {
        outcome.terms.gradNorm = clipGradNorm(used, gradClip);
        if (!Number.isFinite(outcome.terms.gradNorm)) outcome.badGradient = `the gradient norm (${outcome.terms.gradNorm})`;
      } else {
        const bad = firstNonFinite(Object.entries(used));
        if (bad !== null) outcome.badGradient = `the gradient of ${paramName.get(bad) ?? bad}`;
      }
      if (outcome.badGradient) return outcome;
      optimizer.step(used, lr);
    } finally {
      value.dispose();
      tf.dispose([...new Set([...Object.values(grads), ...Object.values(averaged), ...Object.values(used)])]);
    }
    // Methods keep their state in buffers (Variable.assign), so a tidy loses nothing.
    tf.tidy(() => method.afterStep(ctx));
    return outcome;
  } finally {
    tf.dispose(Object.values(terms));
    disposeTensorBatch(tensors);
  }
}

/** Lets pending signals (Ctrl-C) and timers run: a loop that never yields never hears them. */
export const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

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

/**
 * Gives `method.recluster` the pooled features of the whole training set (eval
 * mode, the size and normalisation evaluation uses) and logs the NMI of its
 * clusters against the previous ones and, on labeled data, the classes.
 */
async function recluster(method: Method, run: Run, epoch: number, log: (line: string) => void): Promise<ClusteringMetrics> {
  const started = performance.now();
  const { trainSet, config } = run;
  const { features, dim } = await extractFeatures(method.backbone, trainSet, { size: config.dataset.size, batchSize: 256 });
  const { assignments, previous, summary, resetOptimizerState } = method.recluster!(features, dim, epoch);
  for (const prefix of resetOptimizerState ?? []) run.optimizer.resetSlots(prefix);
  const labeled = trainSet.labels.length === trainSet.count && trainSet.labels.every((l) => l >= 0);
  const metrics: ClusteringMetrics = {
    nmiPrevious: previous ? normalizedMutualInfo(assignments, previous) : null,
    nmiLabels: labeled ? normalizedMutualInfo(assignments, trainSet.labels) : null,
  };
  const nmi = [metrics.nmiPrevious !== null ? `NMI vs previous ${metrics.nmiPrevious.toFixed(3)}` : null, metrics.nmiLabels !== null ? `NMI vs labels ${metrics.nmiLabels.toFixed(3)}` : null];
  log(`epoch ${epoch + 1}: ${summary}; ${[...nmi.filter(Boolean), `${((performance.now() - started) / 1000).toFixed(0)} s`].join(', ')}`);
  return metrics;
}

/** The epoch's means, as metrics.jsonl and the checkpoint record them. */
function epochSummary(loop: Loop, epoch: number, lr: number): EpochMetrics {
  const { sums, batches, images, seconds, clustering } = loop.accumulator;
  const means = Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / batches]));
  const { loss, ...terms } = means;
  return { epoch, step: loop.position.step, loss: loss!, terms, lr, imagesPerSec: images / seconds, seconds, ...(clustering ? { clustering } : {}) };
}

/** Trains `run` to its last epoch (or a stop), telling `callbacks` as it goes. */
export async function fit(run: Run, callbacks: TrainerCallback[], { log }: { log: (line: string) => void }): Promise<TrainResult> {
  const { config, method, loader, optimizer, lrAt, stepsPerEpoch, totalSteps, comm } = run;
  const loop = new Loop(run, log);
  const named = namedParameters(method);
  const trainable = named.map((p) => p.variable);
  const paramName = new Map(named.map((p) => [p.variable.name, p.name]));
  const each = async (hook: (cb: TrainerCallback) => void | Promise<void>) => {
    for (const cb of callbacks) await hook(cb);
  };
  // One process reads its own stop request; ranks read the one they last agreed on.
  let agreedStop = false;
  const agreeStop = () => {
    const any = Float64Array.of(loop.stopRequested ? 1 : 0);
    comm.allreduceF64(any, 'max');
    if (any[0]! > 0 && !loop.stopRequested) loop.requestStop('another rank stopped');
    agreedStop = any[0]! > 0;
  };
  const stopNow = () => (comm.size > 1 ? agreedStop : loop.stopRequested !== null);
  try {
    await each((cb) => cb.onTrainStart?.(loop));
    log(
      `train: ${config.method} on ${config.dataset.name} (${run.trainSet.count} images), ${config.model.arch} width ${config.model.width}, ` +
        `${config.epochs} epochs x ${stepsPerEpoch} steps of ${config.batchSize}, ${config.optimizer.name}, backend ${run.backend}${run.precision === 'bf16' ? ' (bf16)' : ''}, out ${run.outDir}`,
    );
    loop.startClock();
    let lastLoss = loop.metrics.at(-1)?.loss ?? Number.NaN;
    let stoppedEarly = false;
    method.train();
    if (method.warmUp && loop.position.step === 0) stoppedEarly = !(await warmUp(method, loader, log, () => loop.stopRequested !== null));
    if (comm.size > 1) {
      // A rank that stopped during its warm-up (which has no collectives) or before the first step takes the others with it.
      loop.stopRequested ??= stoppedEarly ? 'stopped during the warm-up' : null;
      agreeStop();
      if (agreedStop && loop.position.step === 0 && method.warmUp) stoppedEarly = true;
    }
    let tick = performance.now();
    outer: for (let epoch = stoppedEarly ? config.epochs : loop.position.epoch; epoch < config.epochs; epoch++) {
      const from = epoch === loop.position.epoch ? loop.position.batch : 0;
      if (method.recluster && from === 0) loop.accumulator = { ...loop.accumulator, clustering: await recluster(method, run, epoch, log) };
      tf.tidy(() => method.onEpochStart(epoch));
      const order = method.epochOrder?.(epoch, run.trainSet.count);
      const batches = comm.size > 1 ? rankEpoch(loader, comm, epoch, from, order, config.batchSize, stepsPerEpoch) : loader.epoch(epoch, from, order);
      for await (const batch of batches) {
        if (stopNow()) {
          await each((cb) => cb.onStop?.(loop));
          stoppedEarly = true;
          break outer;
        }
        const step = loop.position.step;
        const ctx: StepContext = { step, epoch, totalSteps };
        const lr = lrAt(step);
        const { loss, terms, badGradient } = trainStep(method, trainable, optimizer, batch, ctx, lr, config.optimizer.gradClip, paramName, comm);
        const where = `step ${step} (epoch ${epoch + 1}, batch ${batch.index})`;
        if (!Number.isFinite(loss)) {
          const saved = loop.lastSaved;
          const message = `loss is ${loss} at ${where}; training stopped, no update applied; ${loop.kept()}`;
          log(message);
          throw new NonFiniteLossError(message, step, saved?.path ?? null);
        }
        if (badGradient) loop.stopNonFinite(badGradient, `is not finite at ${where}; training stopped, no update applied`, step);
        // Every step, before any callback can save it. Cheap enough: ~3-4 ms for a width-16 ResNet-18's
        // 102 tensors (0.7M floats), plus ~2 ms for the gradients, against a 250-650 ms step at batch 128.
        loop.assertFiniteState(`after ${where}`, step);
        const now = performance.now();
        const seconds = (now - tick) / 1000;
        tick = now;
        const images = batch.indices.length * comm.size;
        lastLoss = loss;
        loop.position = { step: step + 1, epoch, batch: batch.index + 1 };
        const acc = loop.accumulator;
        acc.batches++;
        acc.images += images;
        acc.seconds += seconds;
        for (const [name, v] of Object.entries({ loss, ...terms })) acc.sums[name] = (acc.sums[name] ?? 0) + v;
        const line: StepMetrics = { kind: 'step', step, epoch, batch: batch.index, loss, terms, lr, imagesPerSec: images / seconds, elapsed: loop.elapsed() };
        await each((cb) => cb.onStepEnd?.(loop, line));

        const epochEnded = batch.index + 1 === stepsPerEpoch ? epoch : null;
        if (epochEnded !== null) {
          const summary = epochSummary(loop, epoch, lr);
          await each((cb) => cb.onEpochEnd?.(loop, summary));
          loop.metrics = [...loop.metrics, summary];
          loop.position = { step: loop.position.step, epoch: epoch + 1, batch: 0 };
          loop.accumulator = emptyAccumulator();
          tick = performance.now();
        }
        // Signal handlers and abort listeners run here, between steps.
        await yieldToEventLoop();
        if (comm.size > 1) agreeStop();
        const finished = loop.position.step === totalSteps;
        await each((cb) => cb.onStepSettled?.(loop, { epochEnded, finished }));
        if (stopNow() && !finished) {
          stoppedEarly = true;
          break outer;
        }
      }
    }
    await each((cb) => cb.onTrainEnd?.(loop));
    // Rank 0 may still be writing the last checkpoint; nobody reports the run done before it is.
    comm.barrier();
    return {
      outDir: run.outDir,
      steps: loop.position.step,
      epochs: loop.position.epoch,
      lastLoss,
      checkpoint: run.lastPath,
      metrics: loop.metrics,
      stoppedEarly,
      stoppedBy: stoppedEarly ? (loop.stopRequested ?? 'stopped') : null,
    };
  } finally {
    for (const cb of [...callbacks].reverse()) await cb.dispose?.();
  }
}
