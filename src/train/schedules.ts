// Per-iteration learning-rate schedules: linear warm-up, then cosine, step or
// constant. Pure functions of the global step, so a resumed run needs only
// the step. (The EMA momentum schedule lives with the EMA, methods/parts/ema.ts.)
import type { RunConfig } from './config.js';

export type LrSchedule = (step: number) => number;

export interface LrScheduleOptions {
  peak: number;
  stepsPerEpoch: number;
  epochs: number;
  warmupEpochs?: number;
}

/** Steps of linear warm-up; the rate reaches the peak on the last of them. */
function warmupSteps(o: LrScheduleOptions): number {
  return Math.round((o.warmupEpochs ?? 0) * o.stepsPerEpoch);
}

/** Multiplies `after` by a linear ramp (s + 1) / W over the first W steps. */
function withWarmup(o: LrScheduleOptions, after: LrSchedule): LrSchedule {
  const w = warmupSteps(o);
  return (step) => (step < w ? (o.peak * (step + 1)) / w : after(step));
}

/**
 * Warm-up, then half a cosine from the peak towards `finalFraction` of it
 * (Loshchilov & Hutter 2017, without restarts), reached just after the last
 * step, so no step is spent at the final rate:
 *   lr(s) = final + (peak - final) (1 + cos(pi (s - W) / (T - W))) / 2.
 */
export function cosineSchedule(o: LrScheduleOptions & { finalFraction?: number }): LrSchedule {
  const total = o.stepsPerEpoch * o.epochs;
  const w = warmupSteps(o);
  const final = o.peak * (o.finalFraction ?? 0);
  const span = Math.max(1, total - w);
  return withWarmup(o, (step) => {
    const t = Math.min(1, (step - w) / span);
    return final + ((o.peak - final) * (1 + Math.cos(Math.PI * t))) / 2;
  });
}

/** Warm-up, then the peak times gamma^(milestones passed), milestones in epochs. */
export function stepSchedule(o: LrScheduleOptions & { milestones: number[]; gamma: number }): LrSchedule {
  return withWarmup(o, (step) => {
    const epoch = Math.floor(step / o.stepsPerEpoch);
    const passed = o.milestones.filter((m) => epoch >= m).length;
    return o.peak * o.gamma ** passed;
  });
}

export function constantSchedule(o: LrScheduleOptions): LrSchedule {
  return withWarmup(o, () => o.peak);
}

/**
 * detectron2's WarmupMultiStepLR, per iteration: the factor ramps linearly
 * from `warmupFactor` to 1 over `warmupIters`, and the rate is multiplied by
 * gamma at each milestone passed (iterations). Fine-tuning for transfer uses it.
 */
export function warmupMultiStep(o: { peak: number; warmupIters: number; warmupFactor: number; milestones: number[]; gamma: number }): LrSchedule {
  return (step) => {
    const alpha = o.warmupIters > 0 ? Math.min(1, step / o.warmupIters) : 1;
    const warm = step < o.warmupIters ? o.warmupFactor * (1 - alpha) + alpha : 1;
    return o.peak * warm * o.gamma ** o.milestones.filter((m) => step >= m).length;
  };
}

/** The learning-rate schedule a run config describes. */
export function createLrSchedule(config: RunConfig, stepsPerEpoch: number): LrSchedule {
  const s = config.schedule;
  const base = { peak: config.optimizer.lr, stepsPerEpoch, epochs: config.epochs, warmupEpochs: s.warmupEpochs };
  switch (s.name) {
    case 'cosine':
      return cosineSchedule({ ...base, finalFraction: s.finalFraction });
    case 'step':
      return stepSchedule({ ...base, milestones: s.milestones, gamma: s.gamma });
    case 'constant':
      return constantSchedule(base);
  }
}
