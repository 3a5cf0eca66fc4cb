// InfoNCE against hand-computed values on tiny fixed embeddings, its gradient
// against finite differences, and its input checks.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import { useBackend } from '../src/backend/select.js';
import { infoNCE } from '../src/losses/info_nce.js';
import { rowLogSumExp } from '../src/losses/log_sum_exp.js';
import { l2Normalize } from '../src/losses/normalize.js';
import { assertClose, assertGradientMatchesFiniteDifferences, randomTensor } from './helpers.js';

await useBackend('native');

const q = () => tf.tensor2d([[1, 0], [0, 1]]);
const k = () => tf.tensor2d([[0.6, 0.8], [0, 1]]);
const queue = () => tf.tensor2d([[1, 0], [-1, 0], [0, -1]]);

test('rowLogSumExp over column blocks: hand-computed values, finite at large logits, gradient = softmax', () => {
  const value = tf.tidy(() => rowLogSumExp(tf.tensor2d([[1], [0]]), tf.tensor2d([[0, 2], [1000, 1000]])).arraySync());
  // log(e + 1 + e^2) = 2.4076059; log(1 + 2 e^1000) = 1000 + log 2
  assertClose(value, [2.4076059, 1000 + Math.log(2)], { atol: 1e-4, rtol: 1e-6 });
  const a = randomTensor([3, 2], 4);
  const b = randomTensor([3, 5], 5);
  assertGradientMatchesFiniteDifferences((v) => tf.sum(tf.mul(rowLogSumExp(v as Tensor2D, b as Tensor2D), tf.tensor1d([1, -2, 0.5]))), a, { eps: 1e-3 });
  assertGradientMatchesFiniteDifferences((v) => tf.sum(rowLogSumExp(a as Tensor2D, v as Tensor2D)), b, { eps: 1e-3 });
  assert.throws(() => rowLogSumExp(a as Tensor2D, tf.ones([2, 2]) as Tensor2D), /every block must be \[3, K\]/);
  tf.dispose([a, b]);
});

test('InfoNCE with a queue: the mean cross-entropy of logits [q·k+, q·negᵀ]/T at index 0', () => {
  // row 0: q·k+ = 0.6, q·neg = 1, -1, 0; row 1: 1, then 0, 0, -1; all / 0.5.
  const loss = tf.tidy(() => infoNCE(q(), k(), queue(), 0.5).dataSync()[0]!);
  // log(e^1.2 + e^2 + e^-2 + e^0) - 1.2 = 1.2718643; log(e^2 + 2 + e^-2) - 2 = 0.2538560
  assertClose([loss], [(1.2718643 + 0.253856) / 2], { atol: 1e-5, rtol: 1e-5 });
});

test('InfoNCE without negatives uses the other keys of the batch', () => {
  const loss = tf.tidy(() => infoNCE(q(), k(), null, 0.5).dataSync()[0]!);
  // logits q·kᵀ/T: row 0 [1.2, 0] -> log(e^1.2 + 1) - 1.2 = 0.2632825; row 1 [1.6, 2] -> log(e^1.6 + e^2) - 2 = 0.5130153
  assertClose([loss], [(0.2632825 + 0.5130153) / 2], { atol: 1e-5, rtol: 1e-5 });
});

test('InfoNCE: a query equal to its key and orthogonal to every negative gives log(1 + K e^-1/T)', () => {
  const loss = tf.tidy(() => infoNCE(tf.tensor2d([[1, 0]]), tf.tensor2d([[1, 0]]), tf.tensor2d([[0, 1], [0, -1]]), 0.1).dataSync()[0]!);
  assertClose([loss], [Math.log(1 + 2 * Math.exp(-10))], { atol: 1e-6, rtol: 1e-4 });
});

test('InfoNCE gradient matches finite differences (queue and in-batch)', () => {
  const kk = l2Normalize(randomTensor([4, 5], 2) as Tensor2D);
  const neg = l2Normalize(randomTensor([6, 5], 3) as Tensor2D);
  const x = randomTensor([4, 5], 1);
  assertGradientMatchesFiniteDifferences((v) => infoNCE(l2Normalize(v as Tensor2D), kk, neg, 0.2), x, { eps: 1e-3 });
  assertGradientMatchesFiniteDifferences((v) => infoNCE(l2Normalize(v as Tensor2D), kk, null, 0.2), x, { eps: 1e-3 });
  tf.dispose([kk, neg, x]);
});

test('InfoNCE rejects mismatched shapes and a bad temperature', () => {
  tf.tidy(() => {
    assert.throws(() => infoNCE(q(), tf.ones([3, 2]) as Tensor2D, null, 0.1), /q and k must both be \[N, D\]/);
    assert.throws(() => infoNCE(q(), k(), tf.ones([3, 4]) as Tensor2D, 0.1), /negatives must be \[K, 2\]/);
    assert.throws(() => infoNCE(q(), k(), null, 0), /temperature must be > 0/);
  });
});

test('l2Normalize: unit rows, and an all-zero row stays zero with a finite gradient on cpu and native', async () => {
  const w = tf.tensor2d([[0.3, -0.2, 0.5], [1, 2, -1]]);
  const x = tf.tensor2d([[0, 0, 0], [3, 4, 0]]);
  assertClose(tf.tidy(() => l2Normalize(x).dataSync()), [0, 0, 0, 0.6, 0.8, 0], { atol: 1e-7, rtol: 0 });
  for (const backend of ['cpu', 'native']) {
    await tf.setBackend(backend);
    const grad = tf.tidy(() => tf.grad((v: tf.Tensor) => tf.sum(tf.mul(l2Normalize(v as Tensor2D), w)))(x).arraySync() as number[][]);
    // The zero row's gradient is w / eps (torch's value, large but finite); before the fix it was NaN.
    assert.ok(grad.flat().every(Number.isFinite), `${backend}: non-finite gradient ${JSON.stringify(grad)}`);
    // Row 2: (I - u uᵀ) w / |x| with u = (0.6, 0.8, 0), |x| = 5.
    const wu = 0.6 * 1 + 0.8 * 2;
    assertClose(grad[1]!, [(1 - 0.6 * wu) / 5, (2 - 0.8 * wu) / 5, -1 / 5], { atol: 1e-6, rtol: 1e-5 });
  }
  await useBackend('native');
  assertGradientMatchesFiniteDifferences((v) => tf.sum(tf.mul(l2Normalize(v as Tensor2D), w)), tf.tensor2d([[0.5, -1, 2], [3, 4, 0.1]]), { eps: 1e-3 });
  tf.dispose([w, x]);
});
