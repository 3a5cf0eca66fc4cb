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
    const cases: Array<[number[], number]> = [[[4, 5, 5, 3], 1], [[2, 3, 7], 1], [[64, 16], 1], [[2, 9, 9, 33], 1], [[8, 3, 3, 5], 4], [[6, 7], 3]];
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
