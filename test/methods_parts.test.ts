// The shared parts of the contrastive methods: the key queue (wrap-around,
// checkpointed pointer), the EMA twin (update formula, BN statistics copied,
// weights as buffers), the heads, and SplitBatchNorm against the plain BN of
// each group.
import { Mulberry32 } from '../src/core/random.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import { useBackend } from '../src/backend/select.js';
import { BatchNorm2d, Linear, MLP, Module } from '../src/nn/index.js';
import { KeyQueue } from '../src/methods/parts/queue.js';
import { EmaPair } from '../src/methods/parts/ema.js';
import { PredictionHead, ProjectionHead } from '../src/methods/parts/heads.js';
import { SplitBatchNorm, batchShuffle, shuffledForward, useSplitBatchNorm } from '../src/methods/parts/split_bn.js';
import { ResNet } from '../src/nn/index.js';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import { assertClose, assertGradientMatchesFiniteDifferences, randomTensor } from './helpers.js';
import { bothViews } from '../src/methods/parts/views.js';

await useBackend('native');

const rows = (queue: KeyQueue) => queue.keys.arraySync() as number[][];
const keysOf = (...values: number[]) => tf.tensor2d(values.map((v) => [v, -v]));

test('KeyQueue starts with random unit keys and a zero pointer, both in the state dict', () => {
  const queue = new KeyQueue(6, 4, { rng: new Mulberry32(1) });
  assert.deepEqual(Object.keys(queue.stateDict()).sort(), ['keys', 'pointer']);
  assert.equal(queue.parameters().length, 0);
  assertClose(tf.tidy(() => tf.norm(queue.keys, 'euclidean', 1).dataSync()), [1, 1, 1, 1, 1, 1]);
  assert.equal(queue.pointer.dataSync()[0], 0);
  queue.dispose();
});

test('KeyQueue.enqueue writes at the pointer and wraps around', () => {
  const queue = new KeyQueue(5, 2);
  tf.tidy(() => queue.enqueue(keysOf(1, 2, 3)));
  assert.equal(queue.pointer.dataSync()[0], 3);
  assert.deepEqual(rows(queue).slice(0, 3).map((r) => r[0]), [1, 2, 3]);
  tf.tidy(() => queue.enqueue(keysOf(4, 5, 6, 7)));
  // 4, 5 fill rows 3, 4; 6, 7 wrap to rows 0, 1; row 2 still holds 3.
  assert.deepEqual(rows(queue).map((r) => r[0]), [6, 7, 3, 4, 5]);
  assert.deepEqual(rows(queue).map((r) => r[1]), [-6, -7, -3, -4, -5]);
  assert.equal(queue.pointer.dataSync()[0], 2);
  // More keys than the queue holds: as if written one by one from row 2 (10..16), so only the newest 5 stay.
  tf.tidy(() => queue.enqueue(keysOf(10, 11, 12, 13, 14, 15, 16)));
  assert.deepEqual(rows(queue).map((r) => r[0]), [13, 14, 15, 16, 12]);
  assert.equal(queue.pointer.dataSync()[0], (2 + 7) % 5);
  assert.throws(() => queue.enqueue(tf.ones([2, 3])), /keys must be \[n, 2\]/);
  queue.dispose();
});

test('KeyQueue.stage holds keys until commit; a restored state dict restores keys and pointer', () => {
  const queue = new KeyQueue(4, 2);
  const before = tf.memory().numTensors;
  tf.tidy(() => queue.stage(keysOf(1, 2)));
  assert.equal(queue.pointer.dataSync()[0], 0, 'stage does not enqueue');
  tf.tidy(() => queue.commit());
  assert.equal(queue.pointer.dataSync()[0], 2);
  assert.deepEqual(rows(queue).slice(0, 2).map((r) => r[0]), [1, 2]);
  assert.equal(tf.memory().numTensors, before, 'no tensor leaks through stage/commit');
  const copy = new KeyQueue(4, 2, { rng: new Mulberry32(9) });
  copy.loadStateDict(queue.stateDict());
  assert.equal(copy.pointer.dataSync()[0], 2);
  assert.deepEqual(rows(copy), rows(queue));
  queue.dispose();
  copy.dispose();
});

