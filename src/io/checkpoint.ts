// Checkpoints: one safetensors file holding everything a run needs to go on
// exactly where it stopped.
//
//   tensors  `model.<name>`     the method's state dict (backbone, heads, EMA
//                                twins, queues, BN running statistics)
//            `optimizer.<key>`  optimizer slots and step count
//   metadata format, version, method, arch, the resolved config, the position
//            (step, epoch, batch in epoch), the data order (seed, dataset
//            size, batch size), metrics so far, and a SHA-256 checksum.
//
// The loader's order and augmentations are pure functions of (seed, epoch,
// batch), so the data-order position is the RNG state. Files are replaced
// atomically: a crash mid-write leaves the previous checkpoint intact.
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as tf from '../core/tf.js';
import type { Tensor } from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { writeFileAtomic } from '../core/files.js';
import { parseOrThrow } from '../core/schema.js';
import { DatasetConfig } from '../data/dataset_config.js';
import { archLabel, BackboneConfig } from '../nn/backbone.js';
import type { Module, StateDict } from '../nn/module.js';
import { decodeSafetensors, dtypeOf, encodeSafetensors, type RawTensor, type SafeArray } from './safetensors.js';

export const CHECKPOINT_FORMAT = 'selfsup-checkpoint';
export const CHECKPOINT_VERSION = 1;
export const LAST_CHECKPOINT = 'last.safetensors';

/**
 * What this layer reads of a run's config: enough to rebuild and evaluate the
 * backbone. The trainer's RunConfig holds these keys and more, and parses the
 * whole of it when it resumes.
 */
export const CheckpointConfig = z
  .object({
    method: z.string().min(1),
    seed: z.number().int().min(0).default(0),
    model: BackboneConfig.default({}),
    dataset: DatasetConfig.default({}),
  })
  .passthrough();
export type CheckpointConfig = z.infer<typeof CheckpointConfig>;

/** Optimizer slots: what a checkpoint stores of the optimizer (train/optimizers.ts's Optimizer). */
export interface OptimizerState {
  state(): StateDict;
  loadState(tensors: StateDict): void;
}

/** Where the run is: the next step to take is batch `batch` of epoch `epoch`. */
export interface TrainPosition {
  /** Optimizer steps done. */
  step: number;
  epoch: number;
  batch: number;
}

/** Running sums of the current epoch, so a mid-epoch resume reports the same epoch means. */
export interface EpochAccumulator {
  sums: Record<string, number>;
  batches: number;
  images: number;
  seconds: number;
  /** What the epoch's start measured (a clustering method's NMI), reported with the epoch. */
  clustering?: { nmiPrevious: number | null; nmiLabels: number | null };
}

/** What the trained method needs to be rebuilt: the data's channels and classes. */
export interface DataInfo {
  channels: number;
  /** Classes of the training set's labels (0 when unlabeled). */
  numClasses: number;
}

/** `M`: the trainer's epoch summaries (train/metrics.ts), opaque here. */
export interface CheckpointState<C extends CheckpointConfig = CheckpointConfig, M = unknown> {
  config: C;
  position: TrainPosition;
  data: DataInfo & { seed: number; datasetCount: number; batchSize: number; stepsPerEpoch: number };
  metrics: M[];
  epoch: EpochAccumulator;
  /** Seconds of training so far. */
  elapsed: number;
}

export interface Checkpoint {
  path: string;
  method: string;
  arch: string;
  state: CheckpointState;
  model: Record<string, RawTensor>;
  optimizer: Record<string, RawTensor>;
}

export function epochCheckpointName(epoch: number): string {
  return `epoch-${String(epoch).padStart(4, '0')}.safetensors`;
}

function rawOf(t: Tensor): RawTensor {
  const data = t.dataSync() as SafeArray;
  return { dtype: dtypeOf(data), shape: [...t.shape], data };
}

/** A diverged state must never be written where a resume or an evaluation would take it as good. */
function assertFinite(tensors: Record<string, RawTensor>): void {
  for (const [name, { dtype, data }] of Object.entries(tensors)) {
    if (dtype !== 'F32') continue;
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i]!)) throw new Error(`refusing to write a checkpoint: ${name} holds a non-finite value (${data[i]} at index ${i})`);
    }
  }
}

/**
 * Encodes a checkpoint; a NaN or infinite tensor is an error. Tensors are read synchronously, so the caller must not
 * step the model until this returns.
 */
