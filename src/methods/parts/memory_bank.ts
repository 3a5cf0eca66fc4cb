// The memory bank of instance discrimination (Wu et al. 2018, section 3.2):
// one L2-normalised feature per training image, keyed by dataset index, that
// serves as the image's positive and, sampled at random, as everyone's
// negatives. After each step the features of the batch are blended in:
//   v_i <- normalise(m v_i + (1 - m) f_i)      (Wu et al. eq. 7 / PIRL eq. 6).
// The bank is a buffer: it is saved with the method and never trained.
// Small-schedule change: the bank starts as the untrained network's
// embeddings (one forward pass, the methods' warmUp), not random unit vectors:
// a random row stays half noise after its first update, and a 5-epoch run
// would spend its first epochs learning random targets. Measurements for this
// and the defaults below: docs/experiments.md#memory-bank-methods-insdis-pirl.
// Data-parallel: each rank's (index, feature) pairs are all-gathered before
// the update, so every rank's bank takes the whole global batch and the
// banks stay identical.
import { Mulberry32 } from '../../core/random.js';
import { z } from 'zod';
import * as tf from '../../core/tf.js';
import type { Tensor2D, Variable } from '@tensorflow/tfjs-core';
import { SingleCommunicator, type Communicator } from '../../dist/communicator.js';
import { Module } from '../../nn/module.js';
import { detach, l2Normalize } from '../../losses/normalize.js';
import type { MethodContext } from '../method.js';

export interface MemoryBankOptions {
  /** Update momentum m of eq. 7; the papers use 0.5 (the methods default to memoryBankOptionFields'). */
  momentum?: number;
  seed?: number;
}

/** The options every memory-bank method shares (InsDis, PIRL); small-data defaults. */
export const memoryBankOptionFields = {
  /** Embedding and bank width. */
  dim: z.number().int().positive().default(128),
  /** 0.2, not the papers' 0.07: with 10 classes of near-duplicates a sharp softmax mostly pushes apart images of the same class. */
  temperature: z.number().positive().default(0.2),
  /** Bank entries drawn as negatives per step. */
  negatives: z.number().int().positive().default(4096),
  /**
   * Bank update momentum m of InsDis eq. 7: 0.9, not the papers' 0.5. A row
   * is refreshed once per epoch, and a slower blend averages it over more
   * views of its image.
   */
  bankMomentum: z.number().min(0).lt(1).default(0.9),
  /**
   * BN after the embedding's last Linear, before the L2 normalisation (the
   * papers' heads are a plain Linear): the untrained network's embeddings
   * share one large common component, so without it every positive looks
   * like every negative.
   */
  headBatchNorm: z.boolean().default(true),
  /** Bank rows; default: the training set's size, filled in when a run starts. */
  bankSize: z.number().int().positive().optional(),
};

/** A memory-bank method's `resolve`: the bank holds one row per training image unless `bankSize` says otherwise. */
export function withBankSize<O extends { bankSize?: number }>(_name: string, options: O, ctx: MethodContext): O & { bankSize: number } {
  return { ...options, bankSize: options.bankSize ?? ctx.datasetSize };
}

export class MemoryBank extends Module {
  readonly bank: Variable;
  readonly momentum: number;
  private pending: { indices: Int32Array; features: Tensor2D } | null = null;
  private comm: Communicator = new SingleCommunicator();

  constructor(
    readonly size: number,
    readonly dim: number,
    { momentum = 0.5, seed = 0 }: MemoryBankOptions = {},
  ) {
    super();
    if (!(Number.isInteger(size) && size > 0 && Number.isInteger(dim) && dim > 0)) {
      throw new Error(`MemoryBank: size and dim must be positive integers, got ${size} x ${dim}`);
    }
    if (!(momentum >= 0 && momentum < 1)) throw new Error(`MemoryBank: momentum must be in [0, 1), got ${momentum}`);
    this.momentum = momentum;
    // Random unit vectors, so the first epoch's negatives are uninformative but well-spread.
    const rng = new Mulberry32(seed);
    const init = Float32Array.from({ length: size * dim }, () => rng.normal());
    this.bank = this.addBuffer('bank', tf.tidy(() => l2Normalize(tf.tensor2d(init, [size, dim]), 1)));
  }

