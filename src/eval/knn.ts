// k-nearest-neighbour classification on L2-normalised features, the standard
// quick read-out of a self-supervised representation. Two protocols:
// - weighted (Wu et al. 2018, InstDisc eq. 8; MoCo's and solo-learn's
//   monitor): the k = 200 nearest by cosine similarity vote exp(s / T), T = 0.1;
// - majority: the k = 20 nearest vote one each (ties go to the class whose
//   voters are more similar in total).
// Similarities are blocked matrix products through tfjs (the native backend's
// oneDNN GEMM), so memory stays bounded at `blockFloats` per block whatever
// the size of the memory bank; the top-k selection is a size-k heap per row.
import * as tf from '../core/tf.js';
import { l2NormalizeRows } from '../losses/normalize.js';
import type { Tensor2D } from '@tensorflow/tfjs-core';

export interface KnnOptions {
  k: number;
  /** Vote weight exp(sim / temperature) when `weighted`. */
  temperature?: number;
  weighted: boolean;
  numClasses: number;
}

export interface KnnPrediction {
  /** Predicted class per query. */
  top1: Int32Array;
  /** The 5 best classes per query, best first, row-major [queries, 5]; -1 pads when numClasses < 5. */
  top5: Int32Array;
}

export interface Accuracy {
  /** Percent. */
  top1: number;
  top5: number;
}

/** Similarity entries per block: 8M floats (32 MB). */
const DEFAULT_BLOCK_FLOATS = 8 * 1024 * 1024;

export { l2NormalizeRows } from '../losses/normalize.js';

function checkRows(a: Float32Array, dim: number, what: string): number {
  if (!(Number.isInteger(dim) && dim > 0)) throw new Error(`knn: dim must be a positive integer, got ${dim}`);
  if (a.length % dim !== 0) throw new Error(`knn: ${what} has ${a.length} values, not a multiple of dim ${dim}`);
  return a.length / dim;
}

export interface Neighbours {
  k: number;
  /** Cosine similarity of each query's k nearest, best first: [queries, k]. */
  similarities: Float32Array;
  /** Their rows in the memory: [queries, k]. */
  indices: Int32Array;
}

/**
 * The k most cosine-similar memory rows of every query (both are normalised
 * here, so raw features are fine). Ties keep the lower memory index.
 */
export function knnNeighbours(
  memory: Float32Array,
  queries: Float32Array,
  dim: number,
  k: number,
  { blockFloats = DEFAULT_BLOCK_FLOATS }: { blockFloats?: number } = {},
): Neighbours {
  const n = checkRows(memory, dim, 'memory');
  const q = checkRows(queries, dim, 'queries');
  if (n === 0) throw new Error('knn: the memory is empty');
  if (!(Number.isInteger(k) && k >= 1)) throw new Error(`knn: k must be a positive integer, got ${k}`);
  const kk = Math.min(k, n);
  const similarities = new Float32Array(q * kk);
  const indices = new Int32Array(q * kk);
  const heapVal = new Float32Array(kk);
  const heapIdx = new Int32Array(kk);
  forEachSimilarityBlock(memory, queries, dim, Math.max(1, Math.floor(blockFloats / n)), (start, b, s) => {
    for (let r = 0; r < b; r++) {
      topK(s, r * n, n, kk, heapVal, heapIdx);
      similarities.set(heapVal, (start + r) * kk);
      indices.set(heapIdx, (start + r) * kk);
    }
  });
  return { k: kk, similarities, indices };
}

/**
 * Dot products of every query row with every memory row, `rows` queries at a
 * time (one [rows, memory] block on the host, so memory use is bounded):
 * `visit(start, count, block)` sees queries start .. start + count.
 */
