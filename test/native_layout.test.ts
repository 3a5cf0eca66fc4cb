// Native layout kernels (Transpose, Concat, Slice, SplitV, PadV2, Tile, GatherV2) against
// tfjs-cpu on ranks 0 to 6, size-1 dims, the tiled and multithreaded paths,
// and gradients through them.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import type { Tensor } from '@tensorflow/tfjs-core';
import { nativeAddon } from '../src/backend/native_addon.js';
import { assertGradientMatchesFiniteDifferences, assertNativeMatchesCpu, countCalls, randomTensor, setupNative } from './helpers.js';

async function exactlyLikeCpu(calls: () => number, fn: () => Tensor, what: string): Promise<void> {
  const before = calls();
  await assertNativeMatchesCpu(fn, { atol: 0, rtol: 0 }, what);
  assert.ok(calls() > before, `${what}: the native kernel did not run`);
}

// (tf.transpose of rank 0 or 1 is a clone that runs no kernel.)
const transposes: Array<[number[], number[]]> = [
  [[33, 65], [1, 0]],
  [[1, 1], [1, 0]],
  [[4, 33, 17], [0, 2, 1]],
  [[4, 33, 17], [2, 0, 1]],
  [[3, 9, 10, 17], [0, 3, 1, 2]],
  [[3, 9, 10, 17], [0, 2, 3, 1]],
  [[1, 5, 1, 3], [2, 3, 0, 1]],
  [[2, 3, 4, 5, 6], [4, 1, 3, 0, 2]],
  [[2, 3, 1, 5, 2, 3], [5, 4, 3, 2, 1, 0]],
  [[2, 3, 4, 5], [0, 1, 2, 3]],
  [[16, 32, 32, 16], [0, 3, 1, 2]],
];

