// Sinkhorn-Knopp codes (Cuturi 2013), in the form SwAV uses (Caron et al.
// 2020, section 3.1 and its `distributed_sinkhorn`): the soft assignment Q of
// B samples to K prototypes that maximises Tr(Qᵀ S) + ε H(Q) under the
// equipartition constraint that every prototype gets 1/K of the mass and
// every sample 1/B:
//
//   Q = exp(S / ε) / sum(exp(S / ε))
//   repeat n times:  each prototype's column to 1/K, then each sample's row to 1/B
//   codes = B·Q                                 each sample's row sums to 1
//
// The last step of every iteration fixes the rows, so the sample marginals are
// exact and the prototype marginals approach 1/K with the iterations (SwAV:
// 3). The codes are targets: computed without gradient.
import * as tf from '../core/tf.js';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import { noGrad } from '../nn/module.js';

export interface SinkhornOptions {
  /** ε, the entropy weight: smaller is closer to a hard assignment. SwAV: 0.05. */
  epsilon?: number;
  /** Normalisation rounds. SwAV: 3. */
  iterations?: number;
}

/** Codes [B, K] (rows sum to 1) for scores [B, K] (sample-prototype similarities); off the gradient tape. */
export function sinkhornKnopp(scores: Tensor2D, { epsilon = 0.05, iterations = 3 }: SinkhornOptions = {}): Tensor2D {
  if (scores.rank !== 2 || scores.shape[0] === 0 || scores.shape[1] === 0) {
    throw new Error(`sinkhornKnopp: scores must be a non-empty [B, K], got [${scores.shape}]`);
  }
  if (!(epsilon > 0)) throw new Error(`sinkhornKnopp: epsilon must be > 0, got ${epsilon}`);
  if (!(Number.isInteger(iterations) && iterations >= 1)) throw new Error(`sinkhornKnopp: iterations must be an integer >= 1, got ${iterations}`);
  const [B, K] = scores.shape;
  return noGrad(() =>
    tf.tidy(() => {
      // Shifting by the maximum keeps exp() finite at small ε; it cancels in the first normalisation.
      let q = tf.exp(tf.div(tf.sub(scores, tf.max(scores)), epsilon));
      q = tf.div(q, tf.sum(q));
      for (let i = 0; i < iterations; i++) {
        q = tf.div(q, tf.mul(tf.sum(q, 0, true), K));
        q = tf.div(q, tf.mul(tf.sum(q, 1, true), B));
      }
      return tf.mul(q, B) as Tensor2D;
    }),
  );
}
