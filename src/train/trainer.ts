// `train`: a run from its config, start to finish. It builds the run
// (setup.ts), fits it with the standard callbacks (callbacks.ts: Ctrl-C,
// precise BN, online kNN, metrics log, progress, checkpoints) and frees it.
// Launched under MPI it trains data-parallel: rank 0 logs, evaluates and
// writes checkpoints, and an error on any rank ends the whole job at once
// (the others would otherwise wait in their next collective until the
// watchdog ends it); the recovery is a restart with --resume.
import { worldCommunicator, type Communicator } from '../dist/communicator.js';
import type { Method, MethodContext } from '../methods/method.js';
import { standardCallbacks } from './callbacks.js';
import type { RunConfig } from './config.js';
import { fit, type TrainResult } from './loop.js';
import type { StepMetrics } from './metrics.js';
import { setupRun } from './setup.js';

export { NonFiniteLossError, NonFiniteStateError, type TrainResult } from './loop.js';

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
  /** Train this method instead of the one the config names (tests, plug-ins); its state must match the config's. */
  method?: (ctx: MethodContext) => Method;
  /** The ranks to train with; default: MPI's world when launched under an MPI launcher, else single. */
  comm?: Communicator;
}

/** Trains `config` and returns where its results are. */
export async function train(config: RunConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const comm = opts.comm ?? worldCommunicator();
  const given = opts.log ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const log = comm.rank === 0 ? given : () => undefined;
  if (comm.size === 1) return trainWith(config, opts, comm, log);
  try {
    return await trainWith(config, opts, comm, log);
  } catch (err) {
    process.stderr.write(`selfsup: rank ${comm.rank} of ${comm.size}: ${(err as Error).message}; ending the job\n`);
    return comm.abort(1);
  }
}

async function trainWith(config: RunConfig, opts: TrainOptions, comm: Communicator, log: (line: string) => void): Promise<TrainResult> {
  const run = await setupRun(config, { resume: opts.resume, log, method: opts.method, comm });
  try {
    return await fit(run, standardCallbacks(run, { signal: opts.signal, quiet: opts.quiet, onStep: opts.onStep, log }), { log });
  } finally {
    await run.dispose();
  }
}
