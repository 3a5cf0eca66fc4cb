// The data side of a run: the training set a config names, the held-out set
// for online kNN, and loader batches as tensors.
import * as tf from '../core/tf.js';
import type { Tensor, Tensor4D } from '@tensorflow/tfjs-core';
import {
  FASHION_MNIST_STATS,
  loadFashionMnist,
  loadImageFolder,
  takeImages,
  type Batch,
  type ImageSet,
  type RecipeOptions,
} from '../data/index.js';
import type { TensorBatch } from '../methods/method.js';
import type { DataInfo } from '../io/checkpoint.js';
import type { RunConfig } from './config.js';

const FOLDER_PREFIX = 'folder:';

/** The training images `config.dataset` names, the first `limit` of them when set. */
export async function loadTrainingSet(dataset: RunConfig['dataset']): Promise<ImageSet> {
  if (dataset.name === 'fashion-mnist') return loadFashionMnist({ dir: dataset.dir, split: 'train', limit: dataset.limit });
  const folder = await loadImageFolder(dataset.name.slice(FOLDER_PREFIX.length), { size: dataset.size, channels: 3 });
  return dataset.limit ? takeImages(folder, dataset.limit) : folder;
}

/** Fashion-MNIST's test split; image folders have none (online kNN then holds out part of the folder). */
export function loadTestSet(dataset: RunConfig['dataset'], limit: number): ImageSet | null {
  if (dataset.name !== 'fashion-mnist') return null;
  return loadFashionMnist({ dir: dataset.dir, split: 'test', limit });
}

export function dataInfo(set: ImageSet): DataInfo {
  let max = -1;
  for (let i = 0; i < set.labels.length; i++) max = Math.max(max, set.labels[i]!);
  return { channels: set.channels, numClasses: Math.max(set.classNames?.length ?? 0, max + 1) };
}

/**
 * View size and normalisation for the recipes of src/data/recipes.ts: grey
 * images get Fashion-MNIST's statistics, colour sets none (we do not know
 * theirs). src/eval/features.ts's defaultNormalization makes the same choice,
 * so evaluation sees what training saw.
 */
export function recipeOptions(config: RunConfig, channels: number): RecipeOptions {
  return { size: config.dataset.size, normalize: channels === 1 ? FASHION_MNIST_STATS : null };
}

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
