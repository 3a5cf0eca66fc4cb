// The key queue of MoCo (He et al. 2020, section 3.2): a FIFO of the last K
// L2-normalised keys, the negatives of InfoNCE. It is a Module of buffers, so
// a checkpoint holds both the keys and the write pointer and a resumed run
// contrasts against exactly the same negatives.
//
// Keys are computed inside `loss()` (under the gradient tape) but may only
// enter the queue after the optimizer step, once the current batch no longer
// needs the old negatives: `stage(keys)` there, `commit()` in `afterStep`.
//
// Data-parallel: every rank enqueues every rank's keys, in rank order (MoCo's
// `concat_all_gather` before `_dequeue_and_enqueue`), so the queues stay
// identical and hold the keys of the global batch, as one process would.
import { Mulberry32 } from '../../core/random.js';
import * as tf from '../../core/tf.js';
import type { Tensor, Tensor2D, Variable } from '@tensorflow/tfjs-core';
import { SingleCommunicator, type Communicator } from '../../dist/communicator.js';
import { Module } from '../../nn/module.js';
import { normal } from '../../nn/init.js';
import { l2Normalize } from '../../losses/normalize.js';

export class KeyQueue extends Module {
  /** [K, D] keys; starts as random unit vectors, as MoCo's initial queue. */
  readonly keys: Variable;
  /** Row the next key is written to (int32 scalar). */
  readonly pointer: Variable;
  private staged: Tensor2D | null = null;
  private comm: Communicator = new SingleCommunicator();

  constructor(readonly length: number, readonly dim: number, { rng = new Mulberry32(0) }: { rng?: Mulberry32 } = {}) {
    super();
    if (!(Number.isInteger(length) && length >= 1)) throw new Error(`KeyQueue: length must be a positive integer, got ${length}`);
    if (!(Number.isInteger(dim) && dim >= 1)) throw new Error(`KeyQueue: dim must be a positive integer, got ${dim}`);
    this.keys = this.addBuffer('keys', tf.tidy(() => l2Normalize(normal([length, dim], 1, rng) as Tensor2D)));
    this.pointer = this.addBuffer('pointer', tf.scalar(0, 'int32'));
  }

  /** Writes `keys` [n, D] at the pointer, wrapping around; with n > K only the last K stay. */
  enqueue(keys: Tensor): void {
    if (keys.rank !== 2 || keys.shape[1] !== this.dim) {
      throw new Error(`KeyQueue.enqueue: keys must be [n, ${this.dim}], got [${keys.shape}]`);
    }
    const n = keys.shape[0]!;
    if (n === 0) return;
    const K = this.length;
    const kept = Math.min(n, K);
    const start = (this.pointer.dataSync()[0]! + n - kept) % K;
    const rows = Int32Array.from({ length: kept }, (_, j) => (start + j) % K);
    tf.tidy(() => {
      const newest = tf.slice(keys, [n - kept, 0], [kept, this.dim]);
      this.keys.assign(tf.tensorScatterUpdate(this.keys, tf.tensor2d(rows, [kept, 1], 'int32'), newest));
      this.pointer.assign(tf.scalar((start + kept) % K, 'int32'));
    });
  }

  /** Holds (a copy of) this step's keys until `commit()`; a second `stage` replaces the first. */
  stage(keys: Tensor2D): void {
    this.staged?.dispose();
    this.staged = tf.keep(tf.clone(keys));
  }

  /** Enqueues the staged keys, if any (every rank's, in rank order, when data-parallel). */
  commit(): void {
    commitQueues([this], this.comm);
  }

  useCommunicator(comm: Communicator): void {
    this.comm = comm;
  }

  /** Takes the staged keys (the caller disposes them). */
  takeStaged(): Tensor2D | null {
    const staged = this.staged;
    this.staged = null;
    return staged;
  }

  override dispose(): void {
    this.staged?.dispose();
    this.staged = null;
    super.dispose();
  }
}

/**
 * Commits the staged keys of `queues`. With several ranks, one all-gather
 * carries every queue's keys (DetCo stages eight per step; one call pays the
 * latency once); each queue then enqueues rank 0's keys, then rank 1's, ...
 * Every rank stages the same queues with equal batches, so the gathered
 * buffer splits the same way on every rank.
 */
export function commitQueues(queues: KeyQueue[], comm: Communicator): void {
  const staged = queues.map((q) => q.takeStaged());
  try {
    if (comm.size === 1) {
      queues.forEach((q, i) => staged[i] && q.enqueue(staged[i]!));
      return;
    }
    const parts = staged.map((t) => (t ? (t.dataSync() as Float32Array) : new Float32Array(0)));
    const perRank = parts.reduce((n, p) => n + p.length, 0);
    const local = new Float32Array(perRank);
    let offset = 0;
    for (const p of parts) {
      local.set(p, offset);
      offset += p.length;
    }
    const all = comm.allgather(local);
    if (all.length !== perRank * comm.size) throw new Error(`key queues: ranks staged different numbers of keys (${all.length} gathered, ${perRank} here)`);
    offset = 0;
    queues.forEach((q, i) => {
      const n = parts[i]!.length;
      if (staged[i]) {
        const rows = new Float32Array(n * comm.size);
        for (let r = 0; r < comm.size; r++) rows.set(all.subarray(r * perRank + offset, r * perRank + offset + n), r * n);
        tf.tidy(() => q.enqueue(tf.tensor2d(rows, [rows.length / q.dim, q.dim])));
      }
      offset += n;
    });
  } finally {
    tf.dispose(staged.filter((t): t is Tensor2D => t !== null));
  }
}
