import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import type { Tensor, Tensor4D } from '@tensorflow/tfjs-core';
import { nativeAddon } from '../src/backend/native_addon.js';
import { assertGradientMatchesFiniteDifferences, assertNativeMatchesCpu, randomTensor, setupNative } from './helpers.js';

type GradFn = (...args: Tensor[]) => Tensor;
type Pad = 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]];
interface Case {
  x: [number, number, number, number];
  k: [number, number];
  oc: number;
  stride: number;
  pad: Pad;
  dilation?: number;
  /** Forward tolerance, where the default 1e-4 is below the kernel's rounding. */
  atol?: number;
}

const cases: Case[] = [
  { x: [2, 8, 8, 3], k: [3, 3], oc: 4, stride: 1, pad: 'same' },
  { x: [1, 7, 9, 5], k: [3, 3], oc: 6, stride: 2, pad: 'same' },
  { x: [3, 11, 6, 2], k: [5, 3], oc: 3, stride: 2, pad: 'valid' },
  { x: [2, 10, 10, 4], k: [3, 3], oc: 8, stride: 2, pad: [[0, 0], [1, 1], [1, 1], [0, 0]] },
  { x: [1, 9, 9, 3], k: [3, 3], oc: 2, stride: 1, pad: 'same', dilation: 2 },
  { x: [2, 6, 6, 16], k: [1, 1], oc: 32, stride: 2, pad: 'valid' },
  { x: [1, 13, 13, 3], k: [7, 7], oc: 5, stride: 2, pad: [[0, 0], [3, 3], [3, 3], [0, 0]] },
  { x: [2, 5, 7, 3], k: [2, 2], oc: 3, stride: 3, pad: 'valid' },
  // Winograd (forward and stride-1 backward-data), see the next describe.
  { x: [2, 8, 8, 64], k: [3, 3], oc: 64, stride: 1, pad: 'same' },
  { x: [1, 10, 13, 80], k: [3, 3], oc: 96, stride: 1, pad: 'same' },
  { x: [2, 10, 10, 64], k: [3, 3], oc: 64, stride: 1, pad: 'valid' }, // backward-data falls back to direct
  { x: [3, 4, 5, 128], k: [3, 3], oc: 64, stride: 1, pad: 'same' }, // a 4x5 map: one tile high
  // Backward-weights in Winograd with 256 and 512 channels (it once crashed there on unaligned scratch).
  // Sums of 2,304-4,608 terms, outputs up to ~30: Winograd's transforms leave errors near 1e-4 there.
  { x: [3, 4, 4, 256], k: [3, 3], oc: 512, stride: 1, pad: 'same', atol: 1e-3 },
  { x: [1, 8, 8, 512], k: [3, 3], oc: 256, stride: 1, pad: 'same', atol: 1e-3 },
];

const label = (c: Case) => `x${c.x.join('x')} k${c.k.join('x')} oc${c.oc} s${c.stride} ${JSON.stringify(c.pad)} d${c.dilation ?? 1}`;

