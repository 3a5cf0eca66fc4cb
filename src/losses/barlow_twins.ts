// The redundancy-reduction loss of Barlow Twins (Zbontar et al. 2021, eq. 1
// and algorithm 1). Each view's [N, D] embeddings are standardised over the
// batch (BatchNorm without affine parameters: mean 0, biased variance 1, ε
// 1e-5 as torch's BatchNorm1d), and their cross-correlation
//
//   C_ij = (1/N) sum_b ẑ1_bi ẑ2_bj
//
// is driven to the identity:
//
//   L = sum_i (1 - C_ii)²  +  λ sum_i sum_{j != i} C_ij²
//       invariance            redundancy reduction
import * as tf from '../core/tf.js';
import type { Scalar, Tensor2D } from '@tensorflow/tfjs-core';

/** torch's BatchNorm1d default ε. */
const BN_EPS = 1e-5;

/** (z - mean) / sqrt(var + ε) per column, over the batch (rows); the variance is the biased one, as BN's. */
export function standardizeBatch(z: Tensor2D, eps = BN_EPS): Tensor2D {
  return tf.tidy(() => {
    const { mean, variance } = tf.moments(z, 0, true);
    return tf.div(tf.sub(z, mean), tf.sqrt(tf.add(variance, eps))) as Tensor2D;
  });
}

/** C [D, D]: the cross-correlation of the batch-standardised z1 and z2 ([N, D] each). */
export function crossCorrelation(z1: Tensor2D, z2: Tensor2D): Tensor2D {
  if (z1.rank !== 2 || !tf.util.arraysEqual(z1.shape, z2.shape)) {
    throw new Error(`crossCorrelation: z1 and z2 must be [N, D] of the same shape, got [${z1.shape}] and [${z2.shape}]`);
  }
  if (z1.shape[0] < 2) throw new Error(`crossCorrelation: needs at least 2 samples to standardise over, got ${z1.shape[0]}`);
  return tf.tidy(() => tf.div(tf.matMul(standardizeBatch(z1), standardizeBatch(z2), true, false), z1.shape[0]) as Tensor2D);
}

export interface BarlowTwinsTerms {
  /** invariance + λ · redundancy. */
  loss: Scalar;
  /** sum_i (1 - C_ii)². */
  invariance: Scalar;
  /** sum_{i != j} C_ij², unweighted. */
  redundancy: Scalar;
}

/** Eq. 1 for the two views' embeddings z1, z2 [N, D] with off-diagonal weight `lambda`. */
export function barlowTwinsLoss(z1: Tensor2D, z2: Tensor2D, lambda: number): BarlowTwinsTerms {
  if (!(lambda >= 0)) throw new Error(`barlowTwinsLoss: lambda must be >= 0, got ${lambda}`);
  return tf.tidy(() => {
    const c = crossCorrelation(z1, z2);
    const eye = tf.eye(c.shape[0]);
    const invariance = tf.sum(tf.square(tf.sub(1, tf.sum(tf.mul(c, eye), 1)))) as Scalar;
    const redundancy = tf.sum(tf.square(tf.mul(c, tf.sub(1, eye)))) as Scalar;
    return { loss: tf.add(invariance, tf.mul(redundancy, lambda)) as Scalar, invariance, redundancy };
  });
}
