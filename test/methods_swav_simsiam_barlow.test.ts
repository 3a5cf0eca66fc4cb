// SwAV, SimSiam and Barlow Twins: their shared pieces against hand
// computations (Sinkhorn-Knopp codes, the Barlow Twins loss and its
// gradient, NMI), SwAV's swapped prediction and prototype handling, SimSiam's
// stop-gradient, and one short real run of each whose kNN beats the same
// network untrained (docs/experiments.md#swav-simsiam-barlow-twins).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { useBackend } from '../src/backend/select.js';
import { loadTestSet, loadTrainingSet } from '../src/data/dataset_config.js';
import { extractFeatures } from '../src/eval/features.js';
import { normalizedMutualInfo } from '../src/eval/nmi.js';
import { LAST_CHECKPOINT, readCheckpoint, restoreMethod } from '../src/io/checkpoint.js';
import { barlowTwinsLoss, crossCorrelation } from '../src/losses/barlow_twins.js';
import { l2Normalize } from '../src/losses/normalize.js';
import { sinkhornKnopp } from '../src/losses/sinkhorn.js';
import { BarlowTwins, barlowLambda } from '../src/methods/barlow.js';
import { methodNames, type TensorBatch } from '../src/methods/index.js';
import { SimSiam, simsiamLoss } from '../src/methods/simsiam.js';
import { SwAV, swappedPrediction } from '../src/methods/swav.js';
import { assertClose, assertGradientMatchesFiniteDifferences, randomArray, randomTensor } from './helpers.js';
import type { RunConfig } from '../src/train/config.js';
import { fashionMethod, knnAgainstRandomInit, tinyConfig, USABLE_KNN } from './method_runs.js';

await useBackend('native');

/** Row and column sums of a [B, K] array. */
function marginals(q: Float32Array | number[], B: number, K: number): { rows: number[]; cols: number[] } {
  const rows = Array.from({ length: B }, (_, b) => Array.from({ length: K }, (_, k) => q[b * K + k]!).reduce((s, x) => s + x, 0));
  const cols = Array.from({ length: K }, (_, k) => Array.from({ length: B }, (_, b) => q[b * K + k]!).reduce((s, x) => s + x, 0));
  return { rows, cols };
}

function codesOf(scores: number[] | Float32Array, shape: [number, number], iterations: number, epsilon = 0.05): Float32Array {
  return tf.tidy(() => sinkhornKnopp(tf.tensor2d(scores, shape), { epsilon, iterations }).dataSync() as Float32Array);
}

/** Cosine scores of B random unit embeddings against K random unit prototypes in D dimensions, as SwAV's. */
function randomScores(B: number, K: number, D: number, seed: number): Float32Array {
  return tf.tidy(() => {
    const z = l2Normalize(randomTensor([B, D], seed) as Tensor2D, 1);
    const c = l2Normalize(randomTensor([D, K], seed + 1) as Tensor2D, 0);
    return tf.matMul(z, c).dataSync() as Float32Array;
  });
}

test('swav, simsiam and barlow are registered; Barlow Twins\' λ is resolved from the embedding size', () => {
  for (const name of ['swav', 'simsiam', 'barlow']) assert.ok(methodNames().includes(name), name);
  assert.throws(() => tinyConfig('swav', { methodOptions: { prototype: 10 } }), /Unrecognized key\(s\) in object: 'prototype' \(swav\)/);
  const barlow = fashionMethod(tinyConfig('barlow', { methodOptions: { outDim: 256 } })) as BarlowTwins;
  assert.equal(barlow.options.lambda, 1 / 256);
  assert.equal(barlow.options.lambda, barlowLambda(256));
  barlow.dispose();
});