describe('native conv2d matches tfjs-cpu', () => {
  before(setupNative);

  for (const [i, c] of cases.entries()) {
    const x = () => randomTensor(c.x, 10 + i) as Tensor4D;
    const w = () => randomTensor([c.k[0], c.k[1], c.x[3], c.oc], 20 + i) as Tensor4D;
    const d = c.dilation ?? 1;

    test(`forward ${label(c)}`, async () => {
      await assertNativeMatchesCpu(() => tf.conv2d(x(), w(), c.stride, c.pad, 'NHWC', d), { atol: c.atol ?? 1e-4 });
    });

    test(`fused bias+relu ${label(c)}`, async () => {
      const bias = () => randomTensor([c.oc], 30 + i);
      await assertNativeMatchesCpu(
        () => tf.fused.conv2d({ x: x(), filter: w(), strides: c.stride, pad: c.pad, dilations: d, bias: bias(), activation: 'relu' }),
        { atol: c.atol ?? 1e-4 },
      );
    });

    if (d === 1) {
      test(`backward data and filter ${label(c)}`, async () => {
        await assertNativeMatchesCpu(() => {
          const dy = randomTensor(tf.conv2d(x(), w(), c.stride, c.pad).shape, 40 + i) as Tensor4D;
          const g = tf.grads(((a: Tensor4D, b: Tensor4D) => tf.sum(tf.mul(tf.conv2d(a, b, c.stride, c.pad), dy))) as GradFn);
          return g([x(), w()]);
        }, { atol: 2e-4, rtol: 2e-4 });
      });
    }
  }

  test('depthwise forward and backward', async () => {
    for (const [i, [shape, mult, stride]] of ([[[2, 9, 9, 4], 1, 1], [[1, 8, 7, 3], 2, 2]] as const).entries()) {
      const x = () => randomTensor([...shape], 50 + i) as Tensor4D;
      const w = () => randomTensor([3, 3, shape[3], mult], 60 + i) as Tensor4D;
      await assertNativeMatchesCpu(() => {
        const f = (a: Tensor4D, b: Tensor4D) => tf.depthwiseConv2d(a, b, stride, 'same');
        const y = f(x(), w());
        const dy = randomTensor(y.shape, 70 + i);
        return [y, ...tf.grads(((a: Tensor4D, b: Tensor4D) => tf.sum(tf.mul(f(a, b), dy))) as GradFn)([x(), w()])];
      }, { atol: 2e-4 });
    }
  });

  test('the native kernel is the one registered', () => {
    assert.notEqual(tf.getKernel('Conv2D', 'native')?.kernelFunc, tf.getKernel('Conv2D', 'cpu')?.kernelFunc);
  });

  test('conv gradients match finite differences on native', async () => {
    await tf.setBackend('native');
    const w = randomTensor([3, 3, 2, 3], 81) as Tensor4D;
    const x = randomTensor([2, 6, 6, 2], 82) as Tensor4D;
    const loss = (a: Tensor4D, b: Tensor4D) => tf.sum(tf.square(tf.conv2d(a, b, 2, 'same')));
    assertGradientMatchesFiniteDifferences((t) => loss(t as Tensor4D, w), x);
    assertGradientMatchesFiniteDifferences((t) => loss(x, t as Tensor4D), w);
  });
});

describe('native conv2d algorithm choice', () => {
  before(setupNative);
  // dims as the addon takes them: n h w c kh kw oc oh ow sh sw dh dw pt pl pb pr groups relu
  const dims = (h: number, c: number, oc: number, pad: number) => {
    const o = h + 2 * pad - 2;
    return [2, h, h, c, 3, 3, oc, o, o, 1, 1, 1, 1, pad, pad, pad, pad, 1, 0];
  };

  test('3x3 stride-1 convolutions with 64+ channels (multiples of 16) on 4x4+ maps run Winograd, the rest direct', (t) => {
    const impl = (d: number[]) => nativeAddon().conv2dImplementation(d);
    // Winograd is oneDNN's AVX-512 kernel only.
    if (!/avx512/.test(impl(dims(8, 64, 64, 1)))) {
      t.skip('no AVX-512: oneDNN has no Winograd kernel here');
      return;
    }
    assert.match(impl(dims(8, 64, 64, 1)), /wino/);
    assert.match(impl(dims(16, 80, 96, 1)), /wino/);
    assert.match(impl(dims(4, 512, 512, 1)), /wino/, 'a 4x4 map');
    assert.doesNotMatch(impl(dims(3, 512, 512, 1)), /wino/, 'a 3x3 map');
    const weights = (d: number[]) => nativeAddon().conv2dImplementation(d, 'backwardWeights');
    assert.match(weights(dims(8, 64, 64, 1)), /wino/, 'backward-weights');
    assert.match(weights(dims(4, 512, 512, 1)), /wino/, 'backward-weights on a 4x4 map, 512 channels');
    assert.doesNotMatch(weights(dims(16, 32, 32, 1)), /wino/, 'backward-weights with 32 channels');
    assert.doesNotMatch(impl(dims(16, 32, 32, 1)), /wino/, '32 channels');
    assert.doesNotMatch(impl(dims(16, 72, 64, 1)), /wino/, '72 channels');
    assert.match(impl(dims(10, 64, 64, 0)), /wino/, 'VALID padding');
    // Padding 2: the backward-data of a VALID convolution, run as a forward one; oneDNN declines it.
    assert.doesNotMatch(impl(dims(10, 64, 64, 2)), /wino/, 'padding 2');
  });
});