export function encodeCheckpoint(model: Module, optimizer: OptimizerState | null, state: CheckpointState): Uint8Array[] {
  const tensors: Record<string, RawTensor> = {};
  for (const [name, t] of Object.entries(model.stateDict())) tensors[`model.${name}`] = rawOf(t);
  const optState = optimizer?.state() ?? {};
  try {
    for (const [name, t] of Object.entries(optState)) tensors[`optimizer.${name}`] = rawOf(t);
  } finally {
    tf.dispose(Object.values(optState));
  }
  assertFinite(tensors);
  const metadata: Record<string, string> = {
    format: CHECKPOINT_FORMAT,
    version: String(CHECKPOINT_VERSION),
    method: state.config.method,
    arch: archLabel(state.config.model),
    config: JSON.stringify(state.config),
    position: JSON.stringify(state.position),
    data: JSON.stringify(state.data),
    metrics: JSON.stringify(state.metrics),
    epoch: JSON.stringify(state.epoch),
    elapsed: String(state.elapsed),
    created: new Date().toISOString(),
  };
  return encodeSafetensors(tensors, metadata);
}

/** Temporary files a killed writer left next to `path` (never another live process's). */
function removeStaleTemporaries(path: string): void {
  const dir = dirname(path);
  const prefix = `${basename(path)}.tmp-`;
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    let alive = pid === process.pid;
    if (!alive && Number.isInteger(pid) && pid > 0) {
      try {
        process.kill(pid, 0);
        alive = true;
      } catch (err) {
        alive = (err as NodeJS.ErrnoException).code === 'EPERM';
      }
    }
    if (!alive) rmSync(join(dir, name), { force: true });
  }
}

/** Writes a checkpoint to each of `paths` atomically (temp file, fsync, rename, fsync the folder). */
export function saveCheckpoint(paths: string | string[], model: Module, optimizer: OptimizerState | null, state: CheckpointState): void {
  const chunks = encodeCheckpoint(model, optimizer, state);
  for (const path of Array.isArray(paths) ? paths : [paths]) {
    removeStaleTemporaries(path);
    writeFileAtomic(path, chunks);
  }
}

function parseJson<T>(path: string, metadata: Record<string, string>, key: string): T {
  const raw = metadata[key];
  if (raw === undefined) throw new Error(`checkpoint ${path}: metadata has no '${key}' entry`);
  try {
    return JSON.parse(raw) as T;
  } catch {
    throw new Error(`checkpoint ${path}: metadata '${key}' is not valid JSON`);
  }
}

/** Reads and verifies a checkpoint; any problem is an error naming the file and what is wrong. */
export function readCheckpoint(path: string): Checkpoint {
  if (!existsSync(path)) throw new Error(`checkpoint ${path}: no such file`);
  const { tensors, metadata } = decodeSafetensors(readFileSync(path), `checkpoint ${path}`);
  if (metadata.format !== CHECKPOINT_FORMAT) {
    throw new Error(`checkpoint ${path}: not a selfsup checkpoint (metadata format is ${JSON.stringify(metadata.format)})`);
  }
  if (metadata.sha256 === undefined) throw new Error(`checkpoint ${path}: no sha256 checksum in the metadata`);
  if (Number(metadata.version) !== CHECKPOINT_VERSION) {
    throw new Error(`checkpoint ${path}: format version ${metadata.version}, this selfsup reads version ${CHECKPOINT_VERSION}`);
  }
  const config = parseOrThrow(CheckpointConfig, parseJson(path, metadata, 'config'), `checkpoint ${path}: its config`);
  const state: CheckpointState = {
    config,
    position: parseJson(path, metadata, 'position'),
    data: parseJson(path, metadata, 'data'),
    metrics: parseJson(path, metadata, 'metrics'),
    epoch: parseJson(path, metadata, 'epoch'),
    elapsed: Number(metadata.elapsed ?? 0),
  };
  const model: Record<string, RawTensor> = {};
  const optimizer: Record<string, RawTensor> = {};
  for (const [name, t] of Object.entries(tensors)) {
    if (name.startsWith('model.')) model[name.slice(6)] = t;
    else if (name.startsWith('optimizer.')) optimizer[name.slice(10)] = t;
    else throw new Error(`checkpoint ${path}: unexpected tensor '${name}'`);
  }
  return { path, method: metadata.method ?? '', arch: metadata.arch ?? '', state, model, optimizer };
}

function toTensor(t: RawTensor): Tensor {
  const dtype = t.dtype === 'F32' ? 'float32' : t.dtype === 'I32' ? 'int32' : 'bool';
  return tf.tensor(t.data, t.shape, dtype);
}

