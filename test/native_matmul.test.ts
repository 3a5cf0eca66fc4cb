import { before, describe, test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Tensor } from '@tensorflow/tfjs-core';
import { assertGradientMatchesFiniteDifferences, assertNativeMatchesCpu, randomTensor, setupNative } from './helpers.js';

describe('native matmul matches tfjs-cpu', () => {
  before(setupNative);

  const shapes: Array<[number[], number[], boolean, boolean]> = [
    [[5, 7], [7, 3], false, false],
    [[7, 5], [7, 3], true, false],
    [[5, 7], [3, 7], false, true],
    [[7, 5], [3, 7], true, true],
    [[4, 5, 6], [4, 6, 2], false, false],
    [[4, 6, 5], [1, 3, 6], true, true],
    [[1, 5, 6], [3, 6, 9], false, false],
    [[2, 3, 4, 5], [2, 3, 5, 1], false, false],
    [[1, 1], [1, 1], false, false],
    [[64, 513], [513, 129], false, false],
  ];
  for (const [i, [sa, sb, ta, tb]] of shapes.entries()) {
    test(`${sa} x ${sb} transposeA=${ta} transposeB=${tb}`, async () => {
      await assertNativeMatchesCpu(() => tf.matMul(randomTensor(sa, i), randomTensor(sb, 100 + i), ta, tb), { atol: 1e-4 });
    });
  }

  test('fused bias + relu', async () => {
    await assertNativeMatchesCpu(
      () => tf.fused.matMul({ a: randomTensor([6, 8], 1), b: randomTensor([8, 5], 2), bias: randomTensor([5], 3), activation: 'relu' }),
    );
  });

  test('gradients on native match finite differences', async () => {
    await tf.setBackend('native');
    const b = randomTensor([4, 3], 5);
    const a = randomTensor([2, 4], 6);
    assertGradientMatchesFiniteDifferences((t: Tensor) => tf.sum(tf.square(tf.matMul(t, b))), a);
    assertGradientMatchesFiniteDifferences((t: Tensor) => tf.sum(tf.square(tf.matMul(a, t))), b);
  });

  test('gradients through transposed and fused forms match tfjs-cpu', async () => {
    await assertNativeMatchesCpu(() => {
      const f = (a: Tensor, b: Tensor) =>
        tf.sum(tf.square(tf.fused.matMul({ a, b, transposeB: true, bias: tf.ones([3]), activation: 'relu' })));
      return tf.grads(f as (...args: Tensor[]) => Tensor)([randomTensor([5, 4], 7), randomTensor([3, 4], 8)]);
    });
  });
});
