// Building a run from its config: the output folder, the backend, the
// training set, the method (from the registry, with its options resolved and
// recorded), the loader, the optimizer and the schedule, and, when resuming,
// the state the last checkpoint holds. `fit` (loop.ts) then runs it.
// Data-parallel (launched under MPI): every rank builds the same run, then
// takes rank 0's weights, buffers and optimizer state, so all ranks start
// from one state whatever their seeds or files; batchSize stays the global
// batch, each rank loading its 1/size share of it (shard.ts).
import { existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { nativePrecision, resolvePrecision, usePrecision, type ResolvedPrecision } from '../backend/precision.js';
import { useBackend } from '../backend/select.js';
import { writeFileAtomic } from '../core/files.js';
import { worldCommunicator, type Communicator } from '../dist/communicator.js';
import { broadcastTensors, broadcastVariables } from '../dist/tensors.js';
import { dataFacts, loadTrainingSet, type DataFacts } from '../data/dataset_config.js';
import { Loader, type ImageSet } from '../data/index.js';
import { LAST_CHECKPOINT, readCheckpoint, restoreMethod, restoreOptimizer, type Checkpoint, type CheckpointState } from '../io/checkpoint.js';
import { checkpointMethodOptions, createMethod, methodContext, resolveMethodOptions, type Method, type MethodContext } from '../methods/index.js';
import { archLabel } from '../nn/backbone.js';
import { parseRunConfig, type RunConfig } from './config.js';
import type { EpochMetrics } from './metrics.js';
import { createOptimizer, namedParameters, type Optimizer } from './optimizers.js';
import { createLrSchedule, type LrSchedule } from './schedules.js';

/** The method `config` names, built for data with `facts`. */
export function buildMethod(config: RunConfig, facts: DataFacts & { datasetSize: number }): Method {
  return createMethod(config.method, config.methodOptions, methodContext(config, facts));
}

/** Where a run is, and what it has recorded so far; the checkpoint holds exactly this. */
export interface RunState {
  position: CheckpointState['position'];
  metrics: EpochMetrics[];
  epoch: CheckpointState['epoch'];
  /** Seconds of training before this session. */
  elapsed: number;
}

export interface Run {
  /** Resolved: the method's options with every default filled in, as recorded in config.yaml and checkpoints. */
  config: RunConfig;
  outDir: string;
  lastPath: string;
  backend: string;
  /** What the run config's precision resolved to on this backend and CPU. */
  precision: ResolvedPrecision;
  trainSet: ImageSet;
  facts: DataFacts;
  method: Method;
  loader: Loader;
  optimizer: Optimizer;
  lrAt: LrSchedule;
  stepsPerEpoch: number;
  totalSteps: number;
  /** The data order, as checkpoints record it. */
  data: CheckpointState['data'];
  /** The checkpoint's state when resuming, else a fresh start. */
  state: RunState;
  /** Set when resuming. */
  resumedFrom: string | null;
  /** The ranks of a data-parallel run; single (size 1) otherwise. */
  comm: Communicator;
  /** Closes the loader and frees the method's and optimizer's tensors. */
  dispose(): Promise<void>;
}

export interface SetupOptions {
  /** Continue `<out>/last.safetensors` exactly where it stopped. */
  resume?: boolean;
  log?: (line: string) => void;
  /** Train this method instead of building the one the config names (tests, plug-ins); its state must match the config's. */
  method?: (ctx: MethodContext) => Method;
  /** The ranks to train with; default: MPI's world when launched under an MPI launcher, else single. */
  comm?: Communicator;
}

/**
 * Makes every rank hold rank 0's method state (weights, BN statistics, EMA
 * twins, queues, banks) and optimizer state. Ranks build their models alike,
 * but rank 0 is the one truth: a resumed rank 0 read the checkpoint, and a
 * model whose init draws from anything rank-dependent would otherwise
 * diverge without a word.
 */
export function broadcastRunState(comm: Communicator, method: Method, optimizer: Optimizer): void {
  if (comm.size === 1) return;
  broadcastVariables(comm, [...method.namedParameters(), ...method.namedBuffers()]);
  const mine = comm.rank === 0 ? optimizer.state() : null;
  const state = broadcastTensors(comm, mine);
  try {
    if (comm.rank !== 0) optimizer.loadState(state);
  } finally {
    for (const t of Object.values(state)) t.dispose();
  }
}

/** Keys a resumed run takes from the new config; every other key comes from the checkpoint. */
const RUNTIME_KEYS = new Set<keyof RunConfig>(['out', 'epochs', 'workers', 'backend', 'precision', 'checkpoint', 'onlineKnn']);

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

/**
 * --epochs on resume is honoured, but the schedule is a function of the run's
 * length, so the rate the next step takes jumps; say so, with the numbers.
 */
function scheduleChange(config: RunConfig, savedEpochs: number, stepsPerEpoch: number, step: number): string {
  const before = createLrSchedule({ ...config, epochs: savedEpochs }, stepsPerEpoch);
  const after = createLrSchedule(config, stepsPerEpoch);
  const change = `${config.epochs > savedEpochs ? 'extending' : 'shortening'} the run from ${savedEpochs} to ${config.epochs} epochs`;
  const from = step > 0 ? `goes from ${before(step - 1).toFixed(4)} (last step) to` : 'is';
  return `resume: ${change}: the learning-rate schedule now spans ${config.epochs} epochs, so the rate ${from} ${after(step).toFixed(4)} at step ${step}`;
}

/** Errors unless `checkpoint` was trained by the method and model `config` asks for. */
export function assertCompatible(checkpoint: Checkpoint, config: RunConfig): void {
  const { path } = checkpoint;
  if (checkpoint.method !== config.method) {
    throw new Error(`checkpoint ${path}: written by method '${checkpoint.method}', this run uses '${config.method}'`);
  }
  const want = archLabel(config.model);
  if (checkpoint.arch !== want) throw new Error(`checkpoint ${path}: holds a ${checkpoint.arch}, this run builds a ${want}`);
}

/** Builds the run `config` describes (resuming its checkpoint with `opts.resume`). */
export async function setupRun(config: RunConfig, opts: SetupOptions = {}): Promise<Run> {
  const log = opts.log ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const comm = opts.comm ?? worldCommunicator();
  const outDir = resolve(config.out);
  const lastPath = join(outDir, LAST_CHECKPOINT);

  let resumed: Checkpoint | null = null;
  if (opts.resume) {
    if (!existsSync(lastPath)) throw new Error(`resume: ${lastPath} not found; there is no run to resume in ${outDir}`);
    resumed = readCheckpoint(lastPath);
    const saved = parseRunConfig(resumed.state.config, `checkpoint ${lastPath}: its config`);
    assertCompatible(resumed, config);
    config = resumeConfig(config, saved, log);
    config = { ...config, methodOptions: checkpointMethodOptions(config.method, config.methodOptions, Object.keys(resumed.model)) };
  } else if (existsSync(lastPath)) {
    throw new Error(`${outDir} already holds a run (${LAST_CHECKPOINT}); resume it, or choose another output folder`);
  }
  const backend = await useBackend(config.backend);
  // Checked before the run makes its folder; set once the run's cleanups can restore it.
  resolvePrecision(config.precision, backend);
  mkdirSync(outDir, { recursive: true });

  const trainSet = await loadTrainingSet(config.dataset);
  const facts = dataFacts(trainSet);
  const ctx = methodContext(config, { ...facts, datasetSize: trainSet.count });
  // Recorded resolved, so a later change of a default never changes what --resume builds.
  config = { ...config, methodOptions: resolveMethodOptions(config.method, config.methodOptions, ctx) };
  const method = opts.method ? opts.method(ctx) : createMethod(config.method, config.methodOptions, ctx);
  if (comm.size > 1) {
    const issue = method.dataParallelIssue();
    if (issue !== null) {
      method.dispose();
      throw new Error(`${config.method} cannot train on ${comm.size} ranks yet: ${issue}. Run it in one process.`);
    }
    method.useCommunicator(comm);
  }
  // The addon's precision is process-wide: what ran before this run comes back after it.
  const previousPrecision = backend === 'native' ? nativePrecision() : 'f32';
  const precision = usePrecision(config.precision, backend);
  const cleanups: Array<() => unknown> = [() => usePrecision(previousPrecision, backend), () => method.dispose()];
  const dispose = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  };
  try {
    const perRank = config.batchSize / comm.size;
    if (comm.size > 1) {
      if (!Number.isInteger(perRank)) throw new Error(`batchSize ${config.batchSize} is the global batch and must split evenly over ${comm.size} ranks`);
      // Every rank must take the same number of steps, or a collective waits forever: drop the last, partial batch.
      if (trainSet.count < config.batchSize) throw new Error(`${trainSet.count} training images are fewer than one global batch of ${config.batchSize}`);
    }
    const loader = new Loader(trainSet, method.pipeline(), {
      batchSize: perRank,
      seed: config.seed,
      workers: config.workers,
      shuffle: true,
      // Equal batches keep BN statistics comparable; a set smaller than a batch is one batch.
      dropLast: trainSet.count >= config.batchSize,
    });
    cleanups.push(() => loader.close());
    const stepsPerEpoch = comm.size > 1 ? Math.floor(trainSet.count / config.batchSize) : loader.batchesPerEpoch;
    const optimizer = createOptimizer(config.optimizer, namedParameters(method));
    cleanups.push(() => optimizer.dispose());
    let state: RunState = { position: { step: 0, epoch: 0, batch: 0 }, metrics: [], epoch: { sums: {}, batches: 0, images: 0, seconds: 0 }, elapsed: 0 };
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
      state = { position: saved.position, metrics: saved.metrics as EpochMetrics[], epoch: saved.epoch, elapsed: saved.elapsed };
      const savedEpochs = (saved.config as { epochs?: number }).epochs;
      if (savedEpochs !== undefined && savedEpochs !== config.epochs) log(scheduleChange(config, savedEpochs, stepsPerEpoch, saved.position.step));
    }
    broadcastRunState(comm, method, optimizer);
    if (comm.size > 1) {
      log(
        `data parallel: ${comm.description}; global batch ${config.batchSize} = ${comm.size} ranks x ${perRank}, ` +
          `so the learning rate and schedule apply as configured (no rescaling); BN statistics are per rank, rank 0 logs and checkpoints`,
      );
    }
    if (comm.rank === 0) writeFileAtomic(join(outDir, 'config.yaml'), toYaml(config));
    return {
      config,
      outDir,
      lastPath,
      backend,
      precision,
      trainSet,
      facts,
      method,
      loader,
      optimizer,
      lrAt: createLrSchedule(config, stepsPerEpoch),
      stepsPerEpoch,
      totalSteps: stepsPerEpoch * config.epochs,
      data: { ...facts, seed: config.seed, datasetCount: trainSet.count, batchSize: config.batchSize, stepsPerEpoch },
      state,
      resumedFrom: resumed ? lastPath : null,
      comm,
      dispose,
    };
  } catch (err) {
    await dispose();
    throw err;
  }
}