test('Sinkhorn-Knopp on a 2x2 case by hand: 1 and 2 rounds, and the limit', () => {
  // Scores ε·ln P with P = [[3, 1], [1, 1]], so exp(S/ε) = P (up to the max shift, which cancels).
  // Q = P / 6 = [[1/2, 1/6], [1/6, 1/6]].
  // Round 1, columns to 1/K = 1/2: sums 2/3 and 1/3 -> [[3/8, 1/4], [1/8, 1/4]];
  //   rows to 1/B = 1/2: sums 5/8 and 3/8 -> [[3/10, 1/5], [1/6, 1/3]]; codes = 2Q = [[3/5, 2/5], [1/3, 2/3]].
  // Round 2, columns: sums 7/15 and 8/15 -> [[9/28, 3/16], [5/28, 5/16]];
  //   rows: sums 57/112 and 55/112 -> codes [[36/57, 21/57], [20/55, 35/55]] = [[12/19, 7/19], [4/11, 7/11]].
  // The limit is P scaled to doubly stochastic, [[a, 1-a], [1-a, a]] with (a/(1-a))² = 3·1/(1·1): a = √3/(1+√3).
  const eps = 0.05;
  const scores = [3, 1, 1, 1].map((p) => eps * Math.log(p));
  assertClose(codesOf(scores, [2, 2], 1, eps), [3 / 5, 2 / 5, 1 / 3, 2 / 3], { atol: 1e-6 }, '1 round');
  assertClose(codesOf(scores, [2, 2], 2, eps), [12 / 19, 7 / 19, 4 / 11, 7 / 11], { atol: 1e-6 }, '2 rounds');
  const a = Math.sqrt(3) / (1 + Math.sqrt(3));
  assertClose(codesOf(scores, [2, 2], 30, eps), [a, 1 - a, 1 - a, a], { atol: 1e-6 }, 'the limit');
});

test('Sinkhorn-Knopp on random scores: each sample\'s code sums to 1, each prototype gets B/K, within a measured tolerance after 3 rounds', () => {
  // B 128 samples, K 100 prototypes, unit vectors in 128 dimensions: SwAV's default shapes.
  // Measured over seeds 1-8, the worst prototype's mass is off B/K by 14-41% after 1 round,
  // 0.7-14% after 3, under 0.3% after 10 and 1e-7 after 30; a plain softmax of the scores, 64-105%.
  const [B, K] = [128, 100];
  for (let seed = 1; seed <= 8; seed++) {
    const scores = randomScores(B, K, 128, seed);
    const deviation = (iterations: number) => {
      const { rows, cols } = marginals(codesOf(scores, [B, K], iterations), B, K);
      assertClose(rows, Array<number>(B).fill(1), { atol: 1e-5 }, `seed ${seed}: rows after ${iterations} rounds`);
      return Math.max(...cols.map((c) => Math.abs(c / (B / K) - 1)));
    };
    const [one, three, thirty] = [deviation(1), deviation(3), deviation(30)];
    assert.ok(three < 0.2 && three < one / 2, `seed ${seed}: a prototype's mass is ${(100 * three).toFixed(2)}% off after 3 rounds, ${(100 * one).toFixed(2)}% after 1`);
    assert.ok(thirty < 1e-5, `seed ${seed}: ${thirty} off after 30 rounds`);
    const { cols } = marginals(tf.tidy(() => tf.softmax(tf.div(tf.tensor2d(scores, [B, K]), 0.05)).dataSync() as Float32Array), B, K);
    assert.ok(Math.max(...cols.map((c) => Math.abs(c / (B / K) - 1))) > 0.3, `seed ${seed}: the scores alone are already balanced`);
  }
});