class Tiny extends Module {
  readonly fc: Linear;
  readonly bn: BatchNorm2d;
  constructor(seed: number) {
    super();
    this.fc = this.addModule('fc', new Linear(3, 2, { rng: new Mulberry32(seed) }));
    this.bn = this.addModule('bn', new BatchNorm2d(2));
  }
  forward(x: Tensor2D): Tensor2D {
    return this.bn.forward(this.fc.forward(x));
  }
}

test('EmaPair: the twin starts as a copy, holds its weights as buffers, and follows m·ema + (1−m)·online', () => {
  const online = new Tiny(1);
  const pair = new EmaPair(online, () => new Tiny(2));
  assert.equal(pair.target.parameters().length, 0, 'no trainable parameters in the twin');
  assert.deepEqual(pair.target.namedBuffers().map(([n]) => n).sort(), Object.keys(online.stateDict()).sort());
  assertClose(pair.target.fc.weight.dataSync(), online.fc.weight.dataSync(), { atol: 0, rtol: 0 }, 'initial copy');

  const ema0 = Float32Array.from(pair.target.fc.weight.dataSync());
  tf.tidy(() => online.fc.weight.assign(tf.add(online.fc.weight, 1)));
  tf.tidy(() => online.forward(tf.tensor2d([[1, 2, 3], [0, -1, 4], [2, 2, 2]]))); // moves BN running stats
  const onlineW = online.fc.weight.dataSync();
  pair.update(0.9);
  assertClose(pair.target.fc.weight.dataSync(), ema0.map((e, i) => 0.9 * e + 0.1 * onlineW[i]!), { atol: 1e-6 }, 'EMA weight');
  assertClose(pair.target.bn.runningMean.dataSync(), online.bn.runningMean.dataSync(), { atol: 0, rtol: 0 }, 'running mean copied');
  assertClose(pair.target.bn.runningVar.dataSync(), online.bn.runningVar.dataSync(), { atol: 0, rtol: 0 }, 'running var copied');
  pair.update(1);
  assertClose(pair.target.fc.weight.dataSync(), ema0.map((e, i) => 0.9 * e + 0.1 * onlineW[i]!), { atol: 1e-6 }, 'm = 1 freezes');
  assert.throws(() => pair.update(1.5), /momentum must be in \[0, 1\]/);
  assert.throws(() => new EmaPair(online, () => new Tiny(3).fc as unknown as Tiny), /twin has no/);
  online.dispose();
  pair.target.dispose();
});

test('ProjectionHead and PredictionHead have the papers\' layers', () => {
  const linear = new ProjectionHead(8, 16, 4, { layers: 1 });
  assert.deepEqual(linear.dims, [8, 4]);
  const mlp = new ProjectionHead(8, 16, 4);
  assert.deepEqual(mlp.dims, [8, 16, 4]);
  assert.ok(mlp instanceof MLP);
  assert.deepEqual(Object.keys(mlp.stateDict()).sort(), ['fc0.bias', 'fc0.weight', 'fc1.bias', 'fc1.weight']);
  const predictor = new PredictionHead(4, 12, 4);
  assert.deepEqual(Object.keys(predictor.stateDict()).filter((k) => k.startsWith('bn0')).length, 4, 'BN after the hidden layer');
  const y = tf.tidy(() => predictor.forward(tf.ones([5, 4]) as Tensor2D).shape);
  assert.deepEqual(y, [5, 4]);
  assert.throws(() => new ProjectionHead(8, 16, 4, { layers: 0 }), /layers must be an integer >= 1/);
  [linear, mlp, predictor].forEach((m) => m.dispose());
});