export function forEachDotProductBlock(
  memory: Float32Array,
  queries: Float32Array,
  dim: number,
  rows: number,
  visit: (start: number, count: number, block: Float32Array) => void,
): void {
  const n = memory.length / dim;
  const q = queries.length / dim;
  const bank = tf.tensor2d(memory, [n, dim]);
  try {
    for (let start = 0; start < q; start += rows) {
      const b = Math.min(rows, q - start);
      const dots = tf.tidy(() => tf.matMul(tf.tensor2d(queries.subarray(start * dim, (start + b) * dim), [b, dim]), bank as Tensor2D, false, true));
      let s: Float32Array;
      try {
        s = dots.dataSync() as Float32Array;
      } finally {
        dots.dispose();
      }
      visit(start, b, s);
    }
  } finally {
    bank.dispose();
  }
}

/** forEachDotProductBlock on L2-normalised rows: cosine similarities. */
export function forEachSimilarityBlock(
  memory: Float32Array,
  queries: Float32Array,
  dim: number,
  rows: number,
  visit: (start: number, count: number, block: Float32Array) => void,
): void {
  forEachDotProductBlock(l2NormalizeRows(memory, dim), l2NormalizeRows(queries, dim), dim, rows, visit);
}

/** a ranks below b: smaller value, or equal value and larger index. */
function below(va: number, ia: number, vb: number, ib: number): boolean {
  return va < vb || (va === vb && ia > ib);
}

/** The k largest of s[offset .. offset + n), best first, into val/idx (a min-heap, then a sort). */
function topK(s: Float32Array, offset: number, n: number, k: number, val: Float32Array, idx: Int32Array): void {
  for (let i = 0; i < k; i++) {
    val[i] = s[offset + i]!;
    idx[i] = i;
    siftUp(val, idx, i);
  }
  for (let i = k; i < n; i++) {
    const v = s[offset + i]!;
    // Later indices lose ties, so only a strictly larger value enters.
    if (v > val[0]!) {
      val[0] = v;
      idx[0] = i;
      siftDown(val, idx, k);
    }
  }
  // Heap sort: repeatedly move the minimum to the end, leaving best first.
  for (let end = k - 1; end > 0; end--) {
    swap(val, idx, 0, end);
    siftDown(val, idx, end);
  }
}

function swap(val: Float32Array, idx: Int32Array, a: number, b: number): void {
  const v = val[a]!;
  val[a] = val[b]!;
  val[b] = v;
  const i = idx[a]!;
  idx[a] = idx[b]!;
  idx[b] = i;
}

function siftUp(val: Float32Array, idx: Int32Array, i: number): void {
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (!below(val[i]!, idx[i]!, val[p]!, idx[p]!)) return;
    swap(val, idx, i, p);
    i = p;
  }
}

function siftDown(val: Float32Array, idx: Int32Array, size: number): void {
  let i = 0;
  for (;;) {
    const l = 2 * i + 1;
    const r = l + 1;
    let m = i;
    if (l < size && below(val[l]!, idx[l]!, val[m]!, idx[m]!)) m = l;
    if (r < size && below(val[r]!, idx[r]!, val[m]!, idx[m]!)) m = r;
    if (m === i) return;
    swap(val, idx, i, m);
    i = m;
  }
}

function checkLabels(labels: Int32Array, count: number, numClasses: number, what: string): void {
  if (labels.length !== count) throw new Error(`knn: ${count} ${what} rows but ${labels.length} labels`);
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i]!;
    if (!(l >= 0 && l < numClasses)) throw new Error(`knn: ${what} label ${l} at ${i} is outside 0..${numClasses - 1}`);
  }
}

