// Native reductions (Sum, Mean, Prod, Max, Min) against tfjs-cpu: contiguous
// and scattered axes, keepDims, negative axes, size-1 dims, the multithreaded
// paths, accuracy of long sums, and gradients.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import type { Tensor } from '@tensorflow/tfjs-core';
import { reductionBlock } from '../src/backend/kernels/reduce.js';
import { assertGradientMatchesFiniteDifferences, assertNativeMatchesCpu, countCalls, randomTensor, runOn, setupNative } from './helpers.js';

type Reducer = (x: Tensor, axis?: number | number[], keepDims?: boolean) => Tensor;
const reducers: Array<[string, Reducer, number, number]> = [
  ['sum', tf.sum, -1, 1],
  ['mean', tf.mean, -1, 1],
  ['prod', tf.prod, 0.97, 1.03], // near 1, so that 70001-term products stay finite
  ['max', tf.max, -1, 1],
  ['min', tf.min, -1, 1],
];

// [shape, axes]; "block" says the axes are one contiguous block once size-1 dims are ignored.
const cases: Array<{ shape: number[]; axis?: number | number[]; block: boolean }> = [
  { shape: [4, 5, 6, 7], axis: [1, 2], block: true },
  { shape: [4, 5, 6, 7], axis: [0, 1, 2], block: true },
  { shape: [4, 5, 6, 7], axis: 3, block: true },
  { shape: [4, 5, 6, 7], axis: 0, block: true },
  { shape: [4, 5, 6, 7], axis: -1, block: true },
  { shape: [4, 5, 6, 7], axis: [-3, -2], block: true },
  { shape: [4, 5, 6, 7], axis: [0, 2], block: false },
  { shape: [4, 5, 6, 7], axis: [1, 3], block: false },
  { shape: [4, 5, 6, 7], axis: [-1, 0], block: false },
  { shape: [4, 5, 6, 7], axis: [3, 1, 0], block: false },
  { shape: [4, 5, 6, 7], axis: undefined, block: true },
  { shape: [3, 1, 4], axis: [0, 2], block: true },
  { shape: [1, 5], axis: 0, block: true },
  { shape: [37], axis: 0, block: true },
  { shape: [], axis: undefined, block: true },
  { shape: [2, 1, 3, 1, 5], axis: [1, 3], block: true },
  { shape: [2, 3, 1, 4, 5], axis: [1, 3], block: true },
  { shape: [2, 3, 2, 4, 5], axis: [1, 3], block: false },
  // Large enough for the multithreaded paths: per-output work, and the split of
  // the reduced axis when there are fewer outputs than threads.
  { shape: [16, 16, 16, 32], axis: [1, 2], block: true },
  { shape: [16, 16, 16, 32], axis: [0, 1, 2], block: true },
  { shape: [70001], axis: 0, block: true },
  { shape: [3, 40000], axis: 1, block: true },
  { shape: [2, 40000], axis: 0, block: true },
];

describe('native reductions match tfjs-cpu', () => {
  let reduceCalls: () => number;
  let transposeCalls: () => number;
  before(async () => {
    await setupNative();
    reduceCalls = countCalls('reduce');
    transposeCalls = countCalls('transpose');
  });

  for (const [name, f, lo, hi] of reducers) {
    test(`${name} over contiguous and scattered axes, with and without keepDims`, async () => {
      for (const [i, c] of cases.entries()) {
        for (const keepDims of [false, true]) {
          const what = `${name} ${JSON.stringify(c.shape)} axis ${JSON.stringify(c.axis)} keepDims ${keepDims}`;
          const [reduces, transposes] = [reduceCalls(), transposeCalls()];
          const tol = name === 'prod' ? { atol: 1e-5, rtol: 1e-4 } : { atol: 1e-5, rtol: 1e-5 };
          await assertNativeMatchesCpu(() => f(randomTensor(c.shape, 10 + i, lo, hi), c.axis, keepDims), tol, what);
          assert.equal(reduceCalls() - reduces, 1, `${what}: the native reduction did not run`);
          assert.equal(transposeCalls() - transposes, c.block ? 0 : 1, `${what}: transposed ${c.block ? '' : 'not '}first`);
        }
      }
    });
  }

  test('max and min propagate NaN; max of -Infinity rows', async () => {
    const x = () => tf.tensor2d([[1, NaN, 3], [-Infinity, -Infinity, -Infinity], [2, 5, -1]]);
    for (const f of [tf.max, tf.min] as Reducer[]) {
      for (const axis of [0, 1]) {
        const [e] = await runOn('cpu', () => f(x(), axis));
        const [a] = await runOn('native', () => f(x(), axis));
        assert.deepEqual(Array.from(a!), Array.from(e!));
      }
    }
  });

  test('long sums accumulate accurately', async () => {
    const n = 1 << 20;
    const values = new Float32Array(n);
    let exact = 0;
    for (let i = 0; i < n; i++) {
      values[i] = 0.1 + (i % 7) * 1e-3;
      exact += values[i]!;
    }
    await tf.setBackend('native');
    const full = tf.tidy(() => tf.sum(tf.tensor1d(values)).dataSync()[0]!);
    const columns = tf.tidy(() => Array.from(tf.sum(tf.tensor2d(values, [n / 4, 4]), 0).dataSync()));
    await tf.setBackend('cpu');
    assert.ok(Math.abs(full - exact) / exact < 1e-7, `sum of ${n} values: ${full}, exact ${exact}`);
    assert.ok(Math.abs(columns.reduce((s, v) => s + v, 0) - exact) / exact < 1e-6, 'column sums');
  });

  test('reductionBlock views contiguous axes as [outer, n, inner]', () => {
    assert.deepEqual(reductionBlock([8, 4, 4, 16], [1, 2]), [8, 16, 16]);
    assert.deepEqual(reductionBlock([8, 4, 4, 16], [0, 1, 2]), [1, 128, 16]);
    assert.deepEqual(reductionBlock([3, 1, 4], [0, 2]), [1, 12, 1]);
    assert.deepEqual(reductionBlock([3, 2, 4], [0, 2]), null);
    assert.deepEqual(reductionBlock([3, 2, 4], []), [24, 1, 1]);
  });
});

describe('gradients through native reductions match finite differences', () => {
  before(async () => {
    await setupNative();
    await tf.setBackend('native');
  });

  test('mean over spatial axes (global average pooling), squared', () => {
    const w = randomTensor([2, 3], 21);
    assertGradientMatchesFiniteDifferences(
      (x) => tf.sum(tf.mul(tf.square(tf.mean(x, [1, 2])), w)),
      randomTensor([2, 3, 4, 3], 22),
    );
  });

  test('sum over scattered axes, and max', () => {
    assertGradientMatchesFiniteDifferences(
      (x) => tf.add(tf.sum(tf.square(tf.sum(x, [0, 2]))), tf.sum(tf.max(x, -1))),
      randomTensor([3, 4, 2, 5], 23),
    );
  });
});
