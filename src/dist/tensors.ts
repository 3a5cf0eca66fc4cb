// Collectives over tfjs tensors: the state broadcast that makes every rank
// start from rank 0's weights, the gradient average of a step and the
// all-gather of rows (MoCo's keys). Tensors are read to host arrays, sent,
// and rebuilt; the backends here are CPU ones, so this costs one copy.
import * as tf from '../core/tf.js';
import type { DataType, NamedTensorMap, Tensor, Tensor2D, Variable } from '@tensorflow/tfjs-core';
import type { Communicator } from './communicator.js';

interface Header {
  entries: Array<{ name: string; shape: number[]; dtype: DataType }>;
}

const BYTES: Partial<Record<DataType, number>> = { float32: 4, int32: 4, bool: 1 };

function bytesOf(dtype: DataType, size: number, name: string): number {
  const b = BYTES[dtype];
  if (b === undefined) throw new Error(`broadcast: ${name} has dtype ${dtype}, which cannot be sent`);
  return b * size;
}

/** Broadcasts a length-prefixed blob from root: the receivers do not know its length. */
function broadcastBlob(comm: Communicator, blob: Uint8Array | null, root: number): Uint8Array {
  const length = new Float64Array([comm.rank === root ? blob!.length : 0]);
  comm.broadcast(new Uint8Array(length.buffer), root);
  const out = comm.rank === root ? blob! : new Uint8Array(length[0]!);
  comm.broadcast(out, root);
  return out;
}

/**
 * Root's tensors on every rank: names, shapes and values. Root passes its
 * tensors (not disposed); the others pass null and receive new tensors
 * (theirs to dispose). Used for state that only root holds (optimizer slots).
 */
export function broadcastTensors(comm: Communicator, tensors: Record<string, Tensor> | null, root = 0): Record<string, Tensor> {
  if (comm.size === 1) return tensors!;
  const isRoot = comm.rank === root;
  const header: Header = {
    entries: isRoot ? Object.entries(tensors!).map(([name, t]) => ({ name, shape: t.shape, dtype: t.dtype })) : [],
  };
  const headerBytes = broadcastBlob(comm, isRoot ? new TextEncoder().encode(JSON.stringify(header)) : null, root);
  const { entries } = JSON.parse(new TextDecoder().decode(headerBytes)) as Header;
  const sizes = entries.map((e) => bytesOf(e.dtype, e.shape.reduce((a, b) => a * b, 1), e.name));
  const payload = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  if (isRoot) pack(payload, entries.map((e) => tensors![e.name]!));
  comm.broadcast(payload, root);
  if (isRoot) return tensors!;
  let offset = 0;
  return Object.fromEntries(
    entries.map((e, i) => {
      const t = tf.tensor(view(payload, offset, e.dtype, sizes[i]!), e.shape, e.dtype);
      offset += sizes[i]!;
      return [e.name, t];
    }),
  );
}

/**
 * Overwrites every rank's `variables` with root's values. Every rank must
 * hold the same names, shapes and dtypes (the same model); a mismatch is an
 * error that names the first difference, raised on every rank alike.
 */
export function broadcastVariables(comm: Communicator, variables: Array<[string, Variable]>, root = 0): void {
  if (comm.size === 1) return;
  const signature = new TextEncoder().encode(JSON.stringify(variables.map(([n, v]) => [n, v.shape, v.dtype])));
  const rootSignature = broadcastBlob(comm, comm.rank === root ? signature : null, root);
  if (new TextDecoder().decode(rootSignature) !== new TextDecoder().decode(signature)) {
    const theirs = JSON.parse(new TextDecoder().decode(rootSignature)) as Array<[string, number[], string]>;
    const first = variables.findIndex(([n, v], i) => JSON.stringify(theirs[i]) !== JSON.stringify([n, v.shape, v.dtype]));
    throw new Error(
      `broadcast: rank ${comm.rank} holds a different model from rank ${root}: ` +
        `${JSON.stringify(variables[first]?.slice(0, 1) ?? '(none)')} vs ${JSON.stringify(theirs[first] ?? '(none)')}`,
    );
  }
  const sizes = variables.map(([n, v]) => bytesOf(v.dtype, v.size, n));
  const payload = new Uint8Array(sizes.reduce((a, b) => a + b, 0));
  if (comm.rank === root) pack(payload, variables.map(([, v]) => v));
  comm.broadcast(payload, root);
  if (comm.rank === root) return;
  let offset = 0;
  variables.forEach(([, v], i) => {
    tf.tidy(() => v.assign(tf.tensor(view(payload, offset, v.dtype, sizes[i]!), v.shape, v.dtype)));
    offset += sizes[i]!;
  });
}

