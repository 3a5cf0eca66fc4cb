// MoCo v1/v2: options, heads and temperatures per version, the loss against
// infoNCE, what afterStep changes (EMA twin, queue), and a short end-to-end run
// through the trainer.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { useBackend } from '../src/backend/select.js';
import { infoNCE } from '../src/losses/info_nce.js';
import type { TensorBatch } from '../src/methods/index.js';
import { MoCo } from '../src/methods/moco.js';
import { parseRunConfig } from '../src/train/config.js';
import { readCheckpoint } from '../src/io/checkpoint.js';
import { assertClose, randomTensor } from './helpers.js';
import { fashionMethod, knnAgainstRandomInit, stepLosses, tinyConfig } from './method_runs.js';

await useBackend('native');

const config = (methodOptions: Record<string, unknown> = {}, method = 'mocov2', over: Record<string, unknown> = {}) =>
  parseRunConfig({ out: '/tmp/unused', method, methodOptions, model: { width: 4 }, ...over });

function batchOf(n: number, seed: number): TensorBatch {
  return {
    views: { view1: randomTensor([n, 16, 16, 1], seed) as Tensor4D, view2: randomTensor([n, 16, 16, 1], seed + 1) as Tensor4D },
    aux: {},
    labels: tf.zeros([n], 'int32'),
    indices: new Int32Array(n),
  };
}

test('mocov1 and mocov2: heads, temperatures, views and validated options', () => {
  const v1 = fashionMethod(config({ queueLength: 64 }, 'mocov1')) as MoCo;
  const v2 = fashionMethod(config({ queueLength: 64 })) as MoCo;
  assert.equal(v1.name, 'mocov1');
  assert.deepEqual(v1.head.dims, [32, 128], 'v1: linear 128-d');
  assert.deepEqual(v2.head.dims, [32, 32, 128], 'v2: MLP');
  assert.equal(v1.temperature, 0.2);
  assert.equal(v2.temperature, 0.1);
  assert.deepEqual(v2.pipeline().outputs.map((o) => o.name), ['view1', 'view2']);
  assert.deepEqual(v2.keyQueue.keys.shape, [64, 128]);
  // Only the query encoder trains; the twins and the queue are buffers in the state dict.
  assert.equal(v2.parameters().length, v2.backbone.parameters().length + v2.head.parameters().length);
  const state = Object.keys(v2.stateDict());
  for (const key of ['momentumBackbone.conv1.weight', 'momentumHead.fc1.weight', 'keyQueue.keys', 'keyQueue.pointer']) assert.ok(state.includes(key), key);
  assert.throws(() => fashionMethod(config({ queueSize: 10 })), /methodOptions.*unrecognized key.*queueSize|queueSize/is);
  assert.throws(() => fashionMethod(config({ temperature: -1 })), /methodOptions\.temperature/);
  v1.dispose();
  v2.dispose();
});

test('MoCo loss is infoNCE of the query against the momentum key and the queue; afterStep moves the twin and fills the queue', () => {
  const moco = fashionMethod(config({ queueLength: 16, bnSplits: 2, momentum: 0.5 })) as MoCo;
  const batch = batchOf(4, 1);
  const ctx = { step: 0, epoch: 0, totalSteps: 1 };
  const loss = tf.tidy(() => moco.loss(batch, ctx).loss.dataSync()[0]!);
  const expected = tf.tidy(() => {
    const q = moco.query(batch.views.view1!);
    const k = moco.key(batch.views.view2!, 0);
    return infoNCE(q, k, moco.keyQueue.keys as Tensor2D, 0.1).dataSync()[0]!;
  });
  assertClose([loss], [expected], { atol: 1e-4 });
  const stagedKeys = tf.tidy(() => moco.key(batch.views.view2!, 0).arraySync());

  const before = tf.memory().numTensors;
  const fc0 = moco.head.stateDict()['fc0.weight']!;
  tf.tidy(() => (fc0 as tf.Variable).assign(tf.add(fc0, 1)));
  const twin = moco.momentumPairs[1].target.stateDict()['fc0.weight']!;
  const old = Float32Array.from(twin.dataSync());
  const online = fc0.dataSync();
  tf.tidy(() => moco.afterStep());
  assertClose(moco.momentumPairs[1].target.stateDict()['fc0.weight']!.dataSync(), old.map((v, i) => 0.5 * v + 0.5 * online[i]!), { atol: 1e-6 });
  assert.equal(moco.keyQueue.pointer.dataSync()[0], 4);
  assertClose((moco.keyQueue.keys.arraySync() as number[][]).slice(0, 4).flat(), stagedKeys.flat(), { atol: 1e-5 }, 'queued keys');
  assert.ok(tf.memory().numTensors <= before, 'afterStep leaks nothing');
  tf.dispose([...Object.values(batch.views), batch.labels]);
  moco.dispose();
});

test('mocov2 trains end to end through train(): finite losses, the queue advances and is checkpointed', async () => {
  const { result, losses } = await stepLosses(tinyConfig('mocov2', { epochs: 1, methodOptions: { queueLength: 96, bnSplits: 2 } }));
  assert.equal(result.steps, 4);
  assert.ok(losses.every(Number.isFinite), losses.join(' '));
  const pointer = readCheckpoint(result.checkpoint).model['keyQueue.pointer']!;
  assert.equal(pointer.data[0], (4 * 32) % 96, 'queue pointer in the checkpoint');
});

// Measured kNN after the last epoch at width 4 (63.3 untrained; 1,000 queries: about 1.5 points
// of noise). Width 8 scored 71.2 and 71.3 against 65.8 in 1.6x the time; MoCo v1 at the paper's
// T 0.07, before precise BN, 70.8 there.
const MEASURED_TINY_KNN = { mocov1: 69.0, mocov2: 69.7 };

for (const [method, measured] of Object.entries(MEASURED_TINY_KNN)) {
  test(`${method}, 300 steps on 2,000 Fashion-MNIST images: the loss falls and kNN beats the same network untrained (measured ${measured})`, async () => {
    // A 1,024-key queue (the default 4,096 is twice this set) and plain BN: at
    // batch 128 shuffle-BN's four groups hold 32 images each, and with them
    // MoCo v2's run at width 8 ended at 66.6, level with the untrained 65.8.
    const { random, trained, losses } = await knnAgainstRandomInit(method, 0.06, { epochs: 20, methodOptions: { queueLength: 1024, bnSplits: 1 } });
    assert.ok(losses.at(-1)! < losses[0]! - 0.3, `epoch losses ${losses.join(' ')}`);
    assert.ok(trained > random + 2, `kNN ${trained} after training vs ${random} untrained`);
  });
}
