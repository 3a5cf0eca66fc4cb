// One training step of a ResNet basic block (conv-BN-ReLU-conv-BN + identity,
// ReLU, pooled linear head, softmax cross-entropy, momentum SGD) must give the
// same loss and updated weights on `native` as on tfjs-cpu.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import type { Tensor, Tensor1D, Tensor2D, Tensor4D, Variable } from '@tensorflow/tfjs-core';
import { batchNormTrain } from '../src/backend/ops.js';
import { assertClose, randomArray, setupNative } from './helpers.js';

const C = 8;
const pad: [[number, number], [number, number], [number, number], [number, number]] = [[0, 0], [1, 1], [1, 1], [0, 0]];

async function trainSteps(backend: string, steps: number): Promise<{ loss: number; weights: Float32Array[]; tensorCounts: number[] }> {
  await tf.setBackend(backend);
  const v = (shape: number[], seed: number, scale = 0.3) =>
    tf.variable(tf.tensor(randomArray(shape.reduce((a, b) => a * b), seed, -scale, scale), shape));
  const params: Record<string, Variable> = {
    w1: v([3, 3, C, C], 1), g1: tf.variable(tf.ones([C])), b1: tf.variable(tf.zeros([C])),
    w2: v([3, 3, C, C], 2), g2: tf.variable(tf.fill([C], 0.5)), b2: tf.variable(tf.zeros([C])),
    fc: v([C, 4], 3), fcb: tf.variable(tf.zeros([4])),
  };
  const x = tf.tensor4d(randomArray(6 * 10 * 10 * C, 4), [6, 10, 10, C]);
  const labels = tf.oneHot(tf.tensor1d([0, 1, 2, 3, 0, 1], 'int32'), 4);
  const p = params as Record<string, Tensor>;
  const loss = () => {
    let h: Tensor = tf.conv2d(x, p.w1 as Tensor4D, 1, pad);
    h = tf.relu(batchNormTrain(h, p.g1 as Tensor1D, p.b1 as Tensor1D).y);
    h = tf.conv2d(h as Tensor4D, p.w2 as Tensor4D, 1, pad);
    h = tf.relu(tf.add(batchNormTrain(h, p.g2 as Tensor1D, p.b2 as Tensor1D).y, x));
    const logits = tf.add(tf.matMul(tf.mean(h, [1, 2]) as Tensor2D, p.fc as Tensor2D), p.fcb!);
    return tf.losses.softmaxCrossEntropy(labels, logits) as tf.Scalar;
  };
  const opt = tf.train.momentum(0.1, 0.9);
  let total = 0;
  const tensorCounts: number[] = [];
  for (let i = 0; i < steps; i++) {
    const l = opt.minimize(loss, true)!;
    total += l.dataSync()[0]!;
    l.dispose();
    tensorCounts.push(tf.memory().numTensors);
  }
  const out = { loss: total, weights: Object.values(params).map((w) => Float32Array.from(w.dataSync())), tensorCounts };
  tf.dispose([x, labels, ...Object.values(params)]);
  opt.dispose();
  return out;
}

describe('ResNet basic block training', () => {
  before(setupNative);

  test('two momentum-SGD steps agree between native and tfjs-cpu', async () => {
    const cpu = await trainSteps('cpu', 2);
    const native = await trainSteps('native', 2);
    assert.ok(Number.isFinite(native.loss));
    assert.ok(Math.abs(native.loss - cpu.loss) < 1e-4 * Math.max(1, Math.abs(cpu.loss)), `loss ${native.loss} vs ${cpu.loss}`);
    native.weights.forEach((w, i) => assertClose(w, cpu.weights[i]!, { atol: 1e-4, rtol: 1e-3 }, `parameter ${i}`));
  });

  test('tensor count stays flat across native training steps', async () => {
    // The first step creates the optimizer's momentum slots; after that, nothing may accumulate.
    const { tensorCounts } = await trainSteps('native', 4);
    assert.deepEqual(tensorCounts.slice(1), [tensorCounts[1], tensorCounts[1], tensorCounts[1]]);
  });
});