  /** The stored features of `indices`: [len, dim]. */
  get(indices: Int32Array): Tensor2D {
    this.check(indices);
    return tf.tidy(() => tf.gather(this.bank, tf.tensor1d(indices, 'int32')) as Tensor2D);
  }

  /** `count` stored features drawn uniformly with replacement (the negatives of NCE): [count, dim]. */
  sample(count: number, rng: Mulberry32): Tensor2D {
    const indices = Int32Array.from({ length: count }, () => Math.floor(rng.uniform() * this.size));
    return this.get(indices);
  }

  /** Eq. 7 for the rows `indices` (distinct) with new features [len, dim]; the result is stored, unit length. */
  update(indices: Int32Array, features: Tensor2D, momentum = this.momentum): void {
    this.check(indices);
    if (features.rank !== 2 || features.shape[0] !== indices.length || features.shape[1] !== this.dim) {
      throw new Error(`MemoryBank.update: features must be [${indices.length}, ${this.dim}], got [${features.shape}]`);
    }
    tf.tidy(() => {
      const rows = tf.tensor2d(indices, [indices.length, 1], 'int32');
      const old = tf.gather(this.bank, tf.reshape(rows, [-1]));
      const blended = l2Normalize(tf.add(tf.mul(old, momentum), tf.mul(l2Normalize(features, 1), 1 - momentum)), 1);
      this.bank.assign(tf.tensorScatterUpdate(this.bank, rows, blended));
    });
  }

  /** Stores `features` (normalised) as the rows `indices` outright: the warm-up pass. */
  fill(indices: Int32Array, features: Tensor2D): void {
    this.update(indices, features, 0);
  }

  /**
   * Keeps (a detached copy of) this step's features for `commit`, which the
   * method calls from afterStep: the bank must not change while the loss that
   * read it is being differentiated.
   */
  stage(indices: Int32Array, features: Tensor2D): void {
    this.check(indices);
    this.pending?.features.dispose();
    this.pending = { indices: indices.slice(), features: tf.keep(detach(features)) };
  }

  /** Applies the staged update, if any (every rank's, when data-parallel). */
  commit(momentum = this.momentum): void {
    if (!this.pending) return;
    const { indices, features } = this.pending;
    this.pending = null;
    try {
      if (this.comm.size === 1) this.update(indices, features, momentum);
      else this.updateGathered(indices, features, momentum);
    } finally {
      features.dispose();
    }
  }

  useCommunicator(comm: Communicator): void {
    // Indices travel as float32 in the same all-gather as the features: exact below 2^24.
    if (comm.size > 1 && this.size > 2 ** 24) throw new Error(`MemoryBank: ${this.size} rows are too many to gather across ranks (at most 2^24)`);
    this.comm = comm;
  }

  /** One all-gather of every rank's [indices | features]; the ranks' shares are disjoint, so the rows stay distinct. */
  private updateGathered(indices: Int32Array, features: Tensor2D, momentum: number): void {
    const n = indices.length;
    const local = new Float32Array(n * (1 + this.dim));
    local.set(indices);
    local.set(features.dataSync() as Float32Array, n);
    const all = this.comm.allgather(local);
    const ranks = all.length / local.length;
    if (!Number.isInteger(ranks) || ranks !== this.comm.size) throw new Error(`MemoryBank: ranks staged different numbers of rows (${all.length} values gathered, ${local.length} here)`);
    const allIndices = new Int32Array(n * ranks);
    const allFeatures = new Float32Array(n * ranks * this.dim);
    for (let r = 0; r < ranks; r++) {
      const part = all.subarray(r * local.length, (r + 1) * local.length);
      allIndices.set(part.subarray(0, n), r * n);
      allFeatures.set(part.subarray(n), r * n * this.dim);
    }
    tf.tidy(() => this.update(allIndices, tf.tensor2d(allFeatures, [n * ranks, this.dim]), momentum));
  }

  override dispose(): void {
    this.pending?.features.dispose();
    this.pending = null;
    super.dispose();
  }

  private check(indices: Int32Array): void {
    for (const i of indices) {
      if (!(i >= 0 && i < this.size)) {
        throw new Error(`MemoryBank: index ${i} is outside the bank of ${this.size} (is the bank smaller than the training set?)`);
      }
    }
  }
}
