// Native element-wise kernels (unary, broadcasting binary, AddN, Softmax, the
// fused SGD, EMA and non-finite checks) against tfjs-cpu, on every broadcasting pattern, special values and gradients.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import type { Tensor } from '@tensorflow/tfjs-core';
import { nativeAddon } from '../src/backend/native_addon.js';
import { axpbyAll, firstNonFiniteIndex, sgdMomentumUpdate } from '../src/backend/ops.js';
import {
  countCalls,
  assertClose,
  assertGradientMatchesFiniteDifferences,
  assertNativeMatchesCpu,
  randomArray,
  randomTensor,
  runOn,
  setupNative,
} from './helpers.js';

async function nativeMatches(calls: () => number, fn: () => Tensor | Tensor[], what: string): Promise<void> {
  const before = calls();
  await assertNativeMatchesCpu(fn, { atol: 1e-5, rtol: 1e-5 }, what);
  assert.ok(calls() > before, `${what}: the native kernel did not run`);
}

/** Same values on both backends, NaN and infinities included. */
async function sameSpecialValues(fn: () => Tensor, what: string): Promise<void> {
  const [expected] = await runOn('cpu', fn);
  const [actual] = await runOn('native', fn);
  expected!.forEach((e, i) => {
    const a = actual![i]!;
    const ok = Number.isNaN(e) ? Number.isNaN(a) : Number.isFinite(e) ? Math.abs(a - e) <= 1e-6 + 1e-5 * Math.abs(e) : a === e;
    assert.ok(ok, `${what}: element ${i} is ${a}, tfjs-cpu gives ${e}`);
  });
}

const shapes = [[], [1], [7], [6, 9], [3, 1, 5], [2, 3, 4, 5], [2, 1, 3, 1, 4], [70001]];

const unaryOps: Array<[string, (x: Tensor) => Tensor, number, number]> = [
  ['relu', (x) => tf.relu(x), -1, 1],
  ['relu6', (x) => tf.relu6(x), -8, 8],
  ['leakyRelu', (x) => tf.leakyRelu(x, 0.3), -1, 1],
  ['elu', (x) => tf.elu(x), -3, 3],
  ['step', (x) => tf.step(x, 0.25), -1, 1],
  ['exp', (x) => tf.exp(x), -10, 10],
  ['log', (x) => tf.log(x), 0.01, 10],
  ['sqrt', (x) => tf.sqrt(x), 0, 10],
  ['rsqrt', (x) => tf.rsqrt(x), 0.1, 10],
  ['square', (x) => tf.square(x), -3, 3],
  ['abs', (x) => tf.abs(x), -1, 1],
  ['neg', (x) => tf.neg(x), -1, 1],
  ['reciprocal', (x) => tf.reciprocal(x), 0.1, 2],
  ['sigmoid', (x) => tf.sigmoid(x), -20, 20],
  ['tanh', (x) => tf.tanh(x), -5, 5],
];

const special = [NaN, Infinity, -Infinity, 0, -0, 1e-30, -1e-30, 0.3, -0.7, 5, 88.5, -88, -100, 100];

// [a shape, b shape]: equal, scalars, trailing vectors, both sides and middle
// dims broadcasting, rank 6, and two sizes large enough to run multithreaded.
const patterns: Array<[number[], number[]]> = [
  [[3, 5, 7], [3, 5, 7]],
  [[], [4, 5]],
  [[4, 5], []],
  [[], []],
  [[2, 3, 4, 5], [5]],
  [[5], [2, 3, 4, 5]],
  [[4, 1, 6], [5, 1]],
  [[2, 1, 3, 1, 5], [2, 4, 1, 6, 5]],
  [[1, 5], [4, 1]],
  [[7, 1], [7, 9]],
  [[2, 3, 1], [1, 1, 4]],
  [[1, 1], [1]],
  [[2, 1, 3, 1, 2, 3], [1, 2, 1, 3, 2, 1]],
  [[64, 9, 9, 8], [8]],
  [[33, 1, 1000], [1, 2, 1]],
];

const binaryOps: Array<[string, (a: Tensor, b: Tensor) => Tensor]> = [
  ['add', tf.add],
  ['sub', tf.sub],
  ['mul', tf.mul],
  ['div', tf.div],
  ['maximum', tf.maximum],
  ['minimum', tf.minimum],
  ['squaredDifference', tf.squaredDifference],
];

