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
import * as tf from '../tf.js';
import type { Scalar, Tensor2D } from '@tensorflow/tfjs-core';

/** The [N, 1+K] logits of InfoNCE: column 0 is q·k+, then q·neg_i; all divided by T. */
export function infoNceLogits(q: Tensor2D, k: Tensor2D, negatives: Tensor2D, temperature: number): Tensor2D {
  const positive = tf.sum(tf.mul(q, k), 1, true);
  const negative = tf.matMul(q, negatives, false, true);
  return tf.div(tf.concat([positive, negative], 1), temperature);
}

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
    if (negatives) {
      const logits = infoNceLogits(q, k, negatives, temperature);
      // -log softmax(logits)[0], averaged: logsumexp - positive logit.
      return tf.mean(tf.sub(tf.logSumExp(logits, 1), tf.squeeze(tf.slice(logits, [0, 0], [-1, 1]), [1])));
    }
    const logits = tf.div(tf.matMul(q, k, false, true), temperature);
    const diagonal = tf.sum(tf.mul(logits, tf.eye(q.shape[0])), 1);
    return tf.mean(tf.sub(tf.logSumExp(logits, 1), diagonal));
  }) as Scalar;
}
