// The trainer's policies, each a callback of `fit` (loop.ts): Ctrl-C and
// aborts, checkpoints, the metrics log, progress, precise BN and online kNN.
// `standardCallbacks` is what `train` uses; tests and other loops pick their own.
import { join } from 'node:path';
import { writeFileAtomic } from '../core/files.js';
import { loadTestSet } from '../data/dataset_config.js';
import { epochCheckpointName, saveCheckpoint } from '../io/checkpoint.js';
import { estimateBatchNormStatistics } from '../eval/features.js';
import type { RunConfig } from './config.js';
import type { Loop, TrainerCallback } from './loop.js';
import { MetricsLog, createProgress, type EpochMetrics, type Progress, type StepMetrics } from './metrics.js';
import { OnlineKnn } from './online_knn.js';
import type { Run } from './setup.js';

/** Ctrl-C / SIGTERM (and `signal`) ask the loop to stop after the step, with a checkpoint; a second signal exits at once. */
export class StopOnSignal implements TrainerCallback {
  private detach: () => void = () => undefined;

  constructor(private readonly signal?: AbortSignal) {}

  /** Needs only the loop's stop request, so other loops (transfer fine-tuning) use it too. */
  onTrainStart(loop: Pick<Loop, 'stopRequested' | 'requestStop'>): void {
    const onSignal = (sig: NodeJS.Signals) => {
      if (loop.stopRequested) process.exit(sig === 'SIGINT' ? 130 : 143);
      loop.requestStop(sig);
    };
    const onAbort = () => loop.requestStop('aborted');
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    this.signal?.addEventListener('abort', onAbort);
    this.detach = () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      this.signal?.removeEventListener('abort', onAbort);
    };
    if (this.signal?.aborted) onAbort();
  }

  dispose(): void {
    this.detach();
  }
}

/** `last.safetensors` at the end, every `everyEpochs` epochs and `everySteps` steps, on a stop; `epoch-NNNN` copies with keepEpochs. */
export class Checkpointer implements TrainerCallback {
  constructor(private readonly policy: RunConfig['checkpoint']) {}

  onTrainStart(loop: Loop): void {
    const { run } = loop;
    if (!run.resumedFrom) return;
    const { step, epoch, batch } = loop.position;
    loop.lastSaved = { path: run.resumedFrom, step };
    loop.log(`resume: ${run.resumedFrom} at step ${step} (epoch ${epoch + 1}, batch ${batch})`);
  }

  onStop(loop: Loop): void {
    this.save(loop);
  }

  onStepSettled(loop: Loop, { epochEnded, finished }: { epochEnded: number | null; finished: boolean }): void {
    const { everyEpochs, everySteps, keepEpochs } = this.policy;
    const epochDue = epochEnded !== null && (epochEnded + 1) % everyEpochs === 0;
    const stepDue = everySteps !== undefined && loop.position.step % everySteps === 0;
    if (finished || stepDue || epochDue || loop.stopRequested) {
      this.save(loop, epochDue && keepEpochs ? [join(loop.run.outDir, epochCheckpointName(epochEnded! + 1))] : []);
    }
  }

  /** A resumed finished run, or an empty one, still leaves a checkpoint. */
  onTrainEnd(loop: Loop): void {
    if (!loop.lastSaved) this.save(loop);
  }

  private save(loop: Loop, extra: string[] = []): void {
    const { run } = loop;
    saveCheckpoint([run.lastPath, ...extra], run.method, run.optimizer, loop.checkpointState());
    loop.lastSaved = { path: run.lastPath, step: loop.position.step };
  }
}

/** `<out>/metrics.jsonl`: a line per step and per epoch; a resumed run first drops the lines its checkpoint does not cover. */
export class MetricsLogger implements TrainerCallback {
  private log: MetricsLog | null = null;

  onTrainStart(loop: Loop): void {
    this.log = new MetricsLog(join(loop.run.outDir, 'metrics.jsonl'));
    if (loop.run.resumedFrom) this.log.truncateTo(loop.position.step);
    else writeFileAtomic(this.log.path, '');
  }

  onStepEnd(_loop: Loop, line: StepMetrics): void {
    this.log!.append(line);
  }

  onEpochEnd(loop: Loop, summary: EpochMetrics): void {
    this.log!.append({ kind: 'epoch', ...summary, elapsed: loop.elapsed() });
  }
}

/** The bar (or periodic lines off a terminal) and one line per epoch, unless quiet. */
export class ProgressReporter implements TrainerCallback {
  private progress: Progress | null = null;

  constructor(private readonly quiet: boolean) {}

  onTrainStart(loop: Loop): void {
    const { run } = loop;
    this.progress = createProgress({ totalSteps: run.totalSteps, startStep: loop.position.step, epochs: run.config.epochs, quiet: this.quiet, log: loop.log });
  }