function pack(payload: Uint8Array, tensors: Tensor[]): void {
  let offset = 0;
  for (const t of tensors) {
    const data = t.dataSync() as Float32Array | Int32Array | Uint8Array;
    payload.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), offset);
    offset += data.byteLength;
  }
}

/** A copy (tfjs keeps the array it is given), aligned for the typed view. */
function view(payload: Uint8Array, offset: number, dtype: DataType, bytes: number): Float32Array | Int32Array | Uint8Array {
  const copy = payload.slice(offset, offset + bytes);
  if (dtype === 'float32') return new Float32Array(copy.buffer);
  if (dtype === 'int32') return new Int32Array(copy.buffer);
  return copy;
}

/**
 * Averages a step's gradients across ranks: new tensors, keyed as `grads`,
 * that the caller disposes along with `grads`. `order` is the parameters'
 * variable names in model order; the buckets are formed from it (backwards)
 * rather than from the map's key order, so every rank packs alike.
 */
export function averageGradients(comm: Communicator, grads: NamedTensorMap, order: readonly string[]): NamedTensorMap {
  if (comm.size === 1) return grads;
  const names = order.filter((n) => grads[n] !== undefined);
  if (names.length !== Object.keys(grads).length) throw new Error('averageGradients: a gradient belongs to no listed parameter');
  const arrays = names.map((n) => Float32Array.from(grads[n]!.dataSync() as Float32Array));
  comm.allreduce(arrays, 'mean');
  return Object.fromEntries(names.map((n, i) => [n, tf.tensor(arrays[i]!, grads[n]!.shape, 'float32')]));
}

/** Every rank's rows of `x` [n_r, d], stacked in rank order (MoCo's concat_all_gather); no gradient. */
export function allgatherRows(comm: Communicator, x: Tensor2D): Tensor2D {
  if (comm.size === 1) return tf.clone(x);
  const d = x.shape[1];
  const all = comm.allgather(Float32Array.from(x.dataSync() as Float32Array));
  return tf.tensor2d(all, [all.length / d, d]);
}

/**
 * Every rank's rows of `x` [n, d] in rank order, with a gradient: the
 * backward sums the gathered gradient over ranks (every rank's loss reads
 * every rank's rows) and keeps this rank's slice. With the trainer's mean of
 * the parameter gradients, that is the gradient of the ranks' mean loss
 * (PyTorch's GatherLayer in SimCLR implementations). Every rank must call it
 * at the same point of its forward, with the same n: the backward's
 * all-reduce runs in the same tape order on every rank.
 */
export function allgatherRowsWithGrad(comm: Communicator, x: Tensor2D): Tensor2D {
  if (comm.size === 1) return x;
  const [n, d] = x.shape;
  const gather = tf.customGrad((...args: unknown[]) => {
    const input = args[0] as Tensor;
    const all = comm.allgather(Float32Array.from(input.dataSync() as Float32Array));
    return {
      value: tf.tensor2d(all, [all.length / d, d]),
      gradFunc: (dy: Tensor) => {
        const sum = Float32Array.from(dy.dataSync() as Float32Array);
        comm.allreduce([sum], 'sum');
        return tf.tensor2d(sum.subarray(comm.rank * n * d, (comm.rank + 1) * n * d), [n, d]);
      },
    };
  });
  return (gather as (t: Tensor) => Tensor)(x) as Tensor2D;
}