function toTensors(raw: Record<string, RawTensor>): StateDict {
  return Object.fromEntries(Object.entries(raw).map(([k, t]) => [k, toTensor(t)]));
}

/** Loads the model part into `method`; a missing, extra or misshapen tensor is an error naming the file. */
export function restoreMethod(checkpoint: Checkpoint, method: Module & { name: string }): void {
  restoreModule(checkpoint, method, '', `the ${method.name} model`);
}

/**
 * The checkpoint's tensors named `prefix` + a name of `module`'s, loaded into
 * `module`; a missing, extra or misshapen tensor is an error naming the file.
 */
export function restoreModule(checkpoint: Pick<Checkpoint, 'path' | 'model'>, module: Module, prefix: string, what: string): void {
  const { path } = checkpoint;
  const own = module.stateDict();
  const saved = Object.fromEntries(Object.entries(checkpoint.model).filter(([k]) => k.startsWith(prefix)).map(([k, t]) => [k.slice(prefix.length), t]));
  const missing = Object.keys(own).filter((k) => !(k in saved)).map((k) => prefix + k);
  const extra = Object.keys(saved).filter((k) => !(k in own)).map((k) => prefix + k);
  if (missing.length || extra.length) {
    const parts = [missing.length ? `missing ${missing.slice(0, 5).join(', ')}` : '', extra.length ? `unexpected ${extra.slice(0, 5).join(', ')}` : ''];
    throw new Error(`checkpoint ${path}: does not match ${what}: ${parts.filter(Boolean).join('; ')}`);
  }
  for (const [name, t] of Object.entries(own)) {
    const { shape } = saved[name]!;
    if (!tf.util.arraysEqual(shape, t.shape)) {
      throw new Error(`checkpoint ${path}: ${prefix + name} has shape [${shape}], ${what} expects [${t.shape}]`);
    }
  }
  const tensors = toTensors(saved);
  try {
    module.loadStateDict(tensors);
  } finally {
    tf.dispose(Object.values(tensors));
  }
}

export function restoreOptimizer(checkpoint: Pick<Checkpoint, 'path' | 'optimizer'>, optimizer: OptimizerState): void {
  const tensors = toTensors(checkpoint.optimizer);
  try {
    optimizer.loadState(tensors);
  } catch (err) {
    throw new Error(`checkpoint ${checkpoint.path}: ${(err as Error).message}`);
  } finally {
    tf.dispose(Object.values(tensors));
  }
}

const FINETUNE_STATE_FORMAT = 'selfsup-finetune-state';

/**
 * A fine-tuning loop's resumable state (transfer protocols): the whole
 * model, the optimizer slots and a JSON `state` object (iteration, settings
 * fingerprint), written atomically. Separate from run checkpoints, which
 * carry a method and a run config.
 */
export function saveFinetuneState(path: string, model: Module, optimizer: OptimizerState, state: Record<string, unknown>): void {
  const tensors: Record<string, RawTensor> = {};
  for (const [name, t] of Object.entries(model.stateDict())) tensors[`model.${name}`] = rawOf(t);
  const optState = optimizer.state();
  try {
    for (const [name, t] of Object.entries(optState)) tensors[`optimizer.${name}`] = rawOf(t);
  } finally {
    tf.dispose(Object.values(optState));
  }
  removeStaleTemporaries(path);
  writeFileAtomic(path, encodeSafetensors(tensors, { format: FINETUNE_STATE_FORMAT, state: JSON.stringify(state) }));
}

/** The `state` object of a fine-tune state file, without loading its tensors into anything. */
export function readFinetuneState(path: string): { state: Record<string, unknown>; tensors: Pick<Checkpoint, 'path' | 'model' | 'optimizer'> } {
  const { tensors, metadata } = decodeSafetensors(readFileSync(path), `fine-tune state ${path}`);
  if (metadata.format !== FINETUNE_STATE_FORMAT) {
    throw new Error(`fine-tune state ${path}: not a selfsup fine-tune state (metadata format is ${JSON.stringify(metadata.format)})`);
  }
  const state = parseJson<Record<string, unknown>>(path, metadata, 'state');
  const model: Record<string, RawTensor> = {};
  const optimizer: Record<string, RawTensor> = {};
  for (const [name, t] of Object.entries(tensors)) {
    if (name.startsWith('model.')) model[name.slice(6)] = t;
    else if (name.startsWith('optimizer.')) optimizer[name.slice(10)] = t;
    else throw new Error(`fine-tune state ${path}: unexpected tensor '${name}'`);
  }
  // restoreModule and restoreOptimizer load these strictly, naming the file.
  return { state, tensors: { path, model, optimizer } };
}