  onStepEnd(_loop: Loop, s: StepMetrics): void {
    this.progress!.update({ step: s.step, epoch: s.epoch, loss: s.loss, lr: s.lr, imagesPerSec: s.imagesPerSec });
  }

  onEpochEnd(loop: Loop, summary: EpochMetrics): void {
    if (this.quiet) return;
    const knnText = summary.knn ? `, kNN top-1 ${summary.knn.top1.toFixed(1)}%` : '';
    loop.log(`epoch ${summary.epoch + 1}/${loop.run.config.epochs}: loss ${summary.loss.toFixed(4)}, ${summary.imagesPerSec.toFixed(0)} img/s${knnText}`);
  }

  dispose(): void {
    this.progress?.stop();
  }
}

/**
 * Precise BN: before an epoch's online kNN or checkpoint (and after the last
 * epoch), the backbone's BN running statistics are re-estimated on up to
 * `images` whole training images, as evaluation sees them; training's running
 * averages describe augmented views.
 */
export class PreciseBatchNorm implements TrainerCallback {
  constructor(
    private readonly images: number,
    /** Whether epoch `epoch` (from 0) ends with an online kNN or a checkpoint. */
    private readonly due: (epoch: number) => boolean,
  ) {}

  onEpochEnd(loop: Loop, summary: { epoch: number }): void {
    const { run } = loop;
    if (this.images === 0 || !this.due(summary.epoch)) return;
    estimateBatchNormStatistics(run.method.backbone, run.trainSet, { size: run.config.dataset.size, batchSize: run.config.batchSize, limit: this.images });
    // Finite but huge weights can overflow the re-estimated variances, and a checkpoint follows.
    const step = loop.position.step - 1;
    loop.assertFiniteState(`after re-estimating BN statistics at step ${step} (epoch ${summary.epoch + 1}'s end)`, step);
  }
}

/** Online kNN top-1 on a fixed held-out subset every `every` epochs and after the last. */
export class OnlineKnnMonitor implements TrainerCallback {
  constructor(
    private readonly knn: OnlineKnn,
    private readonly every: number,
    private readonly epochs: number,
  ) {}

  isDue(epoch: number): boolean {
    return (epoch + 1) % this.every === 0 || epoch + 1 === this.epochs;
  }

  async onEpochEnd(loop: Loop, summary: EpochMetrics): Promise<void> {
    if (this.isDue(summary.epoch)) summary.knn = await this.knn.evaluate(loop.run.method.backbone);
  }
}

export interface StandardCallbackOptions {
  /** Aborting it stops after the current step, with a checkpoint, as Ctrl-C does. */
  signal?: AbortSignal;
  quiet?: boolean;
  /** Called after every step with what metrics.jsonl records. */
  onStep?: (step: StepMetrics) => void;
  log: (line: string) => void;
}

/** The callbacks of a `train` run, as its config sets them. Order matters: monitors annotate an epoch before it is logged. */
export function standardCallbacks(run: Run, o: StandardCallbackOptions): TrainerCallback[] {
  const { config } = run;
  const callbacks: TrainerCallback[] = [new StopOnSignal(o.signal)];
  if (run.comm.rank !== 0) {
    // Rank 0 alone evaluates, logs and writes: the others hold the same weights, and
    // their BN running statistics (read only by evaluation) are their own shard's.
    if (o.onStep) callbacks.push({ onStepEnd: (_loop, line) => o.onStep!(line) });
    return callbacks;
  }
  let knn: OnlineKnnMonitor | null = null;
  if (config.onlineKnn.every > 0) {
    const test = loadTestSet(config.dataset, config.onlineKnn.testSamples);
    const held = OnlineKnn.fromConfig(config, run.trainSet, test, run.facts.numClasses);
    if (typeof held === 'string') o.log(held);
    else knn = new OnlineKnnMonitor(held, config.onlineKnn.every, config.epochs);
  }
  const lastEpoch = (epoch: number) => epoch + 1 === config.epochs;
  const checkpointDue = (epoch: number) => (epoch + 1) % config.checkpoint.everyEpochs === 0;
  callbacks.push(new PreciseBatchNorm(config.preciseBn.images, (e) => (knn?.isDue(e) ?? false) || checkpointDue(e) || lastEpoch(e)));
  if (knn) callbacks.push(knn);
  callbacks.push(new MetricsLogger(), new ProgressReporter(o.quiet ?? false));
  if (o.onStep) {
    const onStep = o.onStep;
    callbacks.push({ onStepEnd: (_loop, line) => onStep(line) });
  }
  callbacks.push(new Checkpointer(config.checkpoint));
  return callbacks;
}
