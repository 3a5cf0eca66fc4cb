// Loader batches as tensors, for the method's loss.
import * as tf from '../core/tf.js';
import type { Tensor, Tensor4D } from '@tensorflow/tfjs-core';
import type { Batch } from '../data/index.js';
import type { TensorBatch } from '../methods/method.js';

/** A loader batch as tensors; `.box` aux arrays become [n, 4]. Dispose with `disposeTensorBatch`. */
export function toTensorBatch(batch: Batch): TensorBatch {
  const views: Record<string, Tensor4D> = {};
  for (const [name, t] of Object.entries(batch.tensors)) views[name] = tf.tensor4d(t.data, t.shape);
  const aux: Record<string, Tensor> = {};
  for (const [name, a] of Object.entries(batch.aux)) {
    const dtype = a instanceof Int32Array ? 'int32' : 'float32';
    aux[name] = name.endsWith('.box') ? tf.tensor2d(a, [a.length / 4, 4], dtype) : tf.tensor1d(a, dtype);
  }
  return { views, aux, labels: tf.tensor1d(batch.labels, 'int32'), indices: batch.indices };
}

export function disposeTensorBatch(b: TensorBatch): void {
  tf.dispose([...Object.values(b.views), ...Object.values(b.aux), b.labels]);
}
