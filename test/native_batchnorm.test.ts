import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import type { Tensor, Tensor1D } from '@tensorflow/tfjs-core';
import { batchNormTrain } from '../src/backend/ops.js';
import { assertClose, assertGradientMatchesFiniteDifferences, randomTensor, runOn, setupNative } from './helpers.js';

describe('fused training-mode batch norm', () => {
  before(setupNative);

  test('forward matches hand-computed statistics', async () => {
    // Two channels over 4 rows: channel 0 = 1,2,3,4; channel 1 = 0,0,0,8.
    const x = [1, 0, 2, 0, 3, 0, 4, 8];
    const run = () => {
      const r = batchNormTrain(tf.tensor(x, [1, 2, 2, 2]), tf.tensor1d([2, 1]), tf.tensor1d([0.5, 0]), 0);
      return [r.y, r.mean, r.variance];
    };
    for (const backend of ['native', 'cpu']) {
      const [y, mean, variance] = await runOn(backend, run);
      assertClose(mean!, [2.5, 2], {}, `${backend} mean`);
      assertClose(variance!, [1.25, 12], {}, `${backend} variance`);
      const s0 = 2 / Math.sqrt(1.25);
      const s1 = 1 / Math.sqrt(12);
      assertClose(y!, [-1.5 * s0 + 0.5, -2 * s1, -0.5 * s0 + 0.5, -2 * s1, 0.5 * s0 + 0.5, -2 * s1, 1.5 * s0 + 0.5, 6 * s1],
        {}, `${backend} y`);
    }
  });

  test('native forward and all three gradients match the composite on tfjs-cpu, plain and grouped (shuffle-BN)', async () => {
    // Channels that are multiples of 16 take the kernel's vector path (more than 128: several register chunks).
    const cases: Array<[number[], number]> = [[[4, 5, 5, 3], 1], [[2, 3, 7], 1], [[64, 16], 1], [[2, 9, 9, 33], 1], [[8, 3, 3, 5], 4], [[6, 7], 3], [[2, 5, 5, 144], 1], [[8, 3, 3, 32], 4]];
    for (const [i, [shape, groups]] of cases.entries()) {
      const c = shape[shape.length - 1]!;
      const run = () => {
        const x = randomTensor(shape, i, -2, 3);
        const gamma = randomTensor([c], 10 + i, 0.5, 1.5) as Tensor1D;
        const beta = randomTensor([c], 20 + i) as Tensor1D;
        const dy = randomTensor(shape, 30 + i);
        const f = (a: Tensor, g: Tensor, b: Tensor) => tf.sum(tf.mul(batchNormTrain(a, g as Tensor1D, b as Tensor1D, 1e-5, groups).y, dy));
        const r = batchNormTrain(x, gamma, beta, 1e-5, groups);
        return [r.y, r.mean, r.variance, ...tf.grads(f as (...a: Tensor[]) => Tensor)([x, gamma, beta])];
      };
      const expected = await runOn('cpu', run);
      const actual = await runOn('native', run);
      const names = ['y', 'mean', 'variance', 'dx', 'dgamma', 'dbeta'];
      actual.forEach((a, k) => assertClose(a, expected[k]!, { atol: 2e-4, rtol: 1e-3 }, `${shape} in ${groups} groups: ${names[k]}`));
    }
  });

  test('the fused epilogue relu(bn(x) + residual): native forward and all four gradients match the composite on tfjs-cpu', async () => {
    const cases: Array<[number[], number, boolean, boolean]> = [
      [[4, 5, 5, 3], 1, true, true],
      [[2, 9, 9, 33], 1, true, true],
      [[8, 3, 3, 5], 4, true, true],
      [[4, 5, 5, 3], 1, false, true],
      [[6, 7], 3, true, false],
      [[64, 16], 1, false, false],
      [[4, 6, 6, 16], 1, true, true],
      [[2, 5, 5, 144], 1, true, true],
      [[8, 3, 3, 32], 4, true, true],
      [[3, 4, 4, 48], 1, false, true],
    ];
    for (const [i, [shape, groups, withResidual, relu]] of cases.entries()) {
      const c = shape[shape.length - 1]!;
      const run = () => {
        const x = randomTensor(shape, i, -2, 3);
        const gamma = randomTensor([c], 10 + i, 0.5, 1.5) as Tensor1D;
        const beta = randomTensor([c], 20 + i) as Tensor1D;
        const residual = randomTensor(shape, 40 + i);
        const dy = randomTensor(shape, 30 + i);
        const f = (a: Tensor, g: Tensor, b: Tensor, r: Tensor) =>
          tf.sum(tf.mul(batchNormTrain(a, g as Tensor1D, b as Tensor1D, 1e-5, groups, { residual: withResidual ? r : undefined, relu }).y, dy));
        const y = batchNormTrain(x, gamma, beta, 1e-5, groups, { residual: withResidual ? residual : undefined, relu }).y;
        const grads = tf.grads(f as (...a: Tensor[]) => Tensor)(withResidual ? [x, gamma, beta, residual] : [x, gamma, beta]);
        return [y, ...grads];
      };
      const expected = await runOn('cpu', run);
      const actual = await runOn('native', run);
      const names = ['y', 'dx', 'dgamma', 'dbeta', 'dresidual'];
      assert.equal(actual.length, withResidual ? 5 : 4);
      actual.forEach((a, k) =>
        assertClose(a, expected[k]!, { atol: 2e-4, rtol: 1e-3 }, `${shape} in ${groups} groups, residual ${withResidual}, relu ${relu}: ${names[k]}`));
      if (relu) assert.ok(actual[0]!.some((v) => v === 0) && actual[0]!.every((v) => v >= 0), `${shape}: the ReLU clamps`);
    }
  });

  test('the fused epilogue rejects a residual of another shape, naming both', () => {
    assert.throws(
      () => batchNormTrain(tf.ones([2, 3]), tf.ones([3]) as Tensor1D, tf.zeros([3]) as Tensor1D, 1e-5, 1, { residual: tf.ones([2, 4]) }),
      /residual must have x's shape \[2,3\], got \[2,4\]/,
    );
  });

  test('native gradient matches finite differences', async () => {
    await tf.setBackend('native');
    const gamma = tf.tensor1d([1.5, 0.7, 1]);
    const beta = tf.tensor1d([0.1, -0.2, 0.3]);
    const w = randomTensor([2, 3, 3, 3], 3);
    const x = randomTensor([2, 3, 3, 3], 4);
    // A weighted sum, since sum(y) has zero gradient w.r.t. x by construction.
    assertGradientMatchesFiniteDifferences((t) => tf.sum(tf.mul(tf.square(batchNormTrain(t, gamma, beta).y), w)), x);
    // And through the fused epilogue, with respect to x and to the residual.
    const residual = randomTensor([2, 3, 3, 3], 5);
    const fused = (a: Tensor, r: Tensor) => tf.sum(tf.mul(tf.square(batchNormTrain(a, gamma, beta, 1e-5, 1, { residual: r, relu: true }).y), w));
    assertGradientMatchesFiniteDifferences((t) => fused(t, residual), x);
    assertGradientMatchesFiniteDifferences((t) => fused(x, t), residual);
  });

  test('long reductions far from zero keep the statistics and gradient sums exact to float precision', async () => {
    // 5,115 rows (not a multiple of the kernel's 64-row blocks) of values 1000 +- 0.01: float's E[x^2] - E[x]^2
    // would lose the variance (3e-5) entirely, and the gradient sums run over every row.
    const [n, h, w, c] = [5, 31, 33, 16];
    const x = new Float32Array(n * h * w * c);
    const dy = new Float32Array(x.length);
    const noise = randomTensor([x.length], 7).dataSync();
    const grad = randomTensor([x.length], 8).dataSync();
    for (let i = 0; i < x.length; i++) {
      x[i] = 1000 + (i % c) + 0.01 * noise[i]!;
      dy[i] = 1 + grad[i]!;
    }
    const rows = x.length / c;
    const mean = new Float64Array(c);
    const variance = new Float64Array(c);
    for (let i = 0; i < x.length; i++) mean[i % c] += x[i]! / rows;
    for (let i = 0; i < x.length; i++) variance[i % c] += (x[i]! - mean[i % c]!) ** 2 / rows;
    await tf.setBackend('native');
    const gamma = tf.ones([c]) as Tensor1D;
    const { value: sums, grads } = tf.valueAndGrads((g: Tensor) => {
      const r = batchNormTrain(tf.tensor(x, [n, h, w, c]), g as Tensor1D, tf.zeros([c]) as Tensor1D, 0);
      return tf.sum(tf.mul(r.y, tf.tensor(dy, [n, h, w, c])));
    })([gamma]);
    const r = batchNormTrain(tf.tensor(x, [n, h, w, c]), gamma, tf.zeros([c]) as Tensor1D, 0);
    const [m, v] = [r.mean.dataSync(), r.variance.dataSync()];
    for (let ch = 0; ch < c; ch++) {
      assert.ok(Math.abs(m[ch]! - mean[ch]!) < 1e-4, `mean[${ch}] ${m[ch]} vs ${mean[ch]}`);
      assert.ok(Math.abs(v[ch]! / variance[ch]! - 1) < 1e-3, `variance[${ch}] ${v[ch]} vs ${variance[ch]}`);
    }
    // dgamma = sum(dy * xhat) in double, against the kernel's blocked float sums; xhat from the kernel's own
    // float32 mean, whose rounding (ulp 6e-5 at 1000) shifts xhat by far more than any summation error.
    const dgamma = new Float64Array(c);
    for (let i = 0; i < x.length; i++) dgamma[i % c] += dy[i]! * ((x[i]! - m[i % c]!) / Math.sqrt(v[i % c]!));
    const got = grads[0]!.dataSync();
    for (let ch = 0; ch < c; ch++) assert.ok(Math.abs(got[ch]! - dgamma[ch]!) < 1e-3 * Math.sqrt(rows), `dgamma[${ch}] ${got[ch]} vs ${dgamma[ch]}`);
    tf.dispose([sums, grads[0]!, gamma, r.y, r.mean, r.variance]);
    await tf.setBackend('cpu');
  });

  test('the native kernel runs (not the composite)', async () => {
    await tf.setBackend('native');
    assert.ok(tf.getKernel('SelfsupBatchNormTrain', 'native'));
    const before = tf.memory().numTensors;
    const r = batchNormTrain(tf.ones([2, 2, 2, 4]), tf.ones([4]) as Tensor1D, tf.zeros([4]) as Tensor1D);
    // The composite path would leave no extra kernel outputs but goes through tidy; the native one returns 3 tensors.
    assert.equal(tf.memory().numTensors - before, 3 + 3);
    tf.dispose([r.y, r.mean, r.variance]);
  });

  test('inference FusedBatchNorm matches tfjs-cpu', async () => {
    const run = () =>
      tf.batchNorm(randomTensor([3, 4, 4, 6], 1), randomTensor([6], 2), randomTensor([6], 3, 0.5, 2), randomTensor([6], 4),
        randomTensor([6], 5), 1e-3);
    const expected = await runOn('cpu', run);
    const actual = await runOn('native', run);
    assertClose(actual[0]!, expected[0]!, { atol: 1e-5 });
  });
});
