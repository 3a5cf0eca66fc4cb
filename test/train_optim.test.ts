// Optimizers, gradient clipping and schedules against values worked out by
// hand (the arithmetic of each first step is in the comments).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Tensor } from '@tensorflow/tfjs-core';
import { AdamW, LARS, SGD, clipGradNorm, namedParameters, type NamedParameter, type Optimizer } from '../src/train/optimizers.js';
import { constantSchedule, cosineSchedule, stepSchedule } from '../src/train/schedules.js';
import { emaMomentum } from '../src/methods/parts/ema.js';
import { Linear } from '../src/nn/layers.js';
import { assertClose, setupNative } from './helpers.js';
import { SgdMomentumUpdate } from '../src/backend/ops.js';

await setupNative();
await tf.setBackend('cpu');

/** SGD runs on tfjs-cpu as the composite of stock ops, and on native as one fused kernel: both must give the hand values. */
const SGD_BACKENDS = ['cpu', 'native'];

/** A weight w (decay group) and a bias b (no decay). */
function params(w: number[], b: number[]): NamedParameter[] {
  return [
    { name: 'w', variable: tf.variable(tf.tensor1d(w)), decay: true },
    { name: 'b', variable: tf.variable(tf.tensor1d(b)), decay: false },
  ];
}

/** Runs steps with the given per-step gradients; returns w and b after each. */
function run(opt: Optimizer, ps: NamedParameter[], grads: Array<[number[], number[]]>, lr = 0.1): Array<[number[], number[]]> {
  return grads.map(([gw, gb]) => {
    const g: Record<string, Tensor> = { [ps[0]!.variable.name]: tf.tensor1d(gw), [ps[1]!.variable.name]: tf.tensor1d(gb) };
    opt.step(g, lr);
    tf.dispose(Object.values(g));
    return [Array.from(ps[0]!.variable.dataSync()), Array.from(ps[1]!.variable.dataSync())];
  });
}

const same = (g: [number[], number[]], n: number) => Array.from({ length: n }, () => g);

for (const backend of SGD_BACKENDS) {
  test(`SGD with momentum and weight decay on the decay group only (${backend})`, async () => {
    await tf.setBackend(backend);
    assert.equal(tf.getKernel(SgdMomentumUpdate, backend) !== undefined, backend === 'native');
    const ps = params([1, -2], [0.5]);
    const after = run(new SGD(ps, { momentum: 0.9, weightDecay: 0.01 }), ps, same([[0.1, 0.2], [0.3]], 2));
    // step 1: g' = g + 0.01 w = [0.11, 0.18] = buffer; w -= 0.1 * buffer. Bias: buffer 0.3, b = 0.5 - 0.03.
    assertClose(after[0]![0], [0.989, -2.018], { atol: 1e-6, rtol: 0 }, 'w after 1');
    assertClose(after[0]![1], [0.47], { atol: 1e-6, rtol: 0 }, 'b after 1');
    // step 2: g' = [0.10989, 0.17982]; buffer = 0.9 [0.11, 0.18] + g' = [0.20889, 0.34182]. Bias buffer 0.57.
    assertClose(after[1]![0], [0.968111, -2.052182], { atol: 1e-6, rtol: 0 }, 'w after 2');
    assertClose(after[1]![1], [0.413], { atol: 1e-6, rtol: 0 }, 'b after 2');
    await tf.setBackend('cpu');
  });

  test(`SGD with Nesterov momentum (${backend})`, async () => {
    await tf.setBackend(backend);
    const ps = params([1, -2], [0.5]);
    const after = run(new SGD(ps, { momentum: 0.9, nesterov: true, weightDecay: 0.01 }), ps, same([[0.1, 0.2], [0.3]], 2));
    // step 1: buffer = g' = [0.11, 0.18]; direction g' + 0.9 buffer = [0.209, 0.342].
    assertClose(after[0]![0], [0.9791, -2.0342], { atol: 1e-6, rtol: 0 });
    // step 2: g' = [0.109791, 0.179658], buffer [0.208791, 0.341658], direction [0.2977029, 0.4871502].
    assertClose(after[1]![0], [0.94932971, -2.08291502], { atol: 1e-6, rtol: 0 });
    // Bias: buffer 0.3, direction 0.57 -> 0.443; buffer 0.57, direction 0.813 -> 0.3617.
    assertClose(after[1]![1], [0.3617], { atol: 1e-6, rtol: 0 });
    await tf.setBackend('cpu');
  });
}

