// Two tensor helpers every embedding loss needs, written once.
import * as tf from '../core/tf.js';
import type { Tensor } from '@tensorflow/tfjs-core';
import { noGrad } from '../nn/module.js';

/** x / max(||x||, eps) along `axis` (torch's F.normalize): a zero row stays zero instead of NaN. */
export function l2Normalize<T extends Tensor>(x: T, axis = -1, eps = 1e-12): T {
  return tf.tidy(() => tf.div(x, tf.maximum(tf.norm(x, 'euclidean', axis, true), eps)));
}

/** A copy of `x` the gradient tape does not see, so gradients stop here (torch's `.detach()`). */
export function detach<T extends Tensor>(x: T): T {
  return noGrad(() => tf.clone(x));
}
