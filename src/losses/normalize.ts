// Two tensor helpers every embedding loss needs, written once.
import * as tf from '../core/tf.js';
import type { Tensor } from '@tensorflow/tfjs-core';
import { noGrad } from '../nn/module.js';

/**
 * x / sqrt(max(||x||², eps²)) along `axis`: torch's F.normalize. The clamp
 * sits under the square root, so a zero row stays zero with a finite
 * gradient (the root's gradient at 0 is infinite, and one such row would turn
 * every weight into NaN).
 */
export function l2Normalize<T extends Tensor>(x: T, axis = -1, eps = 1e-12): T {
  return tf.tidy(() => tf.div(x, tf.sqrt(tf.maximum(tf.sum(tf.square(x), axis, true), eps * eps))));
}

/** A copy of `x` the gradient tape does not see, so gradients stop here (torch's `.detach()`). */
export function detach<T extends Tensor>(x: T): T {
  return noGrad(() => tf.clone(x));
}

/** Host rows [n, dim] scaled to unit L2 norm (a zero row stays zero): features before a cosine search or k-means. */
export function l2NormalizeRows(features: Float32Array, dim: number): Float32Array {
  if (!(Number.isInteger(dim) && dim > 0) || features.length % dim !== 0) {
    throw new Error(`l2NormalizeRows: ${features.length} values are not rows of ${dim}`);
  }
  const out = new Float32Array(features.length);
  for (let o = 0; o < features.length; o += dim) {
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += features[o + j]! * features[o + j]!;
    const inv = ss > 0 ? 1 / Math.sqrt(ss) : 0;
    for (let j = 0; j < dim; j++) out[o + j] = features[o + j]! * inv;
  }
  return out;
}
