// The two views of a two-view pipeline (data/recipes.ts twoViewPipeline) as
// one batch, so BN normalises over both, as the papers' single forward pass.
import * as tf from '../../core/tf.js';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import type { TensorBatch } from '../method.js';

/** view1's rows then view2's: [2N, H, W, C]. */
export function bothViews(batch: TensorBatch): Tensor4D {
  const { view1, view2 } = batch.views;
  if (!view1 || !view2) throw new Error(`two-view method: the batch holds views [${Object.keys(batch.views).join(', ')}], not view1 and view2`);
  return tf.concat([view1, view2], 0);
}