/** Class votes from the first `k` of the stored neighbours, ranked into top-1 and top-5. */
export function knnVote(neighbours: Neighbours, memoryLabels: Int32Array, opts: KnnOptions): KnnPrediction {
  const { numClasses, weighted } = opts;
  const temperature = opts.temperature ?? 0.1;
  if (!(Number.isInteger(numClasses) && numClasses >= 1)) throw new Error(`knn: numClasses must be a positive integer, got ${numClasses}`);
  if (weighted && !(temperature > 0)) throw new Error(`knn: temperature must be positive, got ${temperature}`);
  if (!(Number.isInteger(opts.k) && opts.k >= 1)) throw new Error(`knn: k must be a positive integer, got ${opts.k}`);
  const stride = neighbours.k;
  const k = Math.min(opts.k, stride);
  const q = stride === 0 ? 0 : neighbours.indices.length / stride;
  const top1 = new Int32Array(q);
  const top5 = new Int32Array(q * 5).fill(-1);
  const votes = new Float64Array(numClasses);
  const similaritySum = new Float64Array(numClasses);
  const order = Array.from({ length: numClasses }, (_, c) => c);
  for (let i = 0; i < q; i++) {
    votes.fill(0);
    similaritySum.fill(0);
    for (let j = 0; j < k; j++) {
      const s = neighbours.similarities[i * stride + j]!;
      const c = memoryLabels[neighbours.indices[i * stride + j]!]!;
      votes[c]! += weighted ? Math.exp(s / temperature) : 1;
      similaritySum[c]! += s;
    }
    // Majority: the summed similarity, scaled below half a vote, separates equal counts.
    if (!weighted) for (let c = 0; c < numClasses; c++) votes[c]! += similaritySum[c]! / (2 * k + 2);
    order.sort((a, b) => votes[b]! - votes[a]! || a - b);
    top1[i] = order[0]!;
    for (let r = 0; r < Math.min(5, numClasses); r++) top5[i * 5 + r] = order[r]!;
  }
  return { top1, top5 };
}

/** Predicts a class for every query from its k nearest memory rows. */
export function knnPredict(
  memory: Float32Array,
  memoryLabels: Int32Array,
  queries: Float32Array,
  dim: number,
  opts: KnnOptions,
): KnnPrediction {
  checkLabels(memoryLabels, checkRows(memory, dim, 'memory'), opts.numClasses, 'memory');
  return knnVote(knnNeighbours(memory, queries, dim, opts.k), memoryLabels, opts);
}

/** Top-1 and top-5 accuracy in percent. */
export function accuracy(prediction: KnnPrediction, labels: Int32Array): Accuracy {
  const q = prediction.top1.length;
  if (labels.length !== q) throw new Error(`accuracy: ${q} predictions but ${labels.length} labels`);
  if (q === 0) return { top1: 0, top5: 0 };
  let hit1 = 0;
  let hit5 = 0;
  for (let i = 0; i < q; i++) {
    const l = labels[i]!;
    if (prediction.top1[i] === l) hit1++;
    for (let r = 0; r < 5; r++) {
      if (prediction.top5[i * 5 + r] === l) {
        hit5++;
        break;
      }
    }
  }
  return { top1: (100 * hit1) / q, top5: (100 * hit5) / q };
}

export function knnAccuracy(
  memory: Float32Array,
  memoryLabels: Int32Array,
  queries: Float32Array,
  queryLabels: Int32Array,
  dim: number,
  opts: KnnOptions,
): Accuracy {
  return accuracy(knnPredict(memory, memoryLabels, queries, dim, opts), queryLabels);
}

export interface KnnReport {
  weighted: Accuracy & { k: number; temperature: number };
  majority: Accuracy & { k: number };
}

/** Both protocols from one neighbour search (the k = 20 nearest are the first 20 of the 200). */
export function knnEvaluate(
  memory: Float32Array,
  memoryLabels: Int32Array,
  queries: Float32Array,
  queryLabels: Int32Array,
  dim: number,
  { numClasses, weightedK = 200, temperature = 0.1, majorityK = 20 }: { numClasses: number; weightedK?: number; temperature?: number; majorityK?: number },
): KnnReport {
  checkLabels(memoryLabels, checkRows(memory, dim, 'memory'), numClasses, 'memory');
  const neighbours = knnNeighbours(memory, queries, dim, Math.max(weightedK, majorityK));
  const weighted = accuracy(knnVote(neighbours, memoryLabels, { k: weightedK, temperature, weighted: true, numClasses }), queryLabels);
  const majority = accuracy(knnVote(neighbours, memoryLabels, { k: majorityK, weighted: false, numClasses }), queryLabels);
  return { weighted: { k: weightedK, temperature, ...weighted }, majority: { k: majorityK, ...majority } };
}
