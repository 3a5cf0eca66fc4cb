// NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et
// al. 2020, eq. 1). The 2N projections of N positive pairs are L2-normalised;
// each one's positive is its twin and its negatives are the other 2N - 2, so
//   l(i, j) = -log exp(sim(z_i, z_j)/T) / sum_{k != i} exp(sim(z_i, z_k)/T),
// averaged over all 2N anchors (both directions of every pair: symmetric).
import * as tf from '../core/tf.js';
import type { Scalar, Tensor2D } from '@tensorflow/tfjs-core';
import { rowLogSumExp } from './log_sum_exp.js';
import { l2Normalize } from './normalize.js';

/** Added to the self-similarity logits so exp() makes them 0 (k != i in eq. 1). */
const SELF_MASK = -1e9;

/** Mean NT-Xent over both views; z1[i] and z2[i] are the two views of sample i, [N, D] each. */
export function ntXent(z1: Tensor2D, z2: Tensor2D, temperature: number): Scalar {
  if (z1.rank !== 2 || !tf.util.arraysEqual(z1.shape, z2.shape)) {
    throw new Error(`ntXent: z1 and z2 must be [N, D] of the same shape, got [${z1.shape}] and [${z2.shape}]`);
  }
  if (z1.shape[0] < 2) throw new Error(`ntXent: needs at least 2 pairs for a negative, got ${z1.shape[0]}`);
  if (!(temperature > 0)) throw new Error(`ntXent: temperature must be positive, got ${temperature}`);
  return tf.tidy(() => {
    const n2 = 2 * z1.shape[0];
    const z = tf.concat([l2Normalize(z1, 1), l2Normalize(z2, 1)], 0) as Tensor2D;
    const logits = tf.add(tf.div(tf.matMul(z, z, false, true), temperature), tf.mul(tf.eye(n2), SELF_MASK));
    // The positive of row i is row (i + N) mod 2N: the other half, rolled.
    const [a, b] = tf.split(z, 2, 0);
    const positive = tf.div(tf.sum(tf.mul(z, tf.concat([b!, a!], 0)), 1), temperature);
    return tf.mean(tf.sub(rowLogSumExp(logits as Tensor2D), positive)) as Scalar;
  });
}
