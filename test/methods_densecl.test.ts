// DenseCL: the dense contrast by hand (the correspondence from backbone
// features, InfoNCE against the dense queue), the method's state and queues,
// and one short real run whose kNN beats the same network untrained.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Tensor2D, Tensor3D } from '@tensorflow/tfjs-core';
import { useBackend } from '../src/backend/select.js';
import { DenseCL, denseContrast } from '../src/methods/densecl.js';
import { methodNames, type TensorBatch } from '../src/methods/index.js';
import { fashionMethod, knnAgainstRandomInit, tinyConfig } from './method_runs.js';

await useBackend('native');

const unit = (v: number[]) => {
  const n = Math.hypot(...v);
  return v.map((x) => x / n);
};

test('densecl is registered; its options are MoCo v2\'s plus the dense weight', () => {
  assert.ok(methodNames().includes('densecl'));
  assert.throws(() => tinyConfig('densecl', { methodOptions: { denseWeight: 1.5 } }), /denseWeight/);
  const method = fashionMethod(tinyConfig('densecl')) as DenseCL;
  try {
    assert.equal(method.name, 'densecl');
    assert.equal(method.denseWeight, 0.5);
    assert.equal(method.temperature, 0.1);
    const names = Object.keys(method.stateDict());
    for (const prefix of ['backbone.', 'head.', 'denseHead.', 'momentumBackbone.', 'momentumHead.', 'momentumDenseHead.', 'keyQueue.keys', 'denseQueue.keys']) {
      assert.ok(names.some((n) => n.startsWith(prefix)), `${prefix} in the state dict`);
    }
  } finally {
    method.dispose();
  }
});

test('dense contrast by hand: positives follow the backbone features\' correspondence, negatives the queue', () => {
  // One image, two positions. Backbone features: query position 0 looks like key position 1 and vice versa.
  const qFeatures = tf.tensor3d([[[1, 0, 0], [0, 1, 0]]]);
  const kFeatures = tf.tensor3d([[[0, 2, 0.1], [3, 0, 0.2]]]);
  const q = [unit([1, 0]), unit([1, 1])];
  const k = [unit([0, 1]), unit([2, 1])];
  const neg = [unit([-1, 0]), unit([1, -3])];
  const T = 0.5;
  const { loss, match } = denseContrast(tf.tensor3d([q]) as Tensor3D, tf.tensor3d([k]) as Tensor3D, qFeatures as Tensor3D, kFeatures as Tensor3D, tf.tensor2d(neg) as Tensor2D, T);
  assert.deepEqual(Array.from(match.dataSync()), [1, 0]);
  const dot = (a: number[], b: number[]) => a[0]! * b[0]! + a[1]! * b[1]!;
  const term = (qi: number[], pos: number[]) => {
    const logits = [dot(qi, pos), ...neg.map((n) => dot(qi, n))].map((x) => x / T);
    return Math.log(logits.reduce((s, x) => s + Math.exp(x), 0)) - logits[0]!;
  };
  const expected = (term(q[0]!, k[1]!) + term(q[1]!, k[0]!)) / 2;
  assert.ok(Math.abs(loss.dataSync()[0]! - expected) < 1e-5, `${loss.dataSync()[0]} vs ${expected}`);
});

test('a DenseCL step: loss = (1 - λ) global + λ dense, and both queues take the step\'s keys after it', () => {
  const method = fashionMethod(tinyConfig('densecl', { methodOptions: { queueLength: 16, bnSplits: 1, denseWeight: 0.3 } })) as DenseCL;
  try {
    const view = () => tf.randomUniform([4, 32, 32, 1], 0, 1, 'float32', 7) as TensorBatch['views'][string];
    const batch: TensorBatch = { views: { view1: view(), view2: view() }, aux: {}, labels: tf.tensor1d([-1, -1, -1, -1], 'int32'), indices: Int32Array.from([0, 1, 2, 3]) };
    const before = { global: method.keyQueue.keys.dataSync().slice(), dense: method.denseQueue.keys.dataSync().slice() };
    const { loss, terms } = method.loss(batch, { step: 0, epoch: 0, totalSteps: 1 });
    const [l, g, d] = [loss, terms.global!, terms.dense!].map((t) => t.dataSync()[0]!);
    assert.ok(Math.abs(l - (0.7 * g! + 0.3 * d!)) < 1e-5, `${l} vs 0.7 x ${g} + 0.3 x ${d}`);
    assert.deepEqual(method.denseQueue.keys.dataSync(), before.dense, 'nothing enqueued before the step ends');
    method.afterStep();
    const changedRows = (now: Float32Array | Int32Array | Uint8Array, was: Float32Array | Int32Array | Uint8Array, dim: number) =>
      Array.from({ length: now.length / dim }, (_, r) => r).filter((r) => now.slice(r * dim, (r + 1) * dim).some((v, j) => v !== was[r * dim + j]));
    assert.deepEqual(changedRows(method.keyQueue.keys.dataSync(), before.global, 128), [0, 1, 2, 3]);
    const dense = method.denseQueue.keys.dataSync();
    assert.deepEqual(changedRows(dense, before.dense, 128), [0, 1, 2, 3]);
    for (let r = 0; r < 4; r++) assert.ok(Math.abs(Math.hypot(...dense.slice(r * 128, (r + 1) * 128)) - 1) < 1e-5, 'the queued dense keys are unit vectors');
  } finally {
    method.dispose();
  }
});

test('densecl: a short real run beats the untrained network\'s kNN', async () => {
  const { random, trained, losses } = await knnAgainstRandomInit('densecl', 0.06, { epochs: 20, methodOptions: { queueLength: 1024, bnSplits: 1 } });
  assert.ok(losses.at(-1)! < losses[0]!, `losses ${losses.join(' ')}`);
  assert.ok(trained > random, `kNN ${trained} vs untrained ${random}`);
});
