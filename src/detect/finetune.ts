// The fine-tuning loop of the transfer protocols (detection, semantic
// segmentation), from the trainer's parts: SGD with momentum and no weight
// decay on BN or biases, detectron2's warm-up multi-step schedule, progress
// with rate and ETA, Ctrl-C stops after the step with a saved state, and an
// exact resume from the last saved state (batches and samples are functions
// of the seed and the iteration, never of what ran before).
import { existsSync } from 'node:fs';
import * as tf from '../core/tf.js';
import type { Scalar } from '@tensorflow/tfjs-core';
import { Rng } from '../core/random.js';
import { readFinetuneState, restoreModule, restoreOptimizer, saveFinetuneState } from '../io/checkpoint.js';
import type { Module } from '../nn/module.js';
import { StopOnSignal } from '../train/callbacks.js';
import { yieldToEventLoop } from '../train/loop.js';
import { createProgress } from '../train/metrics.js';
import { namedParameters, SGD } from '../train/optimizers.js';
import { warmupMultiStep } from '../train/schedules.js';

export interface FinetuneSettings {
  iters: number;
  batchSize: number;
  lr: number;
  momentum: number;
  weightDecay: number;
  warmupIters: number;
  warmupFactor: number;
  /** Iterations at which the rate drops by gamma. */
  milestones: number[];
  gamma: number;
  seed: number;
  /** Save the resumable state every this many iterations (and on a stop, and at the end). */
  checkpointEvery: number;
}

export interface FinetuneTask<B> {
  model: Module;
  itersPerEpoch: number;
  /** Batch `index` of epoch `epoch`; deterministic, so a resumed run sees the batches it would have. */
  batch(epoch: number, index: number): B;
  /** The loss terms of one batch, recorded on the tape; their sum is minimised. */
  losses(batch: B, rng: Rng): Record<string, Scalar>;
  disposeBatch?(batch: B): void;
}

export interface LossPoint {
  iter: number;
  loss: number;
  terms: Record<string, number>;
}

export interface FinetuneResult {
  /** Iterations done in total (over resumes). */
  iterations: number;
  /** Why the loop stopped early (a signal), or null when it ran to the end. */
  stopped: string | null;
  /** The iteration the run resumed at (0 for a fresh run). */
  resumedAt: number;
  /** Mean loss terms over windows of iterations, the whole run's (resumes included). */
  lossCurve: LossPoint[];
  /** Images per second of this process's iterations; null when it had none to do (resumed at the end). */
  imagesPerSec: number | null;
}

export interface FinetuneIo {
  /** Where the resumable state lives; null: never saved (tests). */
  stateFile: string | null;
  /** Anything that changes the result; a state file saved under another fingerprint is refused. */
  fingerprint: string;
  log: (line: string) => void;
  quiet?: boolean;
  signal?: AbortSignal;
}

/** Iterations per point of the loss curve. */
const CURVE_WINDOW = 20;

export class NonFiniteFinetuneLoss extends Error {}

export async function finetune<B>(task: FinetuneTask<B>, settings: FinetuneSettings, io: FinetuneIo): Promise<FinetuneResult> {
  const { model } = task;
  const optimizer = new SGD(namedParameters(model), { momentum: settings.momentum, weightDecay: settings.weightDecay });
  const schedule = warmupMultiStep({ peak: settings.lr, ...settings });
  let iter = 0;
  let lossCurve: LossPoint[] = [];
  const window: { loss: number; terms: Record<string, number>; count: number } = { loss: 0, terms: {}, count: 0 };
  if (io.stateFile && existsSync(io.stateFile)) {
    const { state, tensors } = readFinetuneState(io.stateFile);
    if (state.fingerprint !== io.fingerprint) {
      throw new Error(`${io.stateFile}: saved by a fine-tune with other settings (delete it to start over)`);
    }
    restoreModule(tensors, model, '', 'this detector');
    restoreOptimizer(tensors, optimizer);
    iter = Number(state.iter);
    lossCurve = (state.lossCurve as LossPoint[]) ?? [];
    // The unfinished window too, so the curve does not depend on where a run was interrupted.
    if (state.window) Object.assign(window, state.window);
    io.log(`resume: ${io.stateFile} at iteration ${iter} of ${settings.iters}`);
  }
  const resumedAt = iter;
  const loop = {
    stopRequested: null as string | null,
    requestStop(why: string) {
      loop.stopRequested ??= why;
    },
  };
  const signals = new StopOnSignal(io.signal);
  signals.onTrainStart(loop);
  const save = () => {
    if (io.stateFile) saveFinetuneState(io.stateFile, model, optimizer, { fingerprint: io.fingerprint, iter, lossCurve, window });
  };
  const progress = createProgress({ totalSteps: settings.iters, startStep: iter, epochs: Math.ceil(settings.iters / task.itersPerEpoch), quiet: io.quiet ?? false, log: io.log });
  const started = performance.now();
  model.train();
  try {
    while (iter < settings.iters && !loop.stopRequested) {
      const epoch = Math.floor(iter / task.itersPerEpoch);
      const batch = task.batch(epoch, iter % task.itersPerEpoch);
      const rng = Rng.seeded(settings.seed).split(1_000_003 + iter);
      let terms: Record<string, number> = {};
      const lr = schedule(iter);
      try {
        const { value, grads } = tf.variableGrads(() => {
          const parts = task.losses(batch, rng);
          terms = Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, v.dataSync()[0]!]));
          return tf.addN(Object.values(parts)) as Scalar;
        });
        const loss = value.dataSync()[0]!;
        value.dispose();
        if (!Number.isFinite(loss)) {
          tf.dispose(Object.values(grads));
          throw new NonFiniteFinetuneLoss(`fine-tuning: the loss is ${loss} at iteration ${iter} (terms ${JSON.stringify(terms)}); lower the learning rate`);
        }
        optimizer.step(grads, lr);
        tf.dispose(Object.values(grads));
        window.loss += loss;
        for (const [k, v] of Object.entries(terms)) window.terms[k] = (window.terms[k] ?? 0) + v;
        window.count++;
        progress.update({ step: iter, epoch, loss, lr, imagesPerSec: ((iter + 1 - resumedAt) * settings.batchSize) / ((performance.now() - started) / 1000) });
      } finally {
        task.disposeBatch?.(batch);
      }
      iter++;
      if (iter % CURVE_WINDOW === 0 || iter === settings.iters) {
        const n = window.count;
        if (n > 0) lossCurve.push({ iter, loss: window.loss / n, terms: Object.fromEntries(Object.entries(window.terms).map(([k, v]) => [k, v / n])) });
        Object.assign(window, { loss: 0, terms: {}, count: 0 });
      }
      if (iter % settings.checkpointEvery === 0 && iter < settings.iters) save();
      // Every step is synchronous; without this turn of the event loop, Ctrl-C's handler
      // (installed above, replacing the default exit) would never run until the last iteration.
      await yieldToEventLoop();
    }
    if (loop.stopRequested || iter === settings.iters) save();
  } finally {
    progress.stop();
    signals.dispose();
    optimizer.dispose();
  }
  const seconds = (performance.now() - started) / 1000;
  return {
    iterations: iter,
    stopped: loop.stopRequested,
    resumedAt,
    lossCurve,
    imagesPerSec: iter > resumedAt && seconds > 0 ? ((iter - resumedAt) * settings.batchSize) / seconds : null,
  };
}
