// DeepCluster: its clustering parts alone (k-means on separable blobs, empty
// clusters re-seeded, PCA-whitening to the identity, the uniform sampler),
// its loss by hand, re-clustering and the top layer's reset, and one short
// real run whose kNN beats the same network untrained, with the NMI the
// trainer records (docs/experiments.md#deepcluster).
import assert from 'node:assert/strict';
import { namedParameters } from '../src/train/optimizers.js';
import { join } from 'node:path';
import { test } from 'node:test';
import * as tf from '../src/core/tf.js';
import { Mulberry32 } from '../src/core/random.js';
import { useBackend } from '../src/backend/select.js';
import { normalizedMutualInfo } from '../src/eval/nmi.js';
import { DeepCluster, clusteringDim } from '../src/methods/deepcluster.js';
import { methodNames, type TensorBatch } from '../src/methods/index.js';
import { kMeans, pcaWhiten, uniformOverLabels } from '../src/methods/parts/clustering.js';
import { readCheckpoint } from '../src/io/checkpoint.js';
import { train } from '../src/train/trainer.js';
import { fashionMethod, knnAgainstRandomInit, tinyConfig } from './method_runs.js';

await useBackend('native');

/** `perBlob` points around each of `centres` (rows), spread `spread`; labels are the blob. */
function blobs(centres: number[][], perBlob: number, spread: number, seed: number): { data: Float32Array; n: number; dim: number; labels: Int32Array } {
  const rng = new Mulberry32(seed);
  const dim = centres[0]!.length;
  const n = centres.length * perBlob;
  const data = new Float32Array(n * dim);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % centres.length;
    for (let j = 0; j < dim; j++) data[i * dim + j] = centres[labels[i]!]![j]! + spread * rng.normal();
  }
  return { data, n, dim, labels };
}

const FOUR_CORNERS = [
  [5, 5, 0, 0, 0, 0, 0, 0],
  [-5, 5, 0, 0, 0, 0, 0, 0],
  [0, 0, 5, -5, 0, 0, 0, 0],
  [0, 0, 0, 0, 0, 0, 5, 5],
];

test('deepcluster is registered with its defaults; pcaDim 0 is a quarter of the feature width, at most 256', () => {
  assert.ok(methodNames().includes('deepcluster'));
  assert.throws(() => tinyConfig('deepcluster', { methodOptions: { cluster: 10 } }), /Unrecognized key\(s\) in object: 'cluster' \(deepcluster\)/);
  assert.equal(clusteringDim(0, 512), 128);
  assert.equal(clusteringDim(0, 2048), 256);
  assert.equal(clusteringDim(0, 2), 1);
  assert.equal(clusteringDim(32, 512), 32);
  assert.throws(() => clusteringDim(600, 512), /pcaDim 600 is wider than the features \(512\)/);
});

test('k-means finds four separable blobs exactly from three random starts; with more clusters than blobs, no cluster mixes blobs', () => {
  const { data, n, dim, labels } = blobs(FOUR_CORNERS, 50, 0.3, 1);
  for (const seed of [0, 1, 2]) {
    const result = kMeans({ data, n, dim }, 4, { iterations: 20, rng: new Mulberry32(seed) });
    assert.ok(result.assignments.every((a) => a >= 0 && a < 4));
    assert.ok(normalizedMutualInfo(result.assignments, labels) > 0.999, `seed ${seed}`);
    // Mean squared distance to the centre: 8 dimensions of variance 0.3².
    assert.ok(Math.abs(result.inertia - 8 * 0.3 ** 2) < 0.1, `inertia ${result.inertia}`);
  }
  // k 8 over 4 blobs: every blob split, never two blobs merged (each cluster pure).
  const over = kMeans({ data, n, dim }, 8, { iterations: 20, rng: new Mulberry32(5) });
  for (let c = 0; c < 8; c++) {
    const members = new Set([...over.assignments.keys()].filter((i) => over.assignments[i] === c).map((i) => labels[i]));
    assert.ok(members.size <= 1, `cluster ${c} mixes blobs ${[...members].join(', ')}`);
  }
});

