// src/eval/linear_probe.ts: separable clusters (near 100%), random features
// with random labels (near chance), determinism, standardisation and hygiene.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import { useBackend } from '../src/backend/select.js';
import { featureStatistics, trainLinearProbe } from '../src/eval/linear_probe.js';
import { assertClose, randomArray } from './helpers.js';
import { clusters, randomLabels } from './eval_toy.js';

before(async () => {
  await useBackend('native');
});

describe('linear probe', () => {
  test('separable clusters, shifted and scaled far from unit range: near 100% top-1, falling loss', () => {
    const dim = 24;
    const shift = (set: { features: Float32Array; labels: Int32Array }) => ({
      labels: set.labels,
      features: set.features.map((v, i) => 50 + 20 * v * ((i % dim) + 1)),
    });
    const train = shift(clusters(10, 100, dim, 0.3, 1, 2));
    const test = shift(clusters(10, 40, dim, 0.3, 1, 3));
    const before = tf.memory().numTensors;
    const r = trainLinearProbe(train, test, dim, { numClasses: 10, epochs: 10, batchSize: 64, seed: 1 });
    assert.equal(tf.memory().numTensors, before, 'no tensor is left behind');
    assert.ok(r.test.top1 >= 99, `test top-1 ${r.test.top1}`);
    assert.equal(r.test.top5, 100);
    assert.equal(r.losses.length, 10);
    assert.ok(r.losses.at(-1)! < r.losses[0]! / 3, `loss ${r.losses[0]} -> ${r.losses.at(-1)}`);
  });

  test('random features with random labels: near chance on the test split', () => {
    const dim = 16;
    const train = { features: randomArray(3000 * dim, 31), labels: randomLabels(3000, 10, 32) };
    const test = { features: randomArray(3000 * dim, 33), labels: randomLabels(3000, 10, 34) };
    const r = trainLinearProbe(train, test, dim, { numClasses: 10, epochs: 5, seed: 0 });
    assert.ok(Math.abs(r.test.top1 - 10) < 3, `top-1 ${r.test.top1} should be near 10`);
    assert.ok(Math.abs(r.test.top5 - 50) < 5, `top-5 ${r.test.top5} should be near 50`);
  });

  test('the same seed gives the same run; another seed another batch order', () => {
    const dim = 8;
    const train = clusters(4, 50, dim, 1.5, 5, 6);
    const test = clusters(4, 20, dim, 1.5, 5, 7);
    const a = trainLinearProbe(train, test, dim, { numClasses: 4, epochs: 3, batchSize: 32, seed: 3 });
    const b = trainLinearProbe(train, test, dim, { numClasses: 4, epochs: 3, batchSize: 32, seed: 3 });
    const c = trainLinearProbe(train, test, dim, { numClasses: 4, epochs: 3, batchSize: 32, seed: 4 });
    assert.deepEqual(a, b);
    assert.notDeepEqual(a.losses, c.losses);
  });

  test('feature statistics: per-dimension mean and population std; a constant dimension keeps std 1', () => {
    const { mean, std } = featureStatistics(Float32Array.from([1, 5, 3, 5]), 2);
    assertClose(mean, [2, 5]);
    assertClose(std, [1, 1]);
  });

  test('bad inputs name what is wrong', () => {
    const set = { features: new Float32Array(4), labels: Int32Array.from([0, 7]) };
    assert.throws(() => trainLinearProbe(set, set, 2, { numClasses: 3 }), /train label 7 at 1 is outside 0\.\.2/);
    assert.throws(() => trainLinearProbe(set, set, 3, { numClasses: 8 }), /not a multiple of dim 3/);
    assert.throws(() => trainLinearProbe(set, set, 2, { numClasses: 8, epochs: 0 }), /epochs must be a positive integer/);
  });
});
