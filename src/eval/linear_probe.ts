// Linear evaluation on frozen features: multinomial logistic regression on
// standardised features, trained with SGD + momentum under a cosine rate, as
// the linear protocol of MoCo/SimCLR but on cached features, so an epoch is
// a few matrix products instead of a pass through the backbone. The gradient
// of the mean softmax cross-entropy is written out, (p - y) / B, rather than
// taped: it is exact and keeps each step to a handful of kernels.
import * as tf from '../core/tf.js';
import type { Tensor1D, Tensor2D, Variable } from '@tensorflow/tfjs-core';
import { Rng } from '../core/random.js';
import { accuracy, type Accuracy, type KnnPrediction } from './knn.js';

export interface LabeledFeatures {
  /** rows x dim, row-major. */
  features: Float32Array;
  labels: Int32Array;
}

export interface LinearProbeOptions {
  numClasses: number;
  epochs?: number;
  batchSize?: number;
  /** Peak learning rate, decayed to 0 by a per-step cosine. */
  lr?: number;
  momentum?: number;
  weightDecay?: number;
  /** Fixes the order of the mini-batches; the weights start at zero. */
  seed?: number;
  onEpoch?: (epoch: number, meanLoss: number) => void;
}

export interface LinearProbeResult {
  test: Accuracy;
  train: Accuracy;
  /** Mean training loss of each epoch. */
  losses: number[];
}

/** Per-dimension mean and standard deviation of the training rows. */
export function featureStatistics(features: Float32Array, dim: number): { mean: Float32Array; std: Float32Array } {
  const n = features.length / dim;
  const mean = new Float64Array(dim);
  const sq = new Float64Array(dim);
  for (let o = 0; o < features.length; o += dim) {
    for (let j = 0; j < dim; j++) mean[j]! += features[o + j]!;
  }
  for (let j = 0; j < dim; j++) mean[j]! /= Math.max(n, 1);
  for (let o = 0; o < features.length; o += dim) {
    for (let j = 0; j < dim; j++) {
      const d = features[o + j]! - mean[j]!;
      sq[j]! += d * d;
    }
  }
  // A constant dimension (a dead ReLU channel) keeps std 1, so it stays 0 rather than exploding.
  const std = Float32Array.from(sq, (s) => {
    const sd = Math.sqrt(s / Math.max(n, 1));
    return sd > 1e-6 ? sd : 1;
  });
  return { mean: Float32Array.from(mean), std };
}

function check(set: LabeledFeatures, dim: number, numClasses: number, what: string): number {
  if (set.features.length % dim !== 0) throw new Error(`linear probe: ${what} features are not a multiple of dim ${dim}`);
  const n = set.features.length / dim;
  if (set.labels.length !== n) throw new Error(`linear probe: ${what} has ${n} rows but ${set.labels.length} labels`);
  for (let i = 0; i < n; i++) {
    const l = set.labels[i]!;
    if (!(l >= 0 && l < numClasses)) throw new Error(`linear probe: ${what} label ${l} at ${i} is outside 0..${numClasses - 1}`);
  }
  return n;
}