test('SplitBatchNorm equals plain BN on each group, running stats the groups\' mean; its gradient is right', () => {
  const x = randomTensor([8, 2, 2, 3], 5, -2, 3) as Tensor4D;
  const split = useSplitBatchNorm(new BatchNorm2d(3), 4);
  assert.ok(split instanceof SplitBatchNorm);
  tf.tidy(() => {
    split.weight.assign(tf.tensor1d([1, 2, 0.5]));
    split.bias.assign(tf.tensor1d([0, -1, 3]));
  });
  const plain = Array.from({ length: 4 }, () => new BatchNorm2d(3));
  const expected = tf.tidy(() =>
    tf.concat(plain.map((bn, g) => {
      bn.loadStateDict(split.stateDict());
      return bn.forward(tf.slice(x, [2 * g, 0, 0, 0], [2, 2, 2, 3]));
    })).dataSync(),
  );
  assertClose(tf.tidy(() => split.forward(x).dataSync()), expected, { atol: 1e-5 }, 'output');
  const meanOf = (pick: (bn: BatchNorm2d) => Float32Array) =>
    [0, 1, 2].map((c) => plain.reduce((s, bn) => s + pick(bn)[c]!, 0) / plain.length);
  assertClose(split.runningMean.dataSync(), meanOf((bn) => bn.runningMean.dataSync() as Float32Array), { atol: 1e-6 }, 'running mean');
  assertClose(split.runningVar.dataSync(), meanOf((bn) => bn.runningVar.dataSync() as Float32Array), { atol: 1e-6 }, 'running var');
  assertGradientMatchesFiniteDifferences((v) => tf.sum(tf.mul(split.forward(v), tf.range(0, 96).reshape([8, 2, 2, 3]))), x, { eps: 1e-2, atol: 5e-3 });
  assert.throws(() => split.forward(tf.ones([6, 1, 1, 3])), /a batch of 6 does not split into 4 equal groups/);
  split.eval();
  assertClose(tf.tidy(() => split.forward(x).dataSync()), tf.tidy(() => { const bn = new BatchNorm2d(3); bn.loadStateDict(split.stateDict()); bn.eval(); const y = bn.forward(x).dataSync(); bn.dispose(); return y; }), { atol: 1e-6 }, 'eval mode is plain BN');
  [split, ...plain].forEach((m) => m.dispose());
  x.dispose();
});

test('useSplitBatchNorm on a ResNet: a training forward equals one forward per group; shuffledForward restores the order', () => {
  const net = new ResNet({ depth: 18, width: 4, stem: 'cifar', inChannels: 1, seed: 3 });
  const names = Object.keys(net.stateDict());
  useSplitBatchNorm(net, 2);
  assert.deepEqual(Object.keys(net.stateDict()), names, 'same state dict');
  const x = randomTensor([4, 8, 8, 1], 6) as Tensor4D;
  const whole = tf.tidy(() => net.features(x).dataSync());
  useSplitBatchNorm(net, 1);
  const halves = tf.tidy(() => tf.concat([net.features(tf.slice(x, 0, 2)), net.features(tf.slice(x, 2, 2))]).dataSync());
  assertClose(whole, halves, { atol: 1e-4 }, 'grouped forward');
  const { perm, inverse } = batchShuffle(6, new Mulberry32(4));
  assert.deepEqual([...perm].sort(), [0, 1, 2, 3, 4, 5]);
  assert.deepEqual([...inverse].map((i) => perm[i]), [0, 1, 2, 3, 4, 5]);
  const rowsBack = tf.tidy(() => shuffledForward(tf.range(0, 6).reshape([6, 1]), new Mulberry32(4), (s) => tf.mul(s, 2)).dataSync());
  assert.deepEqual([...rowsBack], [0, 2, 4, 6, 8, 10]);
  net.dispose();
  x.dispose();
});

test('bothViews stacks view1 then view2 as one batch, and names the views a batch holds when one is missing', () => {
  const view1 = tf.fill([2, 1, 1, 1], 1) as Tensor4D;
  const view2 = tf.fill([2, 1, 1, 1], 2) as Tensor4D;
  const batch = { views: { view1, view2 }, aux: {}, labels: tf.tensor1d([-1, -1]), indices: new Int32Array([0, 1]) };
  const both = bothViews(batch);
  assert.deepEqual(both.shape, [4, 1, 1, 1]);
  assert.deepEqual(Array.from(both.dataSync()), [1, 1, 2, 2]);
  assert.throws(() => bothViews({ ...batch, views: { view1, global: view2 } }), /the batch holds views \[view1, global\], not view1 and view2/);
  tf.dispose([view1, view2, both, batch.labels]);
});