describe('native layout kernels match tfjs-cpu', () => {
  let calls: Record<string, () => number>;
  before(async () => {
    await setupNative();
    calls = Object.fromEntries(['transpose', 'concat', 'slice', 'pad', 'tile', 'gatherRows'].map((n) => [n, countCalls(n)]));
  });

  test('transpose', async () => {
    for (const [i, [shape, perm]] of transposes.entries()) {
      await exactlyLikeCpu(calls.transpose!, () => tf.transpose(randomTensor(shape, i), perm), `transpose ${shape} by ${perm}`);
    }
  });

  test('concat along every axis, of 2 to 10 inputs, skipping empty ones', async () => {
    const cases: Array<[number[][], number]> = [
      [[[3], [5], [1]], 0],
      [[[2, 3], [4, 3]], 0],
      [[[2, 3], [2, 1], [2, 4]], 1],
      [[[2, 3, 4, 5], [2, 3, 1, 5], [2, 3, 0, 5], [2, 3, 7, 5]], 2],
      [[[2, 3, 4, 5], [2, 3, 4, 1]], -1],
      [[[1, 2, 1, 2, 1], [1, 2, 1, 2, 3]], 4],
      [Array.from({ length: 10 }, (_, k) => [4, k + 1, 3]), 1],
      [[[64, 16, 16, 24], [64, 16, 16, 8]], 3],
    ];
    for (const [i, [shapes, axis]] of cases.entries()) {
      await exactlyLikeCpu(
        calls.concat!,
        () => tf.concat(shapes.map((s, k) => randomTensor(s, 10 * i + k)), axis),
        `concat ${JSON.stringify(shapes)} axis ${axis}`,
      );
    }
  });

  test('slice (non-contiguous; contiguous slices stay zero-copy views in tfjs-cpu)', async () => {
    const cases: Array<[number[], number[], number[]]> = [
      [[5, 6], [1, 2], [3, 3]],
      [[5, 6], [0, 1], [-1, 4]],
      [[4, 5, 6], [1, 0, 2], [2, 5, 3]],
      [[2, 1, 6, 3], [0, 0, 1, 1], [2, 1, 4, 1]],
      [[3, 4, 5, 6, 7], [1, 1, 1, 1, 1], [1, 2, 3, 4, 5]],
      [[2, 3, 2, 3, 2, 3], [0, 1, 0, 1, 0, 1], [2, 2, 2, 2, 2, 2]],
      [[64, 40, 40], [0, 2, 3], [64, 32, 32]],
    ];
    for (const [i, [shape, begin, size]] of cases.entries()) {
      await exactlyLikeCpu(calls.slice!, () => tf.slice(randomTensor(shape, i), begin, size), `slice ${shape} at ${begin} size ${size}`);
    }
    const before = calls.slice!();
    await assertNativeMatchesCpu(() => tf.slice(randomTensor([4, 5, 6], 1), [1, 0, 0], [2, 5, 6]), {}, 'contiguous slice');
    assert.equal(calls.slice!(), before, 'a contiguous slice should be left to tfjs-cpu');
  });

  test('split into sizes (with a -1) or equal parts, along every axis', async () => {
    const cases: Array<[number[], number[] | number, number]> = [
      [[64, 4097], [1, -1], 1],
      [[6, 5], 3, 0],
      [[2, 9, 4], [2, 3, 4], 1],
      [[3, 4, 5, 6], [1, 2, 3], -1],
      [[1, 6, 1, 4], 2, 3],
    ];
    for (const [i, [shape, splits, axis]] of cases.entries()) {
      await exactlyLikeCpu(calls.slice!, () => tf.concat(tf.split(randomTensor(shape, i), splits, axis).map((t) => tf.reshape(t, [-1])), 0), `split ${shape} by ${splits} axis ${axis}`);
    }
  });

  test('pad with constants', async () => {
    const cases: Array<[number[], Array<[number, number]>, number]> = [
      [[5], [[2, 3]], 0],
      [[3, 4], [[1, 0], [0, 2]], 1.5],
      [[2, 5, 6, 3], [[0, 0], [1, 1], [1, 1], [0, 0]], 0],
      [[4, 5, 6, 7], [[1, 0], [0, 2], [1, 1], [3, 0]], -2],
      [[1, 1, 1], [[0, 0], [2, 2], [0, 0]], 7],
      [[2, 3, 1, 2, 2], [[1, 1], [0, 1], [2, 0], [0, 0], [1, 1]], 0],
      [[32, 30, 30, 8], [[0, 0], [1, 1], [1, 1], [0, 0]], 0],
    ];
    for (const [i, [shape, paddings, value]] of cases.entries()) {
      await exactlyLikeCpu(calls.pad!, () => tf.pad(randomTensor(shape, i), paddings, value), `pad ${shape} by ${JSON.stringify(paddings)}`);
    }
  });

  test('tile', async () => {
    const cases: Array<[number[], number[]]> = [
      [[3], [4]],
      [[2, 3], [1, 1]],
      [[2, 3], [3, 2]],
      [[4, 1], [1, 5]],
      [[2, 1, 3], [2, 5, 3]],
      [[1, 2, 3, 1, 2], [2, 1, 2, 3, 1]],
      [[64, 1, 1, 32], [1, 8, 8, 1]],
    ];
    for (const [i, [shape, reps]] of cases.entries()) {
      await exactlyLikeCpu(calls.tile!, () => tf.tile(randomTensor(shape, i), reps), `tile ${shape} by ${reps}`);
    }
  });

  test('gather along axis 0, or the first axis after batchDims (rows repeated, in any order, of any rank); other axes stay with tfjs-cpu', async () => {
    const cases: Array<[number[], number[] | number[][]]> = [
      [[5], [4, 0, 0, 2]],
      [[6, 3], [5, 1, 1, 0, 3]],
      [[4, 3, 2], [[3, 0], [1, 1], [2, 3]]],
      [[128, 32, 32, 1], Array.from({ length: 128 }, (_, i) => (i * 37) % 128)],
      [[3, 4], []],
    ];
    for (const [i, [shape, indices]] of cases.entries()) {
      await exactlyLikeCpu(calls.gatherRows!, () => tf.gather(randomTensor(shape, i), tf.tensor(indices, undefined, 'int32')), `gather ${shape} rows ${JSON.stringify(indices).slice(0, 40)}`);
    }
    // batchDims 1, the gathered axis right after it (DenseCL's per-image correspondences): each batch picks its own rows.
    const perImage: Array<[number[], number[][]]> = [
      [[3, 4, 5], [[3, 0, 0, 1], [2, 2, 1, 0], [0, 3, 3, 3]]],
      [[2, 6], [[5, 0], [1, 4]]],
      [[4, 3, 2, 2], [[0], [2], [1], [2]]],
    ];
    for (const [i, [shape, indices]] of perImage.entries()) {
      await exactlyLikeCpu(calls.gatherRows!, () => tf.gather(randomTensor(shape, 20 + i), tf.tensor(indices, undefined, 'int32'), 1, 1), `gather ${shape} per batch ${JSON.stringify(indices)}`);
    }
    const before = calls.gatherRows!();
    await assertNativeMatchesCpu(() => tf.gather(randomTensor([3, 4], 9), tf.tensor1d([3, 0, 2], 'int32'), 1), {}, 'gather along axis 1');
    await assertNativeMatchesCpu(() => tf.gather(randomTensor([2, 3, 4], 10), tf.tensor([[3, 0], [1, 1]], undefined, 'int32'), 2, 1), {}, 'batchDims 1, axis 2');
    assert.equal(calls.gatherRows!(), before, 'a gather along another axis should be left to tfjs-cpu');
    await tf.setBackend('native');
    assert.throws(() => tf.gather(tf.zeros([3, 2]), tf.tensor1d([1, 3], 'int32')), /index 3 is not in \[0, 3\)/);
    assert.throws(() => tf.gather(tf.zeros([3, 2]), tf.tensor1d([-1], 'int32')), /index -1/);
    // Row 1 * 2 + 2 = 4 exists in the flat [6, 1] view; the check is per batch.
    assert.throws(() => tf.gather(tf.zeros([3, 2]), tf.tensor([[0], [2], [1]], undefined, 'int32'), 1, 1), /index 2 is not in \[0, 2\)/);
  });

  test('the addon rejects out-of-range arguments', () => {
    const addon = nativeAddon();
    const x = new Float32Array(6);
    assert.throws(() => addon.transpose(x, [2, 3], [0, 2], new Float32Array(6)), /perm out of range/);
    assert.throws(() => addon.slice(x, [2, 3], [1, 2], [1, 2], new Float32Array(2)), /out of bounds/);
    assert.throws(() => addon.tile(x, [2, 3], [2, 2], new Float32Array(6)), /elements/);
  });
});