describe('native element-wise kernels match tfjs-cpu', () => {
  let unaryCalls: () => number;
  let binaryCalls: () => number;
  let addNCalls: () => number;
  let softmaxCalls: () => number;
  before(async () => {
    await setupNative();
    unaryCalls = countCalls('unary');
    binaryCalls = countCalls('binary');
    addNCalls = countCalls('addN');
    softmaxCalls = countCalls('softmax');
  });

  for (const [name, f, lo, hi] of unaryOps) {
    test(`unary ${name}`, async () => {
      for (const [i, shape] of shapes.entries()) {
        await nativeMatches(unaryCalls, () => f(randomTensor(shape, 100 + i, lo, hi)), `${name} ${JSON.stringify(shape)}`);
      }
      await sameSpecialValues(() => f(tf.tensor1d(special)), `${name} of special values`);
    });
  }

  for (const [name, f] of binaryOps) {
    test(`binary ${name} on every broadcasting pattern`, async () => {
      for (const [i, [as, bs]] of patterns.entries()) {
        // Denominators stay away from 0.
        await nativeMatches(
          binaryCalls,
          () => f(randomTensor(as, 200 + i), randomTensor(bs, 300 + i, 0.5, 2)),
          `${name} ${JSON.stringify(as)} ${JSON.stringify(bs)}`,
        );
      }
      const a = [NaN, 1, NaN, Infinity, -Infinity, 0, 2];
      const b = [1, NaN, NaN, -Infinity, 3, 0, -0];
      await sameSpecialValues(() => f(tf.tensor1d(a), tf.tensor1d(b)), `${name} of special values`);
    });
  }

  test('EluGrad through the gradient of elu', async () => {
    await nativeMatches(
      binaryCalls,
      () => tf.grad((x: Tensor) => tf.sum(tf.mul(tf.elu(x), randomTensor([5, 7], 2))))(randomTensor([5, 7], 1, -3, 3)),
      'elu gradient',
    );
  });

  test('AddN of 2, 3 and 7 tensors', async () => {
    for (const [count, shape] of [[2, [3, 4]], [3, [70001]], [7, [2, 1, 5]]] as Array<[number, number[]]>) {
      const xs = () => Array.from({ length: count }, (_, k) => randomTensor(shape, 400 + k));
      await nativeMatches(addNCalls, () => tf.addN(xs()), `addN of ${count} ${JSON.stringify(shape)}`);
    }
  });

  test('Softmax over the last axis', async () => {
    for (const [i, shape] of [[5], [3, 7], [2, 3, 1], [2, 3, 4, 17], [64, 1000]].entries()) {
      await nativeMatches(softmaxCalls, () => tf.softmax(randomTensor(shape, 500 + i, -30, 30)), `softmax ${shape}`);
    }
    await nativeMatches(softmaxCalls, () => tf.softmax(randomTensor([4, 6], 9), 1), 'softmax dim 1 of a matrix');
    await sameSpecialValues(() => tf.softmax(tf.tensor2d([[1, 2, Infinity], [-Infinity, 0, 1], [NaN, 0, 1]])), 'softmax special');
    await assertNativeMatchesCpu(() => tf.logSoftmax(randomTensor([8, 33], 3, -20, 20)), { atol: 1e-5 }, 'logSoftmax');
  });

  test('the fused momentum-SGD update matches its composite of stock ops, plain and Nesterov, with weight decay', async () => {
    const sgdCalls = countCalls('sgdMomentum');
    for (const [i, [shape, nesterov, weightDecay]] of ([[[3, 3, 16, 32], false, 5e-4], [[70001], true, 0.01], [[7], false, 0]] as Array<
      [number[], boolean, number]
    >).entries()) {
      const settings = { lr: 0.3, momentum: 0.9, weightDecay, nesterov };
      await nativeMatches(sgdCalls, () => sgdMomentumUpdate(randomTensor(shape, 600 + i), randomTensor(shape, 700 + i), randomTensor(shape, 800 + i), settings),
        `sgd ${JSON.stringify(shape)} nesterov ${nesterov} wd ${weightDecay}`);
    }
  });

  test('firstNonFiniteIndex: the first tensor with a NaN or an infinity, -1 when none; native and the composite agree', async () => {
    const finiteCalls = countCalls('firstNonFinite');
    const withValue = (shape: number[], seed: number, at: number, value: number) => {
      const v = randomArray(shape.reduce((a, b) => a * b, 1), seed);
      v[at] = value;
      return () => tf.tensor(v, shape);
    };
    const cases: Array<[string, Array<() => Tensor>, number]> = [
      ['all finite, the largest float included', [withValue([3, 3, 4, 8], 1, 5, 3.4e38), withValue([70001], 2, 0, -3.4e38), withValue([7], 3, 0, 1e-45)], -1],
      ['NaN in the last element of the third', [withValue([5], 4, 0, 0), withValue([2, 3], 5, 0, 1), withValue([70001], 6, 70000, NaN)], 2],
      ['+Infinity in the middle of the first, NaN later', [withValue([70001], 7, 35000, Infinity), withValue([4], 8, 1, NaN)], 0],
      ['-Infinity in a scalar', [withValue([3], 9, 0, 0), withValue([], 10, 0, -Infinity)], 1],
      ['no tensors', [], -1],
    ];
    for (const [what, makers, expected] of cases) {
      for (const backend of ['cpu', 'native']) {
        await tf.setBackend(backend);
        const before = finiteCalls();
        const tensors = makers.map((make) => make());
        assert.equal(firstNonFiniteIndex(tensors), expected, `${what} on ${backend}`);
        tf.dispose(tensors);
        if (backend === 'native' && makers.length > 0) assert.equal(finiteCalls(), before + 1, `${what}: one native call`);
      }
    }
  });

  test('axpbyAll (a whole network\'s EMA update in one call) matches the composite of stock ops', async () => {
    const axpbyCalls = countCalls('axpby');
    const shapes = [[3, 3, 16, 32], [70001], [7], []];
    const pairs = () => [shapes.map((shape, i) => randomTensor(shape, 900 + i)), shapes.map((shape, i) => randomTensor(shape, 950 + i))] as const;
    await nativeMatches(axpbyCalls, () => axpbyAll(...pairs(), 0.99, 0.01), 'axpby 0.99, 0.01');
    await nativeMatches(axpbyCalls, () => axpbyAll(...pairs(), -2, 0.5), 'axpby -2, 0.5');
    assert.throws(() => axpbyAll([tf.zeros([2])], [tf.zeros([3])], 1, 1), /pair 0 has shapes \[2\] and \[3\]/);
    assert.deepEqual(axpbyAll([], [], 1, 1), []);
  });

  test('the addon log-softmax matches tf.logSoftmax', async () => {
    const x = randomArray(6 * 33, 4, -20, 20);
    const [expected] = await runOn('cpu', () => tf.logSoftmax(tf.tensor2d(x, [6, 33])));
    const y = new Float32Array(x.length);
    nativeAddon().softmax(x, y, 6, 33, true);
    assertClose(y, expected!, { atol: 1e-5, rtol: 1e-5 }, 'log-softmax');
  });

  test('a subarray view (contiguous slice) feeds native ops; int32 declines to tfjs-cpu', async () => {
    const view = () => tf.slice(randomTensor([4, 5], 1), [1, 0], [2, 5]);
    await nativeMatches(binaryCalls, () => tf.mul(view(), randomTensor([5], 2)), 'mul of a view');
    await nativeMatches(unaryCalls, () => tf.exp(view()), 'exp of a view');
    const before = binaryCalls();
    await assertNativeMatchesCpu(() => tf.add(tf.tensor1d([1, 2, 3], 'int32'), tf.tensor1d([4, 5, 6], 'int32')), {}, 'int32 add');
    assert.equal(binaryCalls(), before, 'an int32 add ran natively');
  });

  test('the addon rejects buffers that disagree with their shapes', () => {
    const addon = nativeAddon();
    const code = addon.binaryOps.indexOf('add');
    const y = new Float32Array(6);
    assert.throws(() => addon.binary(code, new Float32Array(5), [2, 3], new Float32Array(3), [3], y, [2, 3]), /a has 5 elements/);
    assert.throws(() => addon.binary(code, new Float32Array(6), [2, 3], new Float32Array(2), [2], y, [2, 3]), /broadcast/);
    assert.throws(() => addon.unary(-1, y, y, 0), /unknown op/);
  });
});

