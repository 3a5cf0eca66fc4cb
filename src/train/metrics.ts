// What a run records: one JSON line per step and per epoch in
// `<out>/metrics.jsonl`, and the progress a person watches (a bar with rate
// and ETA on a terminal, plain periodic lines in a log file).
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
import cliProgress from 'cli-progress';
import { writeFileAtomic } from '../core/files.js';

export interface KnnMetrics {
  /** Top-1 accuracy in percent. */
  top1: number;
  k: number;
  queries: number;
  memory: number;
}

export interface EpochMetrics {
  epoch: number;
  /** Optimizer steps done when the epoch ended. */
  step: number;
  /** Mean loss over the epoch's batches, and the mean of every term. */
  loss: number;
  terms: Record<string, number>;
  /** Rate of the epoch's last step. */
  lr: number;
  imagesPerSec: number;
  seconds: number;
  knn?: KnnMetrics;
  /** Methods that cluster: the epoch's clusters scored at its start. */
  clustering?: ClusteringMetrics;
}

/** NMI of an epoch's clusters against the previous epoch's and the classes (null: none to compare). */
export interface ClusteringMetrics {
  nmiPrevious: number | null;
  nmiLabels: number | null;
}

export interface StepMetrics {
  kind: 'step';
  /** Global step index, from 0. */
  step: number;
  epoch: number;
  batch: number;
  loss: number;
  terms: Record<string, number>;
  lr: number;
  imagesPerSec: number;
  /** Seconds of training so far (carried across resumes). */
  elapsed: number;
}

export type MetricsLine = StepMetrics | ({ kind: 'epoch'; elapsed: number } & EpochMetrics);

/** Appends JSON lines; a resumed run first drops the lines the checkpoint does not cover. */
export class MetricsLog {
  constructor(readonly path: string) {}

  append(line: MetricsLine): void {
    appendFileSync(this.path, `${JSON.stringify(line)}\n`);
  }

  /** Keeps step lines before `step` and epoch lines that ended at or before it. */
  truncateTo(step: number): void {
    if (!existsSync(this.path)) return;
    const keep = readFileSync(this.path, 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .filter((l) => {
        try {
          const m = JSON.parse(l) as MetricsLine;
          return m.kind === 'step' ? m.step < step : m.step <= step;
        } catch {
          return false; // a line cut short by a crash
        }
      });
    writeFileAtomic(this.path, keep.map((l) => `${l}\n`).join(''));
  }

  /** Every line; a last line cut short by a crash is dropped (as truncateTo does), a broken line elsewhere is an error naming it. */
  read(): MetricsLine[] {
    if (!existsSync(this.path)) return [];
    const lines = readFileSync(this.path, 'utf8').split('\n');
    let last = lines.length - 1;
    while (last >= 0 && lines[last]!.trim() === '') last--;
    const out: MetricsLine[] = [];
    lines.forEach((l, i) => {
      if (l.trim() === '') return;
      try {
        out.push(JSON.parse(l) as MetricsLine);
      } catch (err) {
        if (i !== last) throw new Error(`${this.path}:${i + 1} is not valid JSON (${(err as Error).message})`);
      }
    });
    return out;
  }
}

export interface ProgressUpdate {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  imagesPerSec: number;
}

export interface Progress {
  update(u: ProgressUpdate): void;
  stop(): void;
}

export interface ProgressOptions {
  totalSteps: number;
  startStep: number;
  epochs: number;
  quiet: boolean;
  log: (line: string) => void;
  /** Seconds between plain lines when not on a terminal (default 15). */
  every?: number;
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** A cli-progress bar on a TTY, plain lines every few seconds otherwise, nothing when quiet. */
export function createProgress(o: ProgressOptions): Progress {
  if (o.quiet) return { update: () => undefined, stop: () => undefined };
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        format: 'epoch {epoch}/{epochs} |{bar}| {value}/{total} steps | loss {loss} | lr {lr} | {ips} img/s | ETA {eta_formatted}',
        stream: process.stderr,
        etaBuffer: 50,
        hideCursor: true,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(o.totalSteps, o.startStep, { epoch: 1, epochs: o.epochs, loss: '-', lr: '-', ips: '-' });
    return {
      update: (u) =>
        bar.update(u.step + 1, {
          epoch: u.epoch + 1,
          epochs: o.epochs,
          loss: u.loss.toFixed(4),
          lr: u.lr.toExponential(2),
          ips: u.imagesPerSec.toFixed(0),
        }),
      stop: () => bar.stop(),
    };
  }
  const every = (o.every ?? 15) * 1000;
  const started = performance.now();
  let last = started;
  return {
    update: (u) => {
      const now = performance.now();
      const done = u.step + 1;
      if (now - last < every && done !== o.totalSteps) return;
      last = now;
      const rate = (done - o.startStep) / ((now - started) / 1000);
      const eta = (o.totalSteps - done) / rate;
      o.log(
        `epoch ${u.epoch + 1}/${o.epochs} step ${done}/${o.totalSteps} loss ${u.loss.toFixed(4)} lr ${u.lr.toExponential(2)} ` +
          `${u.imagesPerSec.toFixed(0)} img/s ETA ${formatSeconds(eta)}`,
      );
    },
    stop: () => undefined,
  };
}