test('k-means re-seeds an empty cluster by splitting a large one (faiss\'s rule)', () => {
  // 60 copies of one point and 60 of another, k 3: two of the first centres coincide, so one cluster starts empty.
  const dim = 4;
  const data = new Float32Array(120 * dim);
  for (let i = 0; i < 120; i++) data.set(i < 60 ? [1, 2, 3, 4] : [-4, 3, -2, 1], i * dim);
  const result = kMeans({ data, n: 120, dim }, 3, { iterations: 5, rng: new Mulberry32(0) });
  assert.ok(result.emptyReseeded >= 1, `re-seeded ${result.emptyReseeded}`);
  assert.ok(result.centroids.every(Number.isFinite));
  // The split centres sit within 1/1024 (relative) of the point they split.
  const near = (c: number, p: number[]) => p.every((v, j) => Math.abs(result.centroids[c * dim + j]! - v) <= Math.abs(v) / 1000);
  for (let c = 0; c < 3; c++) assert.ok(near(c, [1, 2, 3, 4]) || near(c, [-4, 3, -2, 1]), `centroid ${c}: ${Array.from(result.centroids.subarray(c * dim, (c + 1) * dim))}`);
  assert.throws(() => kMeans({ data, n: 120, dim }, 121, { rng: new Mulberry32(0) }), /k must be 1-120/);
});

test('PCA-whitening keeps the leading directions and gives them identity covariance', () => {
  const rng = new Mulberry32(3);
  const scales = [5, 3, 2, 0.5, 0.2, 0.1];
  const n = 4000;
  const dim = scales.length;
  const data = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) for (let j = 0; j < dim; j++) data[i * dim + j] = 7 + scales[j]! * rng.normal();
  const out = pcaWhiten({ data, n, dim }, 3);
  assert.equal(out.dim, 3);
  const cov = (a: number, b: number) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += out.data[i * 3 + a]! * out.data[i * 3 + b]!;
    return s / n;
  };
  for (let a = 0; a < 3; a++) for (let b = 0; b < 3; b++) assert.ok(Math.abs(cov(a, b) - (a === b ? 1 : 0)) < 1e-3, `cov(${a}, ${b}) = ${cov(a, b)}`);
  // Component k is input axis k (up to sign): the largest variances come first.
  for (let k = 0; k < 3; k++) {
    let dot = 0;
    for (let i = 0; i < n; i++) dot += out.data[i * 3 + k]! * ((data[i * dim + k]! - 7) / scales[k]!);
    assert.ok(Math.abs(dot / n) > 0.99, `component ${k} vs axis ${k}: ${dot / n}`);
  }
  assert.throws(() => pcaWhiten({ data, n, dim }, 7), /outDim must be 1-6/);
});

test('the sampler visits every non-empty cluster about equally, without repeats while a cluster has enough images', () => {
  const labels = Int32Array.from({ length: 100 }, (_, i) => (i < 90 ? 0 : i < 99 ? 1 : 3));
  const order = uniformOverLabels(labels, 4, new Mulberry32(1));
  assert.equal(order.length, 100);
  const counts = [0, 0, 0, 0];
  for (const i of order) counts[labels[i]!]!++;
  // floor(100 / 3) + 1 = 34 draws per cluster, 102 in all, cut to 100.
  for (const c of [0, 1, 3]) assert.ok(counts[c]! >= 32 && counts[c]! <= 34, `cluster ${c}: ${counts[c]}`);
  assert.equal(counts[2], 0);
  const fromLarge = [...order].filter((i) => labels[i] === 0);
  assert.equal(new Set(fromLarge).size, fromLarge.length, 'the large cluster is drawn without replacement');
  assert.deepEqual(uniformOverLabels(labels, 4, new Mulberry32(1)), order);
  assert.throws(() => uniformOverLabels(Int32Array.from([0, 5]), 4, new Mulberry32(1)), /label 5 of image 1 is outside 0-3/);
});