describe('gradients through native element-wise kernels match finite differences', () => {
  before(async () => {
    await setupNative();
    await tf.setBackend('native');
  });

  test('softmax cross-entropy', () => {
    const labels = tf.oneHot(tf.tensor1d([0, 3, 2, 4], 'int32'), 5);
    assertGradientMatchesFiniteDifferences((x) => tf.losses.softmaxCrossEntropy(labels, x), randomTensor([4, 5], 11, -2, 2));
  });

  test('softmax (the Softmax kernel; softmaxCrossEntropy uses logSumExp instead)', () => {
    const w = randomTensor([3, 6], 17);
    assertGradientMatchesFiniteDifferences((x) => tf.sum(tf.mul(tf.softmax(x), w)), randomTensor([3, 6], 18, -2, 2));
  });

  test('sigmoid, tanh, exp, elu and division', () => {
    const b = randomTensor([3, 4], 12, 0.5, 2);
    assertGradientMatchesFiniteDifferences(
      (x) => tf.sum(tf.add(tf.mul(tf.sigmoid(x), tf.tanh(x)), tf.div(tf.add(tf.exp(tf.mul(x, 0.5)), tf.elu(x)), b))),
      randomTensor([3, 4], 13),
    );
  });

  test('relu and a broadcast (bias-like) add, whose gradient is reduced over the broadcast axes', () => {
    // |x| >= 0.2 and |bias| <= 0.1 keep x + bias off relu's kink, where finite differences fail.
    const r = randomTensor([2, 3, 4], 14);
    const x = tf.add(r, tf.mul(tf.sign(r), 0.2));
    const w = randomTensor([2, 3, 4], 15);
    assertGradientMatchesFiniteDifferences(
      (bias) => tf.sum(tf.mul(tf.relu(tf.add(x, bias)), w)),
      randomTensor([4], 16, -0.1, 0.1),
    );
  });
});