test('Barlow Twins loss on a 3x2 pair by hand, and its gradient against finite differences', () => {
  // z1 = [[1, 0], [2, 3], [3, 0]]: column 0 has mean 2, variance 2/3 -> ẑ = [-1, 0, 1]·√1.5;
  //   column 1 has mean 1, variance 2 -> ẑ = [-1, 2, -1]/√2.
  // z2 = [[0, 2], [0, 0], [3, 1]]: column 0 has mean 1, variance 2 -> ẑ = [-1, -1, 2]/√2;
  //   column 1 has mean 1, variance 2/3 -> ẑ = [1, -1, 0]·√1.5.
  // C = ẑ1ᵀ ẑ2 / 3:
  //   C00 = √1.5/√2 · (1 + 0 + 2) / 3 = √0.75 = √3/2     C01 = 1.5 · (-1 + 0 + 0) / 3 = -1/2
  //   C10 = (1/2) · (1 - 2 - 2) / 3 = -1/2               C11 = √1.5/√2 · (-1 - 2 + 0) / 3 = -√3/2
  // L = (1 - √3/2)² + (1 + √3/2)² + λ (1/4 + 1/4) = 2 + 2·3/4 + λ/2 = 3.5 + λ/2; with λ = 0.2, 3.6.
  // (BN's ε = 1e-5 in the variances moves these by about 1e-5.)
  const z1 = tf.tensor2d([1, 0, 2, 3, 3, 0], [3, 2]);
  const z2 = tf.tensor2d([0, 2, 0, 0, 3, 1], [3, 2]);
  const r = Math.sqrt(3) / 2;
  assertClose(crossCorrelation(z1, z2).dataSync(), [r, -0.5, -0.5, -r], { atol: 1e-4 }, 'C');
  const { loss, invariance, redundancy } = barlowTwinsLoss(z1, z2, 0.2);
  assertClose([loss.dataSync()[0]!, invariance.dataSync()[0]!, redundancy.dataSync()[0]!], [3.6, 3.5, 0.5], { atol: 1e-4 }, 'L, invariance, redundancy');
  tf.dispose([z1, z2, loss, invariance, redundancy]);

  const a = randomTensor([6, 4], 11);
  const b = randomTensor([6, 4], 12);
  assertGradientMatchesFiniteDifferences((x) => barlowTwinsLoss(x as Tensor2D, b as Tensor2D, 0.3).loss, a, { samples: 24 });
  assertGradientMatchesFiniteDifferences((x) => barlowTwinsLoss(a as Tensor2D, x as Tensor2D, 0.3).loss, b, { samples: 24 });
  tf.dispose([a, b]);
});

test('NMI: 1 for the same partition renamed, 0 for independent ones, and a 4-sample case by hand', () => {
  assert.equal(normalizedMutualInfo([0, 0, 1, 1, 2, 2], [5, 5, 3, 3, 0, 0]), 1);
  assertClose([normalizedMutualInfo([0, 0, 1, 1], [0, 1, 0, 1])], [0], { atol: 1e-12 });
  // A = [0, 0, 1, 1], B = [0, 0, 0, 1]: H(A) = ln 2; H(B) = -(3/4) ln(3/4) - (1/4) ln(1/4);
  // I = (1/2) ln((2·4)/(2·3)) + (1/4) ln((1·4)/(2·3)) + (1/4) ln((1·4)/(2·1)).
  const hB = -(0.75 * Math.log(0.75) + 0.25 * Math.log(0.25));
  const mutual = 0.5 * Math.log(8 / 6) + 0.25 * Math.log(4 / 6) + 0.25 * Math.log(2);
  assertClose([normalizedMutualInfo([0, 0, 1, 1], [0, 0, 0, 1])], [mutual / ((Math.log(2) + hB) / 2)], { atol: 1e-12 });
});

/** Plain-number Sinkhorn-Knopp and swapped prediction, written apart from the tensor code. */
function referenceSwav(crops: number[][][], codeCrops: number, T: number, epsilon: number, rounds: number): number {
  const codes = crops.slice(0, codeCrops).map((s) => {
    const B = s.length;
    const K = s[0]!.length;
    const max = Math.max(...s.flat());
    let q = s.map((row) => row.map((x) => Math.exp((x - max) / epsilon)));
    const total = q.flat().reduce((a, b) => a + b, 0);
    q = q.map((row) => row.map((x) => x / total));
    for (let r = 0; r < rounds; r++) {
      const cols = Array.from({ length: K }, (_, k) => q.reduce((a, row) => a + row[k]!, 0));
      q = q.map((row) => row.map((x, k) => x / cols[k]! / K));
      q = q.map((row) => row.map((x) => x / row.reduce((a, b) => a + b, 0) / B));
    }
    return q.map((row) => row.map((x) => x * B));
  });
  let sum = 0;
  let terms = 0;
  codes.forEach((q, i) =>
    crops.forEach((s, v) => {
      if (v === i) return;
      const perSample = s.map((row, b) => {
        const lse = Math.log(row.reduce((a, x) => a + Math.exp(x / T), 0));
        return -row.reduce((a, x, k) => a + q[b]![k]! * (x / T - lse), 0);
      });
      sum += perSample.reduce((a, b) => a + b, 0) / s.length;
      terms++;
    }),
  );
  return sum / terms;
}