test('LARS: trust ratio on the decay group, plain momentum SGD on BN/bias', () => {
  const ps = params([3, 4], [0.5]);
  const after = run(new LARS(ps, { momentum: 0.9, weightDecay: 0.01, trustCoefficient: 0.01 }), ps, same([[0.1, 0.2], [0.3]], 2));
  // step 1: g' = [0.13, 0.24], |g'| = 0.272947, |w| = 5, ratio 0.01 * 5 / 0.272947 = 0.183186;
  // buffer = [0.023814, 0.043965]; w -= 0.1 buffer.
  assertClose(after[0]![0], [2.9976185843, 3.9956035402], { atol: 1e-6, rtol: 0 });
  assertClose(after[1]![0], [2.9930962500, 3.9872546154], { atol: 1e-6, rtol: 0 });
  assertClose(after[0]![1], [0.47], { atol: 1e-6, rtol: 0 });
  assertClose(after[1]![1], [0.413], { atol: 1e-6, rtol: 0 });
});

test('LARS leaves the update unscaled when the weight norm is zero', () => {
  const ps = params([0, 0], [0]);
  const after = run(new LARS(ps, { momentum: 0, weightDecay: 0, trustCoefficient: 0.001 }), ps, [[[0.1, 0.2], [0.3]]]);
  assertClose(after[0]![0], [-0.01, -0.02], { atol: 1e-7, rtol: 0 });
});

test('AdamW: bias-corrected moments and decoupled weight decay', () => {
  const ps = params([1, -2], [0.5]);
  const grads: Array<[number[], number[]]> = [
    [[0.1, 0.2], [0.3]],
    [[-0.3, 0.05], [0.3]],
    [[0.2, 0.2], [-0.1]],
  ];
  const after = run(new AdamW(ps, { betas: [0.9, 0.999], weightDecay: 0.01 }), ps, grads);
  // step 1: w *= 1 - 0.1 * 0.01; m_hat = g, v_hat = g^2, so w -= 0.1 * sign(g) (up to eps): [0.899, -2.098].
  assertClose(after[0]![0], [0.89900001, -2.09799999], { atol: 2e-6, rtol: 0 });
  assertClose(after[1]![0], [0.94751999, -2.17896174], { atol: 2e-6, rtol: 0 });
  assertClose(after[2]![0], [0.9446937, -2.26734743], { atol: 2e-6, rtol: 0 });
  // The bias has no weight decay: 0.5 - 0.1, then again -0.1 (same gradient), then a partial step back.
  assertClose(after[2]![1], [0.23943021], { atol: 2e-6, rtol: 0 });
});

test('optimizer state round-trips: a restored optimizer takes the same next step', () => {
  for (const make of [
    (p: NamedParameter[]) => new SGD(p, { momentum: 0.9, nesterov: true, weightDecay: 0.01 }),
    (p: NamedParameter[]) => new LARS(p, { momentum: 0.9, weightDecay: 0.01 }),
    (p: NamedParameter[]) => new AdamW(p, { weightDecay: 0.05 }),
  ]) {
    const a = params([1, -2], [0.5]);
    const optA = make(a);
    run(optA, a, same([[0.1, 0.2], [0.3]], 2));
    const state = optA.state();
    const b = params(Array.from(a[0]!.variable.dataSync()), Array.from(a[1]!.variable.dataSync()));
    const optB = make(b);
    const before = tf.memory().numTensors;
    optB.loadState(state);
    const slots = Object.keys(state).filter((k) => k !== 'step').length;
    // One live tensor per slot variable, nothing else (a resume once leaked the zeros that seeded each slot).
    assert.equal(tf.memory().numTensors - before, slots, `${optA.constructor.name}: tensors left by loadState`);
    tf.dispose(Object.values(state));
    assert.equal(optB.stepCount, 2);
    const nextA = run(optA, a, [[[0.05, -0.1], [0.2]]]);
    const nextB = run(optB, b, [[[0.05, -0.1], [0.2]]]);
    assert.deepEqual(nextB, nextA, `${optA.constructor.name}`);
    optA.dispose();
    optB.dispose();
  }
});