/** Trains the classifier on `train` and reports top-1/top-5 on `test` (and on `train`). */
export function trainLinearProbe(
  train: LabeledFeatures,
  test: LabeledFeatures,
  dim: number,
  opts: LinearProbeOptions,
): LinearProbeResult {
  const { numClasses, epochs = 30, batchSize = 256, lr = 0.1, momentum = 0.9, weightDecay = 0, seed = 0, onEpoch } = opts;
  if (!(Number.isInteger(dim) && dim > 0)) throw new Error(`linear probe: dim must be a positive integer, got ${dim}`);
  if (!(Number.isInteger(numClasses) && numClasses >= 2)) throw new Error(`linear probe: numClasses must be an integer >= 2, got ${numClasses}`);
  if (!(Number.isInteger(epochs) && epochs >= 1)) throw new Error(`linear probe: epochs must be a positive integer, got ${epochs}`);
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new Error(`linear probe: batchSize must be a positive integer, got ${batchSize}`);
  if (!(lr > 0)) throw new Error(`linear probe: lr must be positive, got ${lr}`);
  const n = check(train, dim, numClasses, 'train');
  check(test, dim, numClasses, 'test');
  if (n === 0) throw new Error('linear probe: the training set is empty');

  const { mean, std } = featureStatistics(train.features, dim);
  const standardize = (f: Float32Array): Tensor2D =>
    tf.tidy(() => tf.div(tf.sub(tf.tensor2d(f, [f.length / dim, dim]), tf.tensor1d(mean)), tf.tensor1d(std)) as Tensor2D);

  const x = standardize(train.features);
  const y = tf.tensor1d(train.labels, 'int32');
  const weight = zeroVariable([dim, numClasses]);
  const bias = zeroVariable([numClasses]);
  const vWeight = zeroVariable([dim, numClasses]);
  const vBias = zeroVariable([numClasses]);
  const stepsPerEpoch = Math.ceil(n / batchSize);
  const totalSteps = epochs * stepsPerEpoch;
  const losses: number[] = [];
  const order = Rng.seeded(seed);
  try {
    let step = 0;
    for (let epoch = 0; epoch < epochs; epoch++) {
      const perm = order.split(epoch).permutation(n);
      const epochLoss: tf.Scalar[] = [];
      for (let start = 0; start < n; start += batchSize) {
        const rate = 0.5 * lr * (1 + Math.cos((Math.PI * step) / totalSteps));
        const batch = perm.subarray(start, Math.min(n, start + batchSize));
        epochLoss.push(
          tf.tidy(() => {
            const idx = tf.tensor1d(batch, 'int32');
            const xb = tf.gather(x, idx) as Tensor2D;
            const yb = tf.oneHot(tf.gather(y, idx) as Tensor1D, numClasses);
            const logits = tf.add(tf.matMul(xb, weight), bias) as Tensor2D;
            const logp = tf.logSoftmax(logits);
            const loss = tf.neg(tf.mean(tf.sum(tf.mul(yb, logp), 1)));
            const g = tf.div(tf.sub(tf.exp(logp), yb), batch.length) as Tensor2D;
            let gWeight: tf.Tensor = tf.matMul(xb, g, true, false);
            if (weightDecay > 0) gWeight = tf.add(gWeight, tf.mul(weight, weightDecay));
            // PyTorch's SGD: v = m v + g; w -= lr v.
            vWeight.assign(tf.add(tf.mul(vWeight, momentum), gWeight));
            vBias.assign(tf.add(tf.mul(vBias, momentum), tf.sum(g, 0)));
            weight.assign(tf.sub(weight, tf.mul(vWeight, rate)));
            bias.assign(tf.sub(bias, tf.mul(vBias, rate)));
            return tf.mul(loss, batch.length) as tf.Scalar;
          }),
        );
        step++;
      }
      const total = tf.tidy(() => tf.addN(epochLoss));
      const meanLoss = total.dataSync()[0]! / n;
      total.dispose();
      tf.dispose(epochLoss);
      losses.push(meanLoss);
      onEpoch?.(epoch, meanLoss);
    }
    const classify = (xs: Tensor2D): KnnPrediction => rankClasses(tf.tidy(() => tf.add(tf.matMul(xs, weight), bias)) as Tensor2D);
    const trainAccuracy = accuracy(classify(x), train.labels);
    const xt = standardize(test.features);
    let testAccuracy: Accuracy;
    try {
      testAccuracy = accuracy(classify(xt), test.labels);
    } finally {
      xt.dispose();
    }
    return { test: testAccuracy, train: trainAccuracy, losses };
  } finally {
    tf.dispose([x, y, weight, bias, vWeight, vBias]);
  }
}

/** A non-trainable variable of zeros (tf.variable keeps its initial tensor alive, so that is freed). */
function zeroVariable(shape: number[]): Variable {
  const init = tf.zeros(shape);
  const v = tf.variable(init, false);
  init.dispose();
  return v;
}

/** Top-1 and top-5 classes per row of `scores` (disposed here). */
function rankClasses(scores: Tensor2D): KnnPrediction {
  const [rows, classes] = scores.shape;
  const s = scores.dataSync();
  scores.dispose();
  const top1 = new Int32Array(rows);
  const top5 = new Int32Array(rows * 5).fill(-1);
  const order = Array.from({ length: classes }, (_, c) => c);
  for (let i = 0; i < rows; i++) {
    const o = i * classes;
    order.sort((a, b) => s[o + b]! - s[o + a]! || a - b);
    top1[i] = order[0]!;
    for (let r = 0; r < Math.min(5, classes); r++) top5[i * 5 + r] = order[r]!;
  }
  return { top1, top5 };
}