/** A small random multi-crop batch: B samples, 2 global 32 px crops and L 16 px crops each. */
function multiCropBatch(B: number, L: number, seed: number): TensorBatch {
  return {
    views: { global: randomTensor([2 * B, 32, 32, 1], seed) as Tensor4D, local: randomTensor([L * B, 16, 16, 1], seed + 1) as Tensor4D },
    aux: {},
    labels: tf.zeros([B], 'int32'),
    indices: Int32Array.from({ length: B }, (_, i) => i),
  };
}

function rowsOf(data: Float32Array, K: number, pick: (row: number) => boolean): number[][] {
  const out: number[][] = [];
  for (let r = 0; r * K < data.length; r++) if (pick(r)) out.push(Array.from(data.subarray(r * K, (r + 1) * K)));
  return out;
}

test('SwAV\'s swapped prediction against a plain-number computation, for the function and for the method\'s loss', () => {
  // The function: 2 code crops and 1 more, B 3, K 4.
  const crops = [0, 1, 2].map((c) => Array.from({ length: 3 }, (_, b) => Array.from(randomArray(4, 100 + 10 * c + b, -1, 1))));
  const codes = crops.slice(0, 2).map((s) => sinkhornKnopp(tf.tensor2d(s), { epsilon: 0.05, iterations: 3 }));
  const loss = swappedPrediction(codes, crops.map((s) => tf.tensor2d(s)), 0.1);
  assertClose([loss.dataSync()[0]!], [referenceSwav(crops, 2, 0.1, 0.05, 3)], { atol: 1e-4, rtol: 1e-5 }, 'swappedPrediction');

  // The method: the crops of each sample are interleaved in the loader's batch (sample s's at s·n .. s·n + n - 1).
  const [B, L, K] = [4, 3, 8];
  const method = fashionMethod(tinyConfig('swav', { methodOptions: { prototypes: K, localCrops: L } })) as SwAV;
  const batch = multiCropBatch(B, L, 5);
  const ctx = { step: 0, epoch: 1, totalSteps: 10 };
  const got = tf.tidy(() => method.loss(batch, ctx).loss.dataSync()[0]!);
  const scores = (x: Tensor4D) => tf.tidy(() => method.prototypes.forward(method.embed(x)).dataSync() as Float32Array);
  const globalScores = scores(batch.views.global!);
  const localScores = scores(batch.views.local!);
  const byCrop = [
    ...[0, 1].map((c) => rowsOf(globalScores, K, (r) => r % 2 === c)),
    ...[0, 1, 2].map((c) => rowsOf(localScores, K, (r) => r % L === c)),
  ];
  assertClose([got], [referenceSwav(byCrop, 2, 0.1, 0.05, 3)], { atol: 1e-4, rtol: 1e-5 }, 'SwAV.loss');
  method.dispose();
});

test('SwAV: prototypes are unit vectors after beforeStep; their gradient is zero in epoch 0 and not after', () => {
  const method = fashionMethod(tinyConfig('swav', { methodOptions: { prototypes: 16, localCrops: 2 } })) as SwAV;
  const weight = method.prototypes.weight;
  const norms = () => tf.tidy(() => Array.from(tf.norm(weight, 2, 0).dataSync()));
  assertClose(norms(), Array<number>(16).fill(1), { atol: 1e-5 }, 'as built');
  weight.assign(tf.mul(randomTensor(weight.shape, 3), 5));
  assert.ok(norms().some((n) => Math.abs(n - 1) > 0.5));
  tf.tidy(() => method.beforeStep());
  assertClose(norms(), Array<number>(16).fill(1), { atol: 1e-5 }, 'after beforeStep');

  const batch = multiCropBatch(4, 2, 9);
  const name = weight.name;
  const gradientNorm = (epoch: number) => {
    const ctx = { step: 0, epoch, totalSteps: 10 };
    const { value, grads } = tf.variableGrads(() => method.loss(batch, ctx).loss, method.parameters());
    const used = method.transformGradients(grads, ctx);
    const norm = (g: tf.Tensor) => tf.tidy(() => tf.norm(g).dataSync()[0]!);
    const out = { raw: norm(grads[name]!), used: norm(used[name]!), backbone: norm(used[method.backbone.parameters()[0]!.name]!) };
    tf.dispose([value, ...new Set([...Object.values(grads), ...Object.values(used)])]);
    return out;
  };
  const frozen = gradientNorm(0);
  assert.ok(frozen.raw > 0 && frozen.used === 0 && frozen.backbone > 0, JSON.stringify(frozen));
  const free = gradientNorm(1);
  assert.ok(free.used > 0 && free.used === free.raw, JSON.stringify(free));
  method.dispose();
});