test('resetSlots: the named parameters restart from zero momentum, the others keep theirs', () => {
  const ps = params([1, -2], [0.5]);
  const opt = new SGD(ps, { momentum: 0.9 });
  run(opt, ps, [[[0.1, 0.2], [0.3]]]);
  const before = tf.memory().numTensors;
  opt.resetSlots('b');
  assert.equal(tf.memory().numTensors, before - 1, 'the dropped slot is disposed');
  assert.deepEqual(Object.keys(opt.state()).sort(), ['step', 'w.momentum']);
  const [[w, b]] = run(opt, ps, [[[0.1, 0.2], [0.3]]]);
  // w: buffer 0.9 * 0.1 + 0.1 = 0.19 -> 0.99 - 0.019. b: a fresh buffer 0.3 -> 0.47 - 0.03.
  assertClose(w!, [0.971, -2 - 0.02 - 0.038], { atol: 1e-6, rtol: 0 });
  assertClose(b!, [0.44], { atol: 1e-6, rtol: 0 });
  opt.dispose();
});

test('optimizer loadState names a slot that fits no parameter', () => {
  const ps = params([1, -2], [0.5]);
  const opt = new SGD(ps, { momentum: 0.9 });
  const bad = { step: tf.scalar(1, 'int32'), 'w.momentum': tf.zeros([3]) };
  assert.throws(() => opt.loadState(bad), /'w.momentum' has shape \[3\], the parameter has \[2\]/);
  const stray = { step: tf.scalar(1, 'int32'), 'fc.weight.momentum': tf.zeros([2]) };
  assert.throws(() => opt.loadState(stray), /'fc.weight.momentum' belongs to no parameter/);
});

test('namedParameters puts biases in the no-decay group', () => {
  const named = namedParameters(new Linear(3, 2));
  assert.deepEqual(
    named.map((p) => [p.name, p.decay]),
    [
      ['weight', true],
      ['bias', false],
    ],
  );
});

test('clipGradNorm scales to the global norm and reports the norm before clipping', () => {
  const grads: Record<string, Tensor> = { a: tf.tensor1d([3]), b: tf.tensor1d([4]) };
  const norm = clipGradNorm(grads, 1);
  assert.ok(Math.abs(norm - 5) < 1e-6);
  assertClose(grads.a!.dataSync(), [0.6], { atol: 1e-6, rtol: 0 });
  assertClose(grads.b!.dataSync(), [0.8], { atol: 1e-6, rtol: 0 });
  const small: Record<string, Tensor> = { a: tf.tensor1d([0.3]) };
  const before = small.a;
  clipGradNorm(small, 1);
  assert.equal(small.a, before, 'a gradient under the limit is left alone');
});

test('warm-up + cosine schedule, per iteration, to finalFraction of the peak', () => {
  const lr = cosineSchedule({ peak: 1, stepsPerEpoch: 2, epochs: 3, warmupEpochs: 1, finalFraction: 0.1 });
  // Warm-up (s+1)/2: 0.5, 1; then 0.1 + 0.9 (1 + cos(pi t))/2 at t = 0, 1/4, 2/4, 3/4 of the 4 cosine steps.
  assertClose([0, 1, 2, 3, 4, 5].map(lr), [0.5, 1, 1, 0.86819805, 0.55, 0.23180195], { atol: 1e-8, rtol: 0 });
  const plain = cosineSchedule({ peak: 0.4, stepsPerEpoch: 3, epochs: 1 });
  // 0.4 (1 + cos(pi s / 3)) / 2
  assertClose([0, 1, 2].map(plain), [0.4, 0.3, 0.1], { atol: 1e-12, rtol: 0 });
});

test('step and constant schedules', () => {
  const step = stepSchedule({ peak: 1, stepsPerEpoch: 2, epochs: 4, milestones: [2, 3], gamma: 0.1 });
  assertClose([0, 1, 2, 3, 4, 5, 6, 7].map(step), [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01], { atol: 1e-12, rtol: 0 });
  const constant = constantSchedule({ peak: 2, stepsPerEpoch: 4, epochs: 2, warmupEpochs: 0.5 });
  assertClose([0, 1, 2, 7].map(constant), [1, 2, 2, 2], { atol: 1e-12, rtol: 0 });
});

test('BYOL EMA momentum: from the base to 1 along a cosine', () => {
  // tau = 1 - (1 - 0.996)(cos(pi k / K) + 1) / 2
  assertClose([0, 50, 100, 150].map((k) => emaMomentum(k, 100, 0.996)), [0.996, 0.998, 1, 1], { atol: 1e-12, rtol: 0 });
  assert.ok(Math.abs(emaMomentum(25, 100, 0.99) - (1 - 0.01 * (Math.SQRT1_2 + 1) / 2)) < 1e-12);
});
