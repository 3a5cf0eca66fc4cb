import { before, describe, test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import { globalAvgPool } from '../src/nn/resnet.js';
import { assertGradientMatchesFiniteDifferences, assertNativeMatchesCpu, randomTensor, setupNative } from './helpers.js';

type Case = [number[], number, number, 'same' | 'valid'];
const cases: Case[] = [
  [[2, 8, 8, 3], 2, 2, 'valid'],
  [[1, 9, 7, 4], 3, 2, 'same'],
  [[2, 5, 5, 2], 3, 1, 'same'],
  [[1, 11, 11, 5], 3, 2, 'valid'],
  [[3, 4, 6, 1], 2, 3, 'same'],
];

describe('native pooling', () => {
  before(setupNative);

  for (const [i, [shape, size, stride, pad]] of cases.entries()) {
    const x = () => randomTensor(shape, i) as Tensor4D;
    test(`max and avg forward ${shape} k${size} s${stride} ${pad}`, async () => {
      await assertNativeMatchesCpu(() => [tf.maxPool(x(), size, stride, pad), tf.avgPool(x(), size, stride, pad)]);
    });
    test(`max pool gradient ${shape} k${size} s${stride} ${pad} matches tfjs-cpu`, async () => {
      await assertNativeMatchesCpu(() => tf.grad((t) => tf.sum(tf.square(tf.maxPool(t as Tensor4D, size, stride, pad))))(x()));
    });
    if (pad === 'valid') {
      // tfjs-cpu's AvgPoolGrad ignores padding; ours is checked against finite differences below.
      test(`avg pool gradient ${shape} k${size} s${stride} valid matches tfjs-cpu`, async () => {
        await assertNativeMatchesCpu(() => tf.grad((t) => tf.sum(tf.square(tf.avgPool(t as Tensor4D, size, stride, pad))))(x()));
      });
    }
    test(`pool gradients ${shape} k${size} s${stride} ${pad} match finite differences`, async () => {
      await tf.setBackend('native');
      const w = randomTensor(tf.maxPool(x(), size, stride, pad).shape, 99);
      assertGradientMatchesFiniteDifferences((t) => tf.sum(tf.mul(tf.avgPool(t as Tensor4D, size, stride, pad), w)), x());
      // Small steps keep max pooling's argmax stable.
      assertGradientMatchesFiniteDifferences((t) => tf.sum(tf.mul(tf.maxPool(t as Tensor4D, size, stride, pad), w)), x(),
        { eps: 1e-3, atol: 5e-3 });
    });
  }

  // globalAvgPool is an average pool over the whole (possibly non-square) map,
  // for its one-kernel gradient; it must equal tf.mean over H and W.
  for (const [i, shape] of [[3, 5, 7, 4], [4, 2, 2, 8], [2, 1, 6, 3]].entries()) {
    test(`globalAvgPool ${shape} on native equals tf.mean on tfjs-cpu, forward and gradient`, async () => {
      const x = () => randomTensor(shape, 20 + i) as Tensor4D;
      const w = () => randomTensor([shape[0]!, shape[3]!], 30 + i);
      await assertNativeMatchesCpu(() => {
        const viaPool = tf.getBackend() === 'native';
        const pool = (t: Tensor4D) => (viaPool ? globalAvgPool(t) : tf.mean(t, [1, 2]));
        return [pool(x()), tf.grad((t) => tf.sum(tf.mul(pool(t as Tensor4D), w())))(x())];
      });
    });
  }
});
