// src/eval/knn.ts: a hand-computed example of weighted against majority
// votes, a separable toy set (near 100%), random features with random labels
// (near chance), blocking, tensor hygiene and bad inputs.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import { useBackend } from '../src/backend/select.js';
import { knnAccuracy, knnEvaluate, knnNeighbours, knnPredict, l2NormalizeRows } from '../src/eval/knn.js';
import { assertClose, randomArray } from './helpers.js';
import { clusters, randomLabels } from './eval_toy.js';

before(async () => {
  await useBackend('native');
});

describe('kNN by hand', () => {
  // Query (1, 0). Memory: (1, 0) of class 0 at similarity 1, and two rows of
  // class 1 at similarity 0.7, plus a far row of class 2 at -1.
  const s = Math.sqrt(1 - 0.7 * 0.7);
  const memory = Float32Array.from([1, 0, 0.7, s, 0.7, -s, -1, 0]);
  const labels = Int32Array.from([0, 1, 1, 2]);
  const query = Float32Array.from([2, 0]); // not unit length: knn normalises

  test('neighbours are sorted by cosine similarity, ties to the lower index', () => {
    const n = knnNeighbours(memory, query, 2, 3);
    assert.equal(n.k, 3);
    assertClose(n.similarities, [1, 0.7, 0.7], { atol: 1e-6 });
    assert.deepEqual(Array.from(n.indices), [0, 1, 2]);
  });

  test('T = 0.1 weighted votes: exp(10) = 22026 for class 0 beats 2 exp(7) = 2193 for class 1', () => {
    const p = knnPredict(memory, labels, query, 2, { k: 3, temperature: 0.1, weighted: true, numClasses: 4 });
    assert.deepEqual(Array.from(p.top1), [0]);
    assert.deepEqual(Array.from(p.top5), [0, 1, 2, 3, -1], 'classes without votes follow in index order; -1 pads');
  });

  test('T = 1 weighted votes: 2 exp(0.7) = 4.03 for class 1 beats exp(1) = 2.72', () => {
    const p = knnPredict(memory, labels, query, 2, { k: 3, temperature: 1, weighted: true, numClasses: 4 });
    assert.deepEqual(Array.from(p.top1), [1]);
  });

  test('majority of the 3 nearest: two votes for class 1 against one', () => {
    const p = knnPredict(memory, labels, query, 2, { k: 3, weighted: false, numClasses: 4 });
    assert.deepEqual(Array.from(p.top1), [1]);
    assert.deepEqual(Array.from(p.top5.subarray(0, 2)), [1, 0]);
  });

  test('a majority tie goes to the class whose voters are more similar', () => {
    // k = 2: one vote each for class 0 (similarity 1) and class 1 (0.7).
    const p = knnPredict(memory, labels, query, 2, { k: 2, weighted: false, numClasses: 4 });
    assert.deepEqual(Array.from(p.top1), [0]);
  });

  test('k larger than the memory uses the whole memory', () => {
    const p = knnPredict(memory, labels, query, 2, { k: 200, weighted: false, numClasses: 4 });
    assert.deepEqual(Array.from(p.top1), [1]);
  });

  test('accuracy in percent, top-5 counts a label among the five best', () => {
    const queries = Float32Array.from([1, 0, -1, 0.1, 0, 1]);
    const acc = knnAccuracy(memory, labels, queries, Int32Array.from([0, 2, 3]), 2, { k: 1, weighted: false, numClasses: 4 });
    // Predictions 0, 2, 1: two right; the third's label 3 is in its top 5.
    assertClose([acc.top1, acc.top5], [(2 / 3) * 100, 100], { atol: 1e-9 });
  });
});

describe('kNN accuracy', () => {
  test('separable clusters: both protocols near 100%', () => {
    const dim = 32;
    const train = clusters(10, 100, dim, 0.3, 1, 2);
    const q = clusters(10, 30, dim, 0.3, 1, 3);
    const report = knnEvaluate(train.features, train.labels, q.features, q.labels, dim, { numClasses: 10 });
    assert.ok(report.weighted.top1 >= 99, `weighted top-1 ${report.weighted.top1}`);
    assert.ok(report.majority.top1 >= 99, `majority top-1 ${report.majority.top1}`);
    assert.equal(report.weighted.top5, 100);
    assert.equal(report.weighted.k, 200);
    assert.equal(report.weighted.temperature, 0.1);
    assert.equal(report.majority.k, 20);
  });

  test('random features with random labels: near chance (10% top-1, 50% top-5)', () => {
    const dim = 16;
    const memory = randomArray(4000 * dim, 11);
    const queries = randomArray(3000 * dim, 12);
    const report = knnEvaluate(memory, randomLabels(4000, 10, 13), queries, randomLabels(3000, 10, 14), dim, { numClasses: 10 });
    // 3000 queries: one standard deviation is 0.55 points at 10%, 0.9 at 50%.
    for (const acc of [report.weighted, report.majority]) {
      assert.ok(Math.abs(acc.top1 - 10) < 3, `top-1 ${acc.top1} should be near 10`);
      assert.ok(Math.abs(acc.top5 - 50) < 5, `top-5 ${acc.top5} should be near 50`);
    }
  });

  test('small blocks give the same neighbours as one block, and no tensor is left behind', () => {
    const dim = 8;
    const memory = randomArray(300 * dim, 21);
    const queries = randomArray(50 * dim, 22);
    const before = tf.memory().numTensors;
    const whole = knnNeighbours(memory, queries, dim, 10);
    const blocked = knnNeighbours(memory, queries, dim, 10, { blockFloats: 700 }); // 2 query rows per block
    assert.equal(tf.memory().numTensors, before);
    assert.deepEqual(Array.from(blocked.indices), Array.from(whole.indices));
    assertClose(blocked.similarities, whole.similarities, { atol: 1e-6 });
    // Against a brute-force scan.
    const m = l2NormalizeRows(memory, dim);
    const qn = l2NormalizeRows(queries, dim);
    for (let i = 0; i < 50; i++) {
      const sims = Array.from({ length: 300 }, (_, j) => {
        let s = 0;
        for (let d = 0; d < dim; d++) s += qn[i * dim + d]! * m[j * dim + d]!;
        return [s, j] as const;
      }).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
      assert.deepEqual(Array.from(whole.indices.subarray(i * 10, i * 10 + 10)), sims.slice(0, 10).map(([, j]) => j));
    }
  });
});

describe('kNN inputs', () => {
  const memory = Float32Array.from([1, 0, 0, 1]);
  test('labels outside the classes, bad shapes and bad k are errors', () => {
    assert.throws(
      () => knnPredict(memory, Int32Array.from([0, 10]), memory, 2, { k: 1, weighted: false, numClasses: 10 }),
      /memory label 10 at 1 is outside 0\.\.9/,
    );
    assert.throws(() => knnPredict(memory, Int32Array.from([0]), memory, 2, { k: 1, weighted: false, numClasses: 10 }), /2 memory rows but 1 labels/);
    assert.throws(() => knnNeighbours(memory, Float32Array.from([1, 2, 3]), 2, 1), /queries has 3 values, not a multiple of dim 2/);
    assert.throws(() => knnNeighbours(memory, memory, 2, 0), /k must be a positive integer/);
    assert.throws(() => knnNeighbours(new Float32Array(0), memory, 2, 1), /memory is empty/);
  });
});
