// InfoNCE (van den Oord et al. 2018), in the form MoCo uses (He et al. 2020,
// eq. 1):
//
//   L_q = -log( exp(q·k+ / T) / (exp(q·k+ / T) + sum_i exp(q·k_i / T)) )
//
// q and k+ are L2-normalised [N, D] rows (the query and its positive key);
// the k_i are the negatives. Written as a (1+K)-way softmax cross-entropy with
// the positive at index 0: logits = [q·k+, q·negᵀ] / T. Every method with a
// key queue (MoCo v1/v2, DetCo) or in-batch negatives composes its loss
// from this one function.
import * as tf from '../core/tf.js';
import type { Scalar, Tensor2D } from '@tensorflow/tfjs-core';
import { rowLogSumExp } from './log_sum_exp.js';

/**
 * Mean InfoNCE loss over the N queries. With `negatives` [K, D] (a key queue)
 * each query is contrasted with its own key against the K negatives. With
 * `negatives` null the other N-1 keys of the batch are the negatives
 * (logits q·kᵀ, positives on the diagonal).
 */
export function infoNCE(q: Tensor2D, k: Tensor2D, negatives: Tensor2D | null, temperature: number): Scalar {
  if (q.rank !== 2 || k.rank !== 2 || !tf.util.arraysEqual(q.shape, k.shape)) {
    throw new Error(`infoNCE: q and k must both be [N, D], got [${q.shape}] and [${k.shape}]`);
  }
  if (negatives && (negatives.rank !== 2 || negatives.shape[1] !== q.shape[1])) {
    throw new Error(`infoNCE: negatives must be [K, ${q.shape[1]}], got [${negatives.shape}]`);
  }
  if (!(temperature > 0)) throw new Error(`infoNCE: temperature must be > 0, got ${temperature}`);
  return tf.tidy(() => {
    // -log softmax(logits)[positive], averaged: logsumexp - the positive logit.
    const positive = tf.div(tf.sum(tf.mul(q, k), 1, true), temperature) as Tensor2D;
    const lse = negatives
      ? rowLogSumExp(positive, tf.div(tf.matMul(q, negatives, false, true), temperature) as Tensor2D)
      : rowLogSumExp(tf.div(tf.matMul(q, k, false, true), temperature) as Tensor2D); // positives on the diagonal
    return tf.mean(tf.sub(lse, tf.reshape(positive, [q.shape[0]])));
  }) as Scalar;
}