test('SwAV\'s queue starts at its epoch and joins the codes once full', () => {
  // 2 global crops of 4 samples fill 8 rows a step.
  const method = fashionMethod(tinyConfig('swav', { methodOptions: { prototypes: 8, localCrops: 0, queueLength: 8, queueStartEpoch: 1 } })) as SwAV;
  const batch = multiCropBatch(4, 0, 21);
  const step = (epoch: number) => {
    const ctx = { step: 0, epoch, totalSteps: 10 };
    const used = tf.tidy(() => method.loss(batch, ctx).terms.queue!.dataSync()[0]!);
    method.afterStep();
    return used;
  };
  const before = Array.from(method.queue!.keys.dataSync());
  assert.equal(step(0), 0);
  assert.deepEqual(Array.from(method.queue!.keys.dataSync()), before, 'nothing is queued before queueStartEpoch');
  assert.equal(step(1), 0, 'the queue is not used until full');
  assert.notDeepEqual(Array.from(method.queue!.keys.dataSync()), before);
  assert.equal(step(1), 1);
  method.dispose();
});

test('SimSiam: the stop-gradient stops it; the target branch gets no gradient from its own term', () => {
  const [z1, z2, p1, p2] = [31, 32, 33, 34].map((s) => randomTensor([5, 6], s) as Tensor2D);
  // simsiamLoss(p1, p2, z1, z2) gives z1 and z2 nothing, and is the paper's -(cos(p1, z2) + cos(p2, z1)) / 2.
  // (tfjs refuses a gradient for an input the tape never reached: 0·sum(z) reaches it without adding to it.)
  const connected = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor, d: tf.Tensor) =>
    tf.add(simsiamLoss(a as Tensor2D, b as Tensor2D, c as Tensor2D, d as Tensor2D), tf.mul(0, tf.add(tf.sum(c), tf.sum(d))));
  const grads = tf.grads(connected)([p1!, p2!, z1!, z2!]);
  assert.ok(grads[0]!.abs().sum().dataSync()[0]! > 0);
  assert.deepEqual(Array.from(grads[2]!.dataSync()), Array<number>(30).fill(0));
  assert.deepEqual(Array.from(grads[3]!.dataSync()), Array<number>(30).fill(0));
  const cos = (a: Tensor2D, b: Tensor2D) => tf.sum(tf.mul(l2Normalize(a, 1), l2Normalize(b, 1)), 1);
  const paper = tf.tidy(() => tf.div(tf.add(tf.mean(cos(p1!, z2!)), tf.mean(cos(p2!, z1!))), -2).dataSync()[0]!);
  assertClose([simsiamLoss(p1!, p2!, z1!, z2!).dataSync()[0]!], [paper], { atol: 1e-6 });

  // In the method, a projection reaches the loss as the predictor's input and as the other view's target:
  // its gradient is the predictor path's alone, the same as with the targets replaced by constants.
  const method = fashionMethod(tinyConfig('simsiam', { methodOptions: { hiddenDim: 16, outDim: 6, predictorDim: 4 } })) as SimSiam;
  const z = tf.concat([z1!, z2!], 0) as Tensor2D;
  const constant = tf.clone(z);
  const viaMethod = tf.grad((x) => method.lossFromProjections(x as Tensor2D))(z);
  const predictorOnly = tf.grad((x) => {
    const [q1, q2] = tf.split(method.predictor.forward(x as Tensor2D), 2, 0) as Tensor2D[];
    const [t1, t2] = tf.split(constant, 2, 0) as Tensor2D[];
    return simsiamLoss(q1!, q2!, t1!, t2!);
  })(z);
  assertClose(viaMethod.dataSync(), predictorOnly.dataSync(), { atol: 1e-7, rtol: 1e-5 }, 'dL/dz');
  assert.ok(viaMethod.abs().sum().dataSync()[0]! > 0);
  method.dispose();
  tf.dispose([z1!, z2!, p1!, p2!, z, constant, viaMethod, predictorOnly, ...grads]);
});


