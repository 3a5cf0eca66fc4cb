// NT-Xent and BYOL's negative cosine against values worked out by hand on
// tiny fixed embeddings, plus their edge cases. cpu backend: the file runs in
// well under a second.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import { negCosine } from '../src/losses/neg_cosine.js';
import { ntXent } from '../src/losses/nt_xent.js';
import { assertClose, randomTensor } from './helpers.js';

before(async () => {
  await tf.setBackend('cpu');
});

const t2 = (rows: number[][]) => tf.tensor2d(rows);
const value = (f: () => tf.Scalar) => {
  const s = f();
  const v = s.dataSync()[0]!;
  s.dispose();
  return v;
};

/** Eq. 1 of SimCLR written out with loops, the way one would by hand. */
function ntXentByHand(a: number[][], b: number[][], t: number): number {
  const unit = (v: number[]) => v.map((x) => x / Math.hypot(...v));
  const z = [...a, ...b].map(unit);
  const n = a.length;
  const sim = (i: number, j: number) => z[i]!.reduce((s, x, d) => s + x * z[j]![d]!, 0) / t;
  let total = 0;
  for (let i = 0; i < 2 * n; i++) {
    const j = (i + n) % (2 * n);
    let denominator = 0;
    for (let k = 0; k < 2 * n; k++) if (k !== i) denominator += Math.exp(sim(i, k));
    total += -Math.log(Math.exp(sim(i, j)) / denominator);
  }
  return total / (2 * n);
}

describe('ntXent', () => {
  test('orthogonal pairs, T = 1: every anchor sees 1 positive at cos 1 and 2 negatives at cos 0, loss = log(2 + e) - 1', () => {
    const z = [[1, 0], [0, 1]];
    assertClose([value(() => ntXent(t2(z), t2(z), 1))], [Math.log(2 + Math.E) - 1], { atol: 1e-5, rtol: 1e-5 });
  });

  test('three pairs at 120 degrees, T = 0.5, views rotated by 90 degrees: matches eq. 1 by hand', () => {
    const a = [0, 1, 2].map((k) => [Math.cos((2 * Math.PI * k) / 3), Math.sin((2 * Math.PI * k) / 3)]);
    const b = a.map(([x, y]) => [-y!, x!]);
    // cos(positive) = 0; every anchor has negatives at cos -1/2, -1/2 (own view) and
    // cos(90 +- 120) = -sqrt(3)/2, +sqrt(3)/2 (other view):
    const s = Math.sqrt(3) / 2;
    const byHand = -Math.log(1 / (1 + 2 * Math.exp(-0.5 / 0.5) + Math.exp(-s / 0.5) + Math.exp(s / 0.5)));
    assertClose([ntXentByHand(a, b, 0.5)], [byHand], { atol: 1e-9, rtol: 1e-9 }, 'the loop reference');
    assertClose([value(() => ntXent(t2(a), t2(b), 0.5))], [byHand], { atol: 1e-5, rtol: 1e-5 });
  });

  test('random embeddings: equals the loop reference, is symmetric in the views and ignores feature scale', () => {
    const a = randomTensor([5, 4], 1) as Tensor2D;
    const b = randomTensor([5, 4], 2) as Tensor2D;
    const rows = (t: Tensor2D) => t.arraySync();
    const expected = ntXentByHand(rows(a), rows(b), 0.2);
    assertClose([value(() => ntXent(a, b, 0.2))], [expected], { atol: 1e-4, rtol: 1e-5 });
    assertClose([value(() => ntXent(b, a, 0.2))], [expected], { atol: 1e-4, rtol: 1e-5 }, 'views swapped');
    assertClose([value(() => ntXent(tf.mul(a, 7), tf.mul(b, 0.01), 0.2))], [expected], { atol: 1e-4, rtol: 1e-5 }, 'rescaled');
    tf.dispose([a, b]);
  });

  test('identical views at a low temperature give a loss near 0; a perfect pair set has no leaked self-similarity', () => {
    const z = t2([[1, 0, 0], [0, 1, 0], [0, 0, 1]]);
    // Without the self mask the anchor itself (cos 1) would sit in the denominator: loss >= log 2.
    const loss = value(() => ntXent(z, z, 0.05));
    assert.ok(loss < 1e-6, `loss ${loss}`);
  });

  test('gradients are finite and flow to both views', () => {
    const a = randomTensor([4, 3], 3) as Tensor2D;
    const b = randomTensor([4, 3], 4) as Tensor2D;
    const [ga, gb] = tf.grads((x: tf.Tensor, y: tf.Tensor) => ntXent(x as Tensor2D, y as Tensor2D, 0.5))([a, b]);
    for (const g of [ga!, gb!]) {
      const v = Array.from(g.dataSync());
      assert.ok(v.every(Number.isFinite) && v.some((x) => Math.abs(x) > 1e-6), `gradient ${v}`);
    }
    tf.dispose([a, b, ga!, gb!]);
  });

  test('bad inputs are clear errors', () => {
    const z = t2([[1, 0], [0, 1]]);
    assert.throws(() => ntXent(z, t2([[1, 0]]), 0.5), /same shape/);
    assert.throws(() => ntXent(t2([[1, 0]]), t2([[0, 1]]), 0.5), /at least 2 pairs/);
    assert.throws(() => ntXent(z, z, 0), /temperature must be positive/);
  });
});

