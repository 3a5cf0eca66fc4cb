// src/losses/detection.ts: the detector's three losses against values worked
// out by hand, their gradients against the closed forms and against central
// finite differences, and large logits (+-100) that must neither overflow nor
// give NaN gradients. Run on tfjs-cpu and on the native backend (which runs
// the detector), so a native kernel with the wrong semantics shows up here.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Scalar, Tensor, Tensor2D } from '@tensorflow/tfjs-core';
import { useBackend } from '../src/backend/select.js';
import { l1LossSum, sigmoidCrossEntropySum, softmaxCrossEntropyMean } from '../src/losses/detection.js';
import { assertClose, assertGradientMatchesFiniteDifferences, randomTensor } from './helpers.js';

const f32 = (...v: number[]) => Float32Array.from(v);
const value = (f: () => Scalar): number => tf.tidy(() => f().dataSync()[0]!);
const gradOf = (f: (x: Tensor) => Tensor, x: Tensor): number[] => tf.tidy(() => Array.from(tf.grad(f)(x).dataSync()));

for (const backend of ['cpu', 'native'] as const) {
  describe(`detection losses on ${backend}`, () => {
    before(async () => {
      if (backend === 'native') await useBackend('native');
      else await tf.setBackend('cpu');
      assert.equal(tf.getBackend(), backend);
    });

    describe('sigmoidCrossEntropySum', () => {
      test('logits 0: log 2 per element, whatever the target', () => {
        // BCE(sigmoid(0) = 1/2, z) = -z log(1/2) - (1 - z) log(1/2) = log 2 for any z in [0, 1].
        // Catches a mean instead of a sum (would give log 2) or a missing log term.
        const v = value(() => sigmoidCrossEntropySum(tf.zeros([2, 3]), f32(0, 1, 0, 1, 0.5, 1)));
        assertClose([v], [6 * Math.log(2)], { atol: 1e-5, rtol: 1e-6 });
      });

      test('hand-computed mixed case, soft target included', () => {
        // BCE(x, z) = z softplus(-x) + (1 - z) softplus(x):
        //   x = 2,   z = 1:    log(1 + e^-2)                         = 0.1269280110
        //   x = -1,  z = 0:    log(1 + e^-1)                         = 0.3132616875
        //   x = 3,   z = 0:    log(1 + e^3)                          = 3.0485873516
        //   x = 0.5, z = 0.25: 0.25 log(1 + e^-0.5) + 0.75 log(1 + e^0.5) = 0.8490769842
        // Catches a swapped target (z <-> 1 - z) and a sign error in -x z.
        const v = value(() => sigmoidCrossEntropySum(tf.tensor1d([2, -1, 3, 0.5]), f32(1, 0, 0, 0.25)));
        assertClose([v], [0.126928011 + 0.3132616875 + 3.0485873516 + 0.8490769842], { atol: 1e-5, rtol: 1e-6 });
      });

      test('gradient is sigmoid(x) - z, and matches finite differences', () => {
        const targets = f32(1, 0, 0, 0.25, 1, 0);
        const x = tf.tensor1d([2, -1, 3, 0.5, -0.3, 0.7]);
        const f = (t: Tensor) => sigmoidCrossEntropySum(t, targets);
        const sig = (v: number) => 1 / (1 + Math.exp(-v));
        assertClose(gradOf(f, x), [2, -1, 3, 0.5, -0.3, 0.7].map((v, i) => sig(v) - targets[i]!), { atol: 1e-5, rtol: 1e-5 }, 'd/dx');
        const r = randomTensor([3, 4], 11, -3, 3);
        const soft = Float32Array.from({ length: 12 }, (_, i) => (i % 3) / 2);
        assertGradientMatchesFiniteDifferences((t) => sigmoidCrossEntropySum(t, soft), r, { samples: 12 });
        tf.dispose([x, r]);
      });

      test('logits +-100 stay finite: the overflow-free form', () => {
        // A naive -z log(sigmoid(x)) - (1 - z) log(1 - sigmoid(x)) gives log(0) = -Infinity
        // in float32 for x = 100, z = 0; max(x, 0) - x z + log(1 + exp(-|x|)) gives 100.
        const x = tf.tensor1d([100, -100, 100, -100]);
        const z = f32(0, 1, 1, 0);
        const v = value(() => sigmoidCrossEntropySum(x, z));
        assertClose([v], [200], { atol: 1e-3, rtol: 1e-6 });
        assertClose(gradOf((t) => sigmoidCrossEntropySum(t, z), x), [1, -1, 0, 0], { atol: 1e-6, rtol: 0 }, 'd/dx');
        x.dispose();
      });

      test('a target count that differs from the logits is an error', () => {
        assert.throws(() => sigmoidCrossEntropySum(tf.zeros([2, 2]), f32(1, 0, 1)), /3 targets for 4 logits/);
      });
    });

    describe('softmaxCrossEntropyMean', () => {
      test('a 2x3 case by hand', () => {
        // Row 0: logits (1, 2, 3), label 2: logsumexp = 3 + log(1 + e^-1 + e^-2) = 3.4076059644,
        //        -log p = 0.4076059644.
        // Row 1: logits (0, 0, 0), label 0: -log(1/3) = log 3 = 1.0986122887.
        // Mean over the rows: 0.7531091266 (a sum would be 1.5062; catches sum vs mean).
        const logits = tf.tensor2d([[1, 2, 3], [0, 0, 0]]);
        const labels = Int32Array.from([2, 0]);
        assertClose([value(() => softmaxCrossEntropyMean(logits, labels))], [0.7531091266], { atol: 1e-5, rtol: 1e-6 });
        // Gradient (softmax - onehot) / rows; softmax(1, 2, 3) = (0.0900305732, 0.2447284711, 0.6652409558).
        const expected = [0.0900305732 / 2, 0.2447284711 / 2, (0.6652409558 - 1) / 2, (1 / 3 - 1) / 2, 1 / 6, 1 / 6];
        assertClose(gradOf((t) => softmaxCrossEntropyMean(t as Tensor2D, labels), logits), expected, { atol: 1e-5, rtol: 1e-5 }, 'd/dlogits');
        logits.dispose();
      });

      test('labels index the columns of each row (not a shared column)', () => {
        // Label 1 in row 0 picks logit 5 -> loss log(1 + 2e^-5); label 0 in row 1 picks 5 too.
        const logits = tf.tensor2d([[0, 5, 0], [5, 0, 0]]);
        const want = Math.log(1 + 2 * Math.exp(-5));
        assertClose([value(() => softmaxCrossEntropyMean(logits, Int32Array.from([1, 0])))], [want], { atol: 1e-5, rtol: 1e-5 });
        logits.dispose();
      });

      test('gradient matches finite differences on random logits', () => {
        const x = randomTensor([4, 5], 3, -2, 2);
        const labels = Int32Array.from([4, 0, 2, 2]);
        assertGradientMatchesFiniteDifferences((t) => softmaxCrossEntropyMean(t as Tensor2D, labels), x, { samples: 20 });
        x.dispose();
      });

      test('logits +-100 stay finite', () => {
        // (100, -100, 0) with label 1: -log softmax = 100 - (-100) = 200 (a naive exp(100)/sum overflows to NaN).
        const x = tf.tensor2d([[100, -100, 0], [100, -100, 0]]);
        const labels = Int32Array.from([1, 0]);
        assertClose([value(() => softmaxCrossEntropyMean(x, labels))], [100], { atol: 1e-3, rtol: 1e-6 });
        const g = gradOf((t) => softmaxCrossEntropyMean(t as Tensor2D, labels), x);
        assert.ok(g.every(Number.isFinite), `finite gradient ${g}`);
        assertClose(g, [0.5, -0.5, 0, 0, 0, 0], { atol: 1e-6, rtol: 0 }, 'd/dlogits');
        x.dispose();
      });

      test('a label count that differs from the rows is an error', () => {
        assert.throws(() => softmaxCrossEntropyMean(tf.zeros([2, 3]) as Tensor2D, Int32Array.from([0])), /1 labels for 2 rows/);
      });
    });

    describe('l1LossSum', () => {
      test('sum of absolute differences, gradient sign(pred - target)', () => {
        // |1 - 0| + |-2 - 0| + |0.5 - 1| + |3 - 3.25| = 1 + 2 + 0.5 + 0.25 = 3.75 (a mean would be 0.9375,
        // smooth L1 with beta 1 would be 0.5 + 1.5 + 0.125 + 0.03125 = 2.15625).
        const pred = tf.tensor2d([[1, -2], [0.5, 3]]);
        const target = f32(0, 0, 1, 3.25);
        assertClose([value(() => l1LossSum(pred, target))], [3.75], { atol: 1e-6, rtol: 1e-6 });
        assertClose(gradOf((t) => l1LossSum(t, target), pred), [1, -1, -1, -1], { atol: 0, rtol: 0 }, 'd/dpred');
        pred.dispose();
      });

      test('gradient matches finite differences away from the kinks, values +-100 finite', () => {
        const x = randomTensor([3, 4], 5, -2, 2);
        // Targets offset by at least 0.5 from x, so a finite-difference step never crosses a kink.
        const xs = x.dataSync();
        const target = Float32Array.from(xs, (v, i) => v + (i % 2 === 0 ? 0.5 + i / 10 : -0.5 - i / 10));
        assertGradientMatchesFiniteDifferences((t) => l1LossSum(t, target), x, { eps: 1e-2, samples: 12 });
        const big = tf.tensor1d([100, -100]);
        assertClose([value(() => l1LossSum(big, f32(-100, 100)))], [400], { atol: 1e-3, rtol: 0 });
        tf.dispose([x, big]);
      });

      test('a target count that differs from the predictions is an error', () => {
        assert.throws(() => l1LossSum(tf.zeros([5]), f32(1)), /1 targets for 5 predictions/);
      });
    });
  });
}