/** NMI of SwAV's cluster assignments (the argmax of its Sinkhorn codes over all images at once) with the labels of the run's training images. */
async function swavNmi(config: RunConfig, checkpoint: string | null): Promise<number> {
  const method = fashionMethod(config) as SwAV;
  if (checkpoint) restoreMethod(readCheckpoint(checkpoint), method);
  const set = await loadTrainingSet(config.dataset);
  const { features, dim } = await extractFeatures(method.backbone, set, { size: config.dataset.size, batchSize: 256 });
  const clusters = method.clusters(features, dim);
  method.dispose();
  return normalizedMutualInfo(clusters, set.labels);
}

// Each run is deterministic for its seed (0) on one thread, as npm test runs; measured so, with init seeds
// 1 and 2 as well (untrained 53.4 and 65.3): docs/experiments.md#swav-simsiam-barlow-twins.
test('SwAV, 6 epochs of 64 on 2,000 Fashion-MNIST images: kNN beats the same network untrained; NMI of its clusters', async () => {
  // Measured: 65.8 against 63.3 untrained (seeds 1, 2: 64.1, 68.5).
  const { random, trained, config } = await knnAgainstRandomInit('swav', 0.15, { epochs: 6, batchSize: 64 });
  const nmi = { untrained: await swavNmi(config, null), trained: await swavNmi(config, join(config.out, LAST_CHECKPOINT)) };
  console.log(`# swav: NMI of its clusters (argmax of the codes) with the labels: untrained ${nmi.untrained.toFixed(3)}, trained ${nmi.trained.toFixed(3)}`);
  assert.ok(trained > random, `kNN ${trained} after training vs ${random} untrained`);
});

// SimSiam's kNN against the untrained network is not asserted: at this budget it depends on the
// rounding, not on the method. With seed 0 the same run scored 66.3 and then 53.2 (untrained 63.3)
// when only the batch-norm sums' rounding changed, and over seeds 0-3, lr 0.03-0.1 and widths 4
// and 8 it ended between 22 points below and 12 above (docs/experiments.md#2026-12-06-tests-that-passed-on-one-trajectory).
// What the run checks instead: the loss falls (its lowest epoch 0.28-0.55 below the first in
// those runs; the last epoch is not used, as at lr 0.1 it can creep back up), it stays clear of
// the collapsed solution's -1, and the features stay far above chance (10%).
test('SimSiam with the paper\'s 3-layer projector, 6 epochs of 32 on 2,000 Fashion-MNIST images: the loss falls without collapsing and the features stay usable', async () => {
  const { trained, losses } = await knnAgainstRandomInit('simsiam', 0.1, { epochs: 6, batchSize: 32, methodOptions: { projectorLayers: 3 } });
  assert.ok(Math.min(...losses) < losses[0]! - 0.2, `epoch losses ${losses.join(' ')}`);
  assert.ok(Math.min(...losses) > -0.95, `epoch losses ${losses.join(' ')}: a collapsed SimSiam's loss is -1`);
  assert.ok(trained > USABLE_KNN, `kNN ${trained} after training (chance 10)`);
});

test('Barlow Twins, 8 epochs of 32 on 2,000 Fashion-MNIST images: kNN beats the same network untrained', async () => {
  // Measured: 68.5 against 63.3 untrained.
  const { random, trained } = await knnAgainstRandomInit('barlow', 0.1, { epochs: 8, batchSize: 32 });
  assert.ok(trained > random, `kNN ${trained} after training vs ${random} untrained`);
});