describe('gradients through native layout kernels match finite differences', () => {
  before(async () => {
    await setupNative();
    await tf.setBackend('native');
  });

  test('concat, slice, pad, tile and transpose', () => {
    const w = randomTensor([4, 6, 3], 31);
    assertGradientMatchesFiniteDifferences((x) => {
      const parts = tf.concat([x, tf.slice(x, [0, 1, 0], [3, 2, 3])], 1); // [3, 6, 3]
      const padded = tf.pad(tf.transpose(tf.transpose(parts, [2, 0, 1]), [1, 2, 0]), [[1, 0], [0, 0], [0, 0]], 0.5); // [4, 6, 3]
      return tf.sum(tf.mul(tf.square(tf.add(padded, tf.tile(tf.slice(x, [0, 0, 0], [1, 2, 3]), [4, 3, 1]))), w));
    }, randomTensor([3, 4, 3], 32));
  });

  test('gather, rows picked twice and rows not picked', () => {
    const w = randomTensor([5, 3], 35);
    const rows = tf.tensor1d([2, 0, 2, 3, 0], 'int32');
    assertGradientMatchesFiniteDifferences((x) => tf.sum(tf.mul(tf.square(tf.gather(x, rows)), w)), randomTensor([4, 3], 36));
  });

  test('transpose in both directions', () => {
    const w = randomTensor([4, 2, 3], 33);
    assertGradientMatchesFiniteDifferences(
      (x) => tf.sum(tf.mul(tf.sin(tf.transpose(x, [2, 0, 1])), w)),
      randomTensor([2, 3, 4], 34),
    );
  });
});
