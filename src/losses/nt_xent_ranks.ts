// NT-Xent (nt_xent.ts) over the global batch of a data-parallel run: each
// rank's 2n anchors contrast against the 2N projections of every rank, so
// every anchor has the 2N - 2 negatives one process with the whole batch
// would give it, and the ranks' mean loss is the one-process loss (up to
// the order of the sums). The projections of other ranks arrive through an
// all-gather with a gradient (dist/tensors.ts).
import * as tf from '../core/tf.js';
import type { Scalar, Tensor2D } from '@tensorflow/tfjs-core';
import type { Communicator } from '../dist/communicator.js';
import { allgatherRowsWithGrad } from '../dist/tensors.js';
import { rowLogSumExp } from './log_sum_exp.js';
import { l2Normalize } from './normalize.js';
import { ntXent } from './nt_xent.js';

/** Added to the self-similarity logits so exp() makes them 0. */
const SELF_MASK = -1e9;

/** This rank's mean NT-Xent over its own pairs (z1[i], z2[i]), against every rank's projections; ntXent on one process. */
export function ntXentAcrossRanks(comm: Communicator, z1: Tensor2D, z2: Tensor2D, temperature: number): Scalar {
  if (comm.size === 1) return ntXent(z1, z2, temperature);
  if (z1.rank !== 2 || !tf.util.arraysEqual(z1.shape, z2.shape)) {
    throw new Error(`ntXentAcrossRanks: z1 and z2 must be [n, D] of the same shape, got [${z1.shape}] and [${z2.shape}]`);
  }
  if (!(temperature > 0)) throw new Error(`ntXentAcrossRanks: temperature must be positive, got ${temperature}`);
  return tf.tidy(() => {
    const n = z1.shape[0];
    const local = tf.concat([l2Normalize(z1, 1), l2Normalize(z2, 1)], 0) as Tensor2D;
    // Rank r's rows sit at [2nr, 2n(r+1)) of the gathered keys, in the same order as `local`.
    const keys = allgatherRowsWithGrad(comm, local);
    const self = Int32Array.from({ length: 2 * n }, (_, i) => 2 * n * comm.rank + i);
    const mask = tf.mul(tf.oneHot(tf.tensor1d(self, 'int32'), keys.shape[0]), SELF_MASK);
    const logits = tf.add(tf.div(tf.matMul(local, keys, false, true), temperature), mask) as Tensor2D;
    // Each anchor's positive is its twin view, which lies on this rank.
    const [a, b] = tf.split(local, 2, 0);
    const positive = tf.div(tf.sum(tf.mul(local, tf.concat([b!, a!], 0)), 1), temperature);
    return tf.mean(tf.sub(rowLogSumExp(logits), positive)) as Scalar;
  });
}