describe('negCosine', () => {
  test('hand values: aligned 0, orthogonal 2, opposite 4, 45 degrees 2 - sqrt(2); the batch mean', () => {
    assertClose([value(() => negCosine(t2([[3, 0]]), t2([[0.5, 0]])))], [0], { atol: 1e-6 });
    assertClose([value(() => negCosine(t2([[1, 0]]), t2([[0, 2]])))], [2], { atol: 1e-6 });
    assertClose([value(() => negCosine(t2([[1, 0]]), t2([[-1, 0]])))], [4], { atol: 1e-6 });
    assertClose([value(() => negCosine(t2([[1, 1]]), t2([[1, 0]])))], [2 - Math.SQRT2], { atol: 1e-6 });
    const mean = (0 + 2 + 4 + (2 - Math.SQRT2)) / 4;
    const p = t2([[3, 0], [1, 0], [1, 0], [1, 1]]);
    const z = t2([[0.5, 0], [0, 2], [-1, 0], [1, 0]]);
    assertClose([value(() => negCosine(p, z))], [mean], { atol: 1e-6 });
  });

  test('equals the squared distance of the normalised vectors (BYOL eq. 2)', () => {
    const p = randomTensor([6, 5], 5) as Tensor2D;
    const z = randomTensor([6, 5], 6) as Tensor2D;
    const unit = (t: Tensor2D) => tf.div(t, tf.norm(t, 'euclidean', 1, true));
    const mse = value(() => tf.mean(tf.sum(tf.square(tf.sub(unit(p), unit(z))), 1)));
    assertClose([value(() => negCosine(p, z))], [mse], { atol: 1e-5 });
    tf.dispose([p, z]);
  });

  test('the target is detached: only the prediction gets a gradient', () => {
    const p = tf.variable(t2([[1, 2], [3, -1]]));
    const z = tf.variable(t2([[0, 1], [1, 1]]));
    const { value: loss, grads } = tf.variableGrads(() => negCosine(p as unknown as Tensor2D, z as unknown as Tensor2D), [p, z]);
    assert.deepEqual(Object.keys(grads), [p.name]);
    assert.ok(Array.from(grads[p.name]!.dataSync()).some((x) => Math.abs(x) > 1e-6));
    tf.dispose([loss, ...Object.values(grads), p, z]);
  });

  test('a zero vector gives a finite loss (2, as if orthogonal), and bad shapes are errors', () => {
    assertClose([value(() => negCosine(t2([[0, 0]]), t2([[1, 0]])))], [2], { atol: 1e-6 });
    assert.throws(() => negCosine(t2([[1, 0]]), t2([[1, 0, 0]])), /same shape/);
    assert.throws(() => negCosine(tf.zeros([0, 2]) as Tensor2D, tf.zeros([0, 2]) as Tensor2D), /empty batch/);
  });
});
