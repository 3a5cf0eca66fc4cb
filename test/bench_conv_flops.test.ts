// The engine benchmark's FLOP count per convolution call: hand-computed
// values, and on a real profiled convolution with both gradients (each of the
// three directions costs the same multiply-adds), read from tfjs's profiler as
// the benchmark reads it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import * as tf from '../src/core/tf.js';
import { convFlops } from '../bench/conv_flops.js';
import { randomTensor, setupNative } from './helpers.js';

test('convFlops: hand-computed forward, backward-data and backward-weights counts', () => {
  // 2 images, 8x8 output, 4 output channels, 3x3 filter over 3 input channels: 2*8*8*4 outputs x 27 MACs x 2.
  assert.equal(convFlops('Conv2D', [[2, 8, 8, 3], [3, 3, 3, 4]], [[2, 8, 8, 4]]), 2 * 2 * 8 * 8 * 4 * 27);
  // Stride 2: the output (and dy) is 4x4.
  assert.equal(convFlops('Conv2DBackpropInput', [[2, 4, 4, 4], [3, 3, 3, 4]], [[2, 8, 8, 3]]), 2 * 2 * 4 * 4 * 4 * 27);
  assert.equal(convFlops('Conv2DBackpropFilter', [[2, 8, 8, 3], [2, 4, 4, 4]], [[3, 3, 3, 4]]), 2 * 2 * 4 * 4 * 4 * 27);
  assert.equal(convFlops('FusedConv2D', [[1, 5, 5, 2], [1, 1, 2, 6], [6]], [[1, 5, 5, 6]]), 2 * 25 * 6 * 2);
  assert.equal(convFlops('MatMul', [[2, 3], [3, 4]], [[2, 4]]), undefined);
  // A depthwise-shaped filter (channel multiplier, not output channels, last) is not a Conv2D call.
  assert.equal(convFlops('Conv2D', [[1, 5, 5, 2], [3, 3, 2, 1]], [[1, 5, 5, 2]]), undefined);
});

test('convFlops on the profiler records of a strided convolution and its gradients: the three directions cost the same', async () => {
  await setupNative();
  const x = randomTensor([2, 9, 9, 3], 1) as Tensor4D;
  const w = randomTensor([3, 3, 3, 5], 2) as Tensor4D;
  const info = await tf.profile(() => {
    const grads = tf.grads((a, b) => tf.sum(tf.conv2d(a as Tensor4D, b as Tensor4D, 2, 'same')))([x, w]);
    return grads;
  });
  (info.result as tf.Tensor[]).forEach((t) => t.dispose());
  x.dispose();
  w.dispose();
  const counted = new Map<string, number>();
  for (const k of info.kernels) {
    const flops = convFlops(k.name, k.inputShapes, k.outputShapes);
    if (flops !== undefined) counted.set(k.name, flops);
  }
  const expected = 2 * (2 * 5 * 5 * 5) * (3 * 3 * 3);
  assert.deepEqual(Object.fromEntries(counted), { Conv2D: expected, Conv2DBackpropInput: expected, Conv2DBackpropFilter: expected });
});
