// BYOL's regression loss (Grill et al. 2020, eq. 2): the mean squared error
// between the L2-normalised prediction and target,
//   ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z),
// with the target treated as a constant (stop-gradient on the target branch).
import * as tf from '../core/tf.js';
import type { Scalar, Tensor2D } from '@tensorflow/tfjs-core';
import { detach, l2Normalize } from './normalize.js';

/** Mean over the batch of 2 - 2 cos(p_i, z_i); `z` is detached. p, z: [N, D]. */
export function negCosine(p: Tensor2D, z: Tensor2D): Scalar {
  if (p.rank !== 2 || !tf.util.arraysEqual(p.shape, z.shape)) {
    throw new Error(`negCosine: p and z must be [N, D] of the same shape, got [${p.shape}] and [${z.shape}]`);
  }
  if (p.shape[0] === 0) throw new Error('negCosine: empty batch');
  return tf.tidy(() => {
    const cos = tf.sum(tf.mul(l2Normalize(p, 1), l2Normalize(detach(z), 1)), 1);
    return tf.mean(tf.sub(2, tf.mul(2, cos))) as Scalar;
  });
}
