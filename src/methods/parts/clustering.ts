// DeepCluster's clustering step (Caron et al. 2018, section 3 and the
// authors' clustering.py, which calls faiss): PCA-whitening to `dim`
// dimensions, L2-normalised rows, k-means by Lloyd's iterations from k random
// points, empty clusters re-seeded by splitting a large one (faiss's rule),
// and the sampler that visits the pseudo-classes uniformly.
//
// k-means runs its assignment step as one matmul on the run's backend
// (|x - c|² = |x|² - 2 x·c + |c|², the |x|² term is the same for every c):
// ml-kmeans took 0.75 s per iteration and 62 s for k-means++ seeding on
// 20,000 x 256 points, k = 100, which an epoch-start step cannot afford.
// The covariance is one matmul too; its eigenvectors come from ml-matrix.
import { EigenvalueDecomposition, Matrix } from 'ml-matrix';
import * as tf from '../../core/tf.js';
import type { RandomStream } from '../../core/random.js';
import type { Tensor2D } from '@tensorflow/tfjs-core';

/** Row-major [n, dim] points. */
export interface Points {
  data: Float32Array;
  n: number;
  dim: number;
}

function checkPoints(where: string, { data, n, dim }: Points): void {
  if (!(Number.isInteger(n) && n > 0 && Number.isInteger(dim) && dim > 0)) throw new Error(`${where}: needs n, dim > 0, got ${n} x ${dim}`);
  if (data.length !== n * dim) throw new Error(`${where}: ${data.length} values are not ${n} x ${dim}`);
}

/**
 * The centred points projected on the covariance's `outDim` leading
 * eigenvectors, each coordinate divided by sqrt(eigenvalue + eps): whitened
 * (identity covariance), as faiss's PCAMatrix with eigen_power -0.5.
 */
export function pcaWhiten(points: Points, outDim: number, eps = 1e-5): Points {
  checkPoints('pcaWhiten', points);
  const { n, dim } = points;
  if (!(Number.isInteger(outDim) && outDim >= 1 && outDim <= dim)) throw new Error(`pcaWhiten: outDim must be 1-${dim}, got ${outDim}`);
  const mean = new Float64Array(dim);
  for (let i = 0; i < n; i++) for (let j = 0; j < dim; j++) mean[j]! += points.data[i * dim + j]!;
  for (let j = 0; j < dim; j++) mean[j]! /= n;
  const centred = new Float32Array(points.data.length);
  for (let i = 0; i < n; i++) for (let j = 0; j < dim; j++) centred[i * dim + j] = points.data[i * dim + j]! - mean[j]!;
  const cov = tf.tidy(() => {
    const x = tf.tensor2d(centred, [n, dim]);
    return tf.div(tf.matMul(x, x, true, false), n).dataSync() as Float32Array;
  });
  const rows = Array.from({ length: dim }, (_, i) => Array.from(cov.subarray(i * dim, (i + 1) * dim)));
  const evd = new EigenvalueDecomposition(new Matrix(rows), { assumeSymmetric: true });
  const values = evd.realEigenvalues;
  const vectors = evd.eigenvectorMatrix;
  const order = values.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0]).slice(0, outDim);
  // The projection, [dim, outDim], with the whitening scale folded in.
  const projection = new Float32Array(dim * outDim);
  order.forEach(([value, column], k) => {
    const scale = 1 / Math.sqrt(Math.max(value, 0) + eps);
    for (let j = 0; j < dim; j++) projection[j * outDim + k] = vectors.get(j, column) * scale;
  });
  const data = tf.tidy(() => tf.matMul(tf.tensor2d(centred, [n, dim]), tf.tensor2d(projection, [dim, outDim])).dataSync() as Float32Array);
  return { data: Float32Array.from(data), n, dim: outDim };
}

export interface KMeansResult {
  /** Cluster of each point. */
  assignments: Int32Array;
  /** [k, dim] row-major. */
  centroids: Float32Array;
  /** Mean squared distance of the points to their centroids, after the last assignment. */
  inertia: number;
  /** Times an empty cluster was re-seeded, over all iterations. */
  emptyReseeded: number;
}

/** Nearest centroid of every point, and the mean squared distance. */
function assign(points: Tensor2D, centroids: Float32Array, k: number, dim: number): { assignments: Int32Array; inertia: number } {
  return tf.tidy(() => {
    const c = tf.tensor2d(centroids, [k, dim]);
    // argmin |x - c|² = argmax (2 x·c - |c|²).
    const score = tf.sub(tf.mul(tf.matMul(points, c, false, true), 2), tf.sum(tf.square(c), 1));
    const assignments = tf.argMax(score, 1).dataSync() as Int32Array;
    const best = tf.max(score, 1);
    const inertia = tf.mean(tf.sub(tf.sum(tf.square(points), 1), best)).dataSync()[0]!;
    return { assignments: Int32Array.from(assignments), inertia: Math.max(0, inertia) };
  });
}