test('re-clustering labels the images, remembers the previous labels and resets the top layer; the loss is cross-entropy on them', () => {
  const config = tinyConfig('deepcluster', { methodOptions: { clusters: 4, pcaDim: 4 }, dataset: { limit: 200 } });
  const method = fashionMethod(config) as DeepCluster;
  try {
    assert.throws(() => method.epochOrder(0, 200), /before the first clustering/);
    const { data, dim, labels } = blobs(FOUR_CORNERS, 50, 0.3, 2);
    const first = method.recluster(data, dim, 0);
    assert.equal(first.previous, null);
    assert.ok(normalizedMutualInfo(first.assignments, labels) > 0.999, first.summary);
    assert.deepEqual(method.pseudoLabels.dataSync(), first.assignments);
    const w = Array.from(method.top.weight.dataSync());
    const std = Math.sqrt(w.reduce((s, x) => s + x * x, 0) / w.length);
    assert.ok(std > 0.008 && std < 0.012, `top layer std ${std}`);
    assert.ok(method.top.bias!.dataSync().every((b) => b === 0));
    // The new top layer's momentum restarts: the prefix names exactly its parameters.
    assert.deepEqual(first.resetOptimizerState, ['top.']);
    assert.deepEqual(namedParameters(method).filter((p) => p.name.startsWith('top.')).map((p) => p.variable), [method.top.weight, method.top.bias]);
    const second = method.recluster(data, dim, 1);
    assert.deepEqual(second.previous, first.assignments);
    assert.equal(method.epochOrder(1, 200).length, 200);
    assert.throws(() => method.recluster(data.subarray(0, 100 * dim), dim, 2), /features of 100 images for a training set of 200/);

    // The loss by hand: softmax cross-entropy of the top layer's logits against each image's cluster.
    const images = tf.randomNormal([3, 32, 32, 1], 0, 1, 'float32', 4) as TensorBatch['views'][string];
    const indices = Int32Array.from([0, 57, 199]);
    const batch: TensorBatch = { views: { view: images }, aux: {}, labels: tf.tensor1d([-1, -1, -1], 'int32'), indices };
    method.eval();
    const { loss, terms } = method.loss(batch);
    const logits = method.top.forward(method.backbone.features(images)).arraySync();
    const expected =
      logits.map((row, r) => {
        const max = Math.max(...row);
        const lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
        return lse - row[second.assignments[indices[r]!]!]!;
      }).reduce((a, b) => a + b, 0) / 3;
    assert.ok(Math.abs(loss.dataSync()[0]! - expected) < 1e-5, `${loss.dataSync()[0]} vs ${expected}`);
    assert.ok(terms.accuracy !== undefined);
  } finally {
    method.dispose();
  }
});

test('deepcluster: a short real run beats the untrained network\'s kNN, with the NMI of its clusters in the epoch metrics', async () => {
  // Measured (one thread): 66.6 against 63.3 untrained; init seeds 1 and 2: 58.6 vs 53.4, 63.3 vs 65.3 (docs/experiments.md#deepcluster).
  const { random, trained, metrics } = await knnAgainstRandomInit('deepcluster', 0.1, { epochs: 6, batchSize: 32, methodOptions: { clusters: 20, pcaDim: 16 } });
  assert.ok(trained > random, `kNN ${trained} vs untrained ${random}`);
  assert.equal(metrics.length, 6);
  for (const [i, { clustering: c }] of metrics.entries()) {
    assert.ok(c && c.nmiLabels !== null && c.nmiLabels > 0 && c.nmiLabels < 1, `epoch ${i}: ${JSON.stringify(c)}`);
    assert.equal(c.nmiPrevious === null, i === 0);
  }
});

test('deepcluster resumed mid-epoch takes the same steps: the pseudo-labels and the epoch\'s NMI come from the checkpoint', async () => {
  const over = { methodOptions: { clusters: 8, pcaDim: 8 }, onlineKnn: { every: 0 }, preciseBn: { images: 0 } };
  const straight = tinyConfig('deepcluster', over);
  const losses: number[] = [];
  const a = await train(straight, { quiet: true, log: () => undefined, onStep: (m) => losses.push(m.loss) });
  assert.equal(a.steps, 12);

  const resumed = tinyConfig('deepcluster', over);
  const controller = new AbortController();
  const lines: string[] = [];
  const first: number[] = [];
  // Stop after step 6 of 12 (4 per epoch): mid epoch 2, after that epoch's clustering.
  await train(resumed, { quiet: true, log: (l) => lines.push(l), signal: controller.signal, onStep: (m) => (first.push(m.loss), m.step === 5 && controller.abort()) });
  const rest: number[] = [];
  const b = await train(resumed, { resume: true, quiet: true, log: (l) => lines.push(l), onStep: (m) => rest.push(m.loss) });
  assert.equal(lines.filter((l) => /k-means of 128 x 8/.test(l)).length, 3, 'clustered at the start of each of 3 epochs, not again on resume');
  assert.deepEqual([...first, ...rest], losses, 'the same losses, bitwise');
  assert.deepEqual(b.metrics.map((m) => m.clustering), a.metrics.map((m) => m.clustering));
  const final = (out: string) => readCheckpoint(join(out, 'last.safetensors')).model;
  const [ma, mb] = [final(straight.out), final(resumed.out)];
  for (const name of Object.keys(ma)) assert.deepEqual(mb[name]!.data, ma[name]!.data, name);
});