/**
 * Lloyd's k-means from k distinct random points. After each assignment, an
 * empty cluster takes a copy of a cluster drawn with probability
 * proportional to (size - 1), both copies nudged apart by ±1/1024 relative,
 * and the two split its points (faiss's rule; DeepCluster's k is large, so
 * some clusters do empty).
 */
export function kMeans(points: Points, k: number, { iterations = 20, rng }: { iterations?: number; rng: RandomStream }): KMeansResult {
  checkPoints('kMeans', points);
  const { data, n, dim } = points;
  if (!(Number.isInteger(k) && k >= 1 && k <= n)) throw new Error(`kMeans: k must be 1-${n} (the number of points), got ${k}`);
  if (!(Number.isInteger(iterations) && iterations >= 1)) throw new Error(`kMeans: iterations must be a positive integer, got ${iterations}`);
  const centroids = new Float32Array(k * dim);
  const first = rng.permutation(n).subarray(0, k);
  first.forEach((p, c) => centroids.set(data.subarray(p * dim, (p + 1) * dim), c * dim));
  const x = tf.tensor2d(data, [n, dim]);
  let emptyReseeded = 0;
  try {
    let { assignments, inertia } = assign(x, centroids, k, dim);
    for (let it = 0; it < iterations; it++) {
      const sums = new Float64Array(k * dim);
      const counts = new Int32Array(k);
      for (let i = 0; i < n; i++) {
        const c = assignments[i]!;
        counts[c]!++;
        for (let j = 0; j < dim; j++) sums[c * dim + j]! += data[i * dim + j]!;
      }
      for (let c = 0; c < k; c++) if (counts[c]! > 0) for (let j = 0; j < dim; j++) centroids[c * dim + j] = sums[c * dim + j]! / counts[c]!;
      emptyReseeded += splitIntoEmpty(centroids, counts, dim, rng);
      ({ assignments, inertia } = assign(x, centroids, k, dim));
    }
    return { assignments, centroids, inertia, emptyReseeded };
  } finally {
    x.dispose();
  }
}

/** Re-seeds every empty cluster from a split of a large one; returns how many. */
function splitIntoEmpty(centroids: Float32Array, counts: Int32Array, dim: number, rng: RandomStream): number {
  const k = counts.length;
  let reseeded = 0;
  for (let empty = 0; empty < k; empty++) {
    if (counts[empty] !== 0) continue;
    // A cluster with probability (size - 1) / sum(size - 1): singletons are never split.
    const weights = Array.from(counts, (c) => Math.max(0, c - 1));
    let r = rng.uniform() * weights.reduce((a, b) => a + b, 0);
    let donor = 0;
    while (donor < k - 1 && r >= weights[donor]!) r -= weights[donor++]!;
    for (let j = 0; j < dim; j++) {
      const v = centroids[donor * dim + j]!;
      const nudge = j % 2 === 0 ? 1 + 1 / 1024 : 1 - 1 / 1024;
      centroids[empty * dim + j] = v * nudge;
      centroids[donor * dim + j] = v * (2 - nudge);
    }
    const half = Math.floor(counts[donor]! / 2);
    counts[empty] = half;
    counts[donor]! -= half;
    reseeded++;
  }
  return reseeded;
}

/**
 * An epoch's visiting order for DeepCluster (its UnifLabelSampler): every
 * non-empty pseudo-class gets floor(count / classes) + 1 draws (without
 * replacement while the class has enough images), shuffled, cut to `count`.
 * Large clusters then stop dominating the classifier's training.
 */
export function uniformOverLabels(labels: Int32Array, classes: number, rng: RandomStream): Int32Array {
  const members: number[][] = Array.from({ length: classes }, () => []);
  labels.forEach((l, i) => {
    if (!(l >= 0 && l < classes)) throw new Error(`uniformOverLabels: label ${l} of image ${i} is outside 0-${classes - 1}`);
    members[l]!.push(i);
  });
  const nonEmpty = members.filter((m) => m.length > 0);
  const per = Math.floor(labels.length / nonEmpty.length) + 1;
  const drawn: number[] = [];
  for (const m of nonEmpty) {
    if (m.length >= per) {
      const p = rng.permutation(m.length);
      for (let i = 0; i < per; i++) drawn.push(m[p[i]!]!);
    } else {
      for (let i = 0; i < per; i++) drawn.push(m[rng.int(0, m.length - 1)]!);
    }
  }
  const order = rng.permutation(drawn.length);
  return Int32Array.from({ length: labels.length }, (_, i) => drawn[order[i]!]!);
}
