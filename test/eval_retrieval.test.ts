// src/eval/retrieval.ts and the retrieval protocol: mAP@R, AP and Recall@k
// computed by hand on small rankings, the tie rule, skipped queries, perfect
// separation, blocking against a brute-force reference, and bad inputs.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import { useBackend } from '../src/backend/select.js';
import type { FeatureSplits } from '../src/eval/feature_input.js';
import type { EvalReport } from '../src/eval/protocol.js';
import { retrievalProtocol } from '../src/eval/protocols/retrieval.js';
import { rankBySimilarity, retrievalEvaluate, scoreRanking } from '../src/eval/retrieval.js';
import { assertClose, rng } from './helpers.js';
import { clusters } from './eval_toy.js';

before(async () => {
  await useBackend('native');
});

/** Unit vectors at these angles in degrees, row-major [n, 2], each scaled by `scale` (normalisation must undo it). */
function atAngles(degrees: number[], scale = 1): Float32Array {
  return Float32Array.from(degrees.flatMap((d) => [scale * Math.cos((d * Math.PI) / 180), scale * Math.sin((d * Math.PI) / 180)]));
}

// The hand-made case. Database on the unit circle, with labels:
//   d0 0° A, d1 60° B, d2 120° A, d3 180° B, d4 240° C, d5 300° A
// so R = 3 for A, 2 for B, 1 for C. Cosine similarity falls with the angle
// between query and item, so a ranking is the items by angular distance.
const A = 0;
const B = 1;
const C = 2;
const database = atAngles([0, 60, 120, 180, 240, 300]);
const databaseLabels = Int32Array.from([A, B, A, B, C, A]);
// q0 at 10°, label A: distances d0 10, d1 50, d5 70, d2 110, d4 130, d3 170.
//   Ranking d0 d1 d5 d2 d4 d3; relevant (A) at ranks 1, 3, 4 (1-based); R = 3.
//   mAP@R: within the top 3, rank 1 (P = 1/1) and rank 3 (P = 2/3): (1 + 2/3) / 3 = 5/9.
//   AP: (1 + 2/3 + 3/4) / 3 = 29/36. Recall@1 = 1: one relevant in the top 1
//   is enough (the fraction of relevant items found would be 1/3).
// q1 at 170°, label B: distances d3 10, d2 50, d4 70, d1 110, d5 130, d0 170.
//   Ranking d3 d2 d4 d1 d5 d0; relevant (B) at ranks 1, 4; R = 2.
//   mAP@R: within the top 2 only rank 1: 1 / 2 = 1/2. AP: (1 + 2/4) / 2 = 3/4. Recall@1 = 1.
// q2 at 55°, label C: distances d1 5, d0 55, d2 65, d5 115, d3 125, d4 175.
//   Ranking d1 d0 d2 d5 d3 d4; the one relevant (C) last, at rank 6; R = 1.
//   mAP@R: rank 1 is not relevant: 0. AP: 1/6. Recall@1 = Recall@5 = 0, Recall@10 = 1.
// Means over the 3 queries:
//   mAP@R = (5/9 + 1/2 + 0) / 3 = 19/54; mAP = (29/36 + 3/4 + 1/6) / 3 = 31/54;
//   Recall@1 = 2/3, Recall@5 = 2/3, Recall@10 = 3/3.
const queries = atAngles([10, 170, 55], 2.5);
const queryLabels = Int32Array.from([A, B, C]);
const expected = { mapAtR: (100 * 19) / 54, map: (100 * 31) / 54, recallAt1: 200 / 3, recallAt5: 200 / 3, recallAt10: 100 };

function metricsOf(r: { mapAtR: number; map: number; recallAt1: number; recallAt5: number; recallAt10: number }): number[] {
  return [r.mapAtR, r.map, r.recallAt1, r.recallAt5, r.recallAt10];
}

describe('retrieval metrics by hand', () => {
  test('scoreRanking: mAP@R and AP of one query from its relevant ranks', () => {
    // The three queries above, 0-based ranks.
    const q0 = scoreRanking([0, 2, 3])!;
    assertClose([q0.relevant, q0.firstRelevant, q0.apAtR, q0.ap], [3, 0, 5 / 9, 29 / 36], { atol: 1e-12 });
    const q1 = scoreRanking([0, 3])!;
    assertClose([q1.relevant, q1.firstRelevant, q1.apAtR, q1.ap], [2, 0, 1 / 2, 3 / 4], { atol: 1e-12 });
    const q2 = scoreRanking([5])!;
    assertClose([q2.relevant, q2.firstRelevant, q2.apAtR, q2.ap], [1, 5, 0, 1 / 6], { atol: 1e-12 });
    // All relevant items first: both are 1.
    const perfect = scoreRanking([0, 1, 2, 3])!;
    assert.deepEqual([perfect.apAtR, perfect.ap], [1, 1]);
    // R = 4 at ranks 2, 3, 5, 9 (1-based 3, 4, 6, 10): mAP@R (1/3 + 2/4) / 4 = 5/24;
    // AP (1/3 + 2/4 + 3/6 + 4/10) / 4 = (26/15) / 4 = 13/30.
    const late = scoreRanking(Int32Array.from([2, 3, 5, 9]))!;
    assertClose([late.apAtR, late.ap], [5 / 24, 13 / 30], { atol: 1e-12 });
    assert.equal(scoreRanking([]), null);
  });

  test('scoreRanking refuses ranks that are not increasing integers', () => {
    assert.throws(() => scoreRanking([0, 2, 2]), /relevantRanks must be increasing integers >= 0, got 2 at position 2 after 2/);
    assert.throws(() => scoreRanking([-1]), /got -1 at position 0/);
    assert.throws(() => scoreRanking([0.5]), /got 0\.5 at position 0/);
  });

  test('rankBySimilarity: decreasing similarity, ties to the lower index, -0 ties +0', () => {
    // -0 comes first so that ranking +0 above it (as their bits would) breaks the tie rule.
    const sims = Float32Array.from([0.5, 1, -0.25, 1, -0, 0, 0.5, -1, -1e-30, 1e-30]);
    // 1 (at 1, 3), 0.5 (0, 6), 1e-30 (9), -0 and 0 tied (4, 5), -1e-30 (8), -0.25 (2), -1 (7).
    assert.deepEqual(Array.from(rankBySimilarity(sims)), [1, 3, 0, 6, 9, 4, 5, 8, 2, 7]);
    assert.deepEqual(Array.from(sims.subarray(4, 6)).map((x) => Object.is(x, -0)), [true, false], 'the input is left as it was');
    assert.throws(() => rankBySimilarity(Float32Array.from([0, Number.NaN])), /similarities has a non-finite value NaN at 1/);
  });

  test('three queries against six database items', () => {
    const r = retrievalEvaluate(database, databaseLabels, queries, queryLabels, 2);
    assertClose(metricsOf(r), metricsOf(expected), { atol: 1e-9 });
    assert.deepEqual([r.queries, r.database, r.evaluated, r.skipped], [3, 6, 3, 0]);
    assert.deepEqual(Array.from(r.perQuery.relevant), [3, 2, 1]);
    assert.deepEqual(Array.from(r.perQuery.firstRelevant), [0, 0, 5]);
    assertClose(r.perQuery.apAtR, [5 / 9, 1 / 2, 0], { atol: 1e-12 });
    assertClose(r.perQuery.ap, [29 / 36, 3 / 4, 1 / 6], { atol: 1e-12 });
  });

  test('a query whose label is not in the database is skipped and counted, the others unchanged', () => {
    // A fourth query of label 3, which no database item has, between the others.
    const q = Float32Array.from([...queries.subarray(0, 4), 0, 1, ...queries.subarray(4)]);
    const labels = Int32Array.from([A, B, 3, C]);
    const r = retrievalEvaluate(database, databaseLabels, q, labels, 2);
    assertClose(metricsOf(r), metricsOf(expected), { atol: 1e-9 });
    assert.deepEqual([r.queries, r.evaluated, r.skipped], [4, 3, 1]);
    assert.equal(r.perQuery.relevant[2], 0);
    assert.equal(r.perQuery.firstRelevant[2], -1);
    assert.ok(Number.isNaN(r.perQuery.apAtR[2]!) && Number.isNaN(r.perQuery.ap[2]!));
    assert.throws(
      () => retrievalEvaluate(database, databaseLabels, Float32Array.from([0, 1]), Int32Array.from([7]), 2),
      /none of the 1 queries has a relevant database item/,
    );
  });

  test('ties rank the lower database index first', () => {
    // Axis-aligned database rows give exact similarities (q·(1, 0) = q0), so
    // d1, d2, d3 tie exactly at 1 for the query (1, 0):
    //   d0 (0, 1) B, d1 (1, 0) A, d2 (1, 0) A, d3 (1, 0) B, d4 (-1, 0) A.
    // Ranking by the tie rule: d1 d2 d3 d0 d4.
    // Label A, relevant d1 d2 d4 at ranks 1, 2, 5; R = 3:
    //   mAP@R (1 + 1) / 3 = 2/3; AP (1 + 1 + 3/5) / 3 = 13/15; Recall@1 = 1.
    // Label B, relevant d3 d0 at ranks 3, 4; R = 2:
    //   mAP@R 0; AP (1/3 + 2/4) / 2 = 5/12; Recall@1 = 0, Recall@5 = 1.
    // The higher index first (d3 d2 d1) would give B Recall@1 = 1 and A mAP@R 1/3.
    const db = Float32Array.from([0, 1, 1, 0, 1, 0, 1, 0, -1, 0]);
    const dbLabels = Int32Array.from([B, A, A, B, A]);
    const q = Float32Array.from([3, 0, 0.5, 0]);
    const r = retrievalEvaluate(db, dbLabels, q, Int32Array.from([A, B]), 2);
    assert.deepEqual(Array.from(r.perQuery.firstRelevant), [0, 2]);
    assertClose(r.perQuery.apAtR, [2 / 3, 0], { atol: 1e-12 });
    assertClose(r.perQuery.ap, [13 / 15, 5 / 12], { atol: 1e-12 });
    assertClose(metricsOf(r), [100 / 3, (100 * (13 / 15 + 5 / 12)) / 2, 50, 100, 100], { atol: 1e-9 });
  });

  test('perfectly separated classes score 100 on every metric', () => {
    const dim = 16;
    const db = clusters(5, 40, dim, 0.05, 1, 2);
    const q = clusters(5, 10, dim, 0.05, 1, 3);
    const r = retrievalEvaluate(db.features, db.labels, q.features, q.labels, dim);
    assert.deepEqual(metricsOf(r), [100, 100, 100, 100, 100]);
    assert.deepEqual([r.evaluated, r.skipped], [50, 0]);
  });
});

describe('retrieval blocking', () => {
  // Rows of ±1 in 16-d: normalised entries are ±0.25 and every similarity a
  // multiple of 1/16, exact in float32 whatever the GEMM's summation order.
  // Only 17 values are possible, so ties are everywhere and the tie rule is
  // exercised on every query.
  const dim = 16;
  function signs(rows: number, seed: number): Float32Array {
    const r = rng(seed);
    return Float32Array.from({ length: rows * dim }, () => (r() < 0.5 ? -1 : 1));
  }
  function labelsOf(rows: number, classes: number, seed: number): Int32Array {
    const r = rng(seed);
    return Int32Array.from({ length: rows }, () => Math.floor(r() * classes));
  }
  const db = signs(300, 31);
  const dbLabels = labelsOf(300, 5, 32);
  const q = signs(50, 33);
  const qLabels = labelsOf(50, 6, 34); // label 5 is not in the database: some queries are skipped

  /** The definitions applied literally: a full sort with a comparator, precision counted at each rank. */
  function reference(i: number): { apAtR: number; ap: number; first: number } | null {
    const dots = Array.from({ length: 300 }, (_, j) => {
      let s = 0;
      for (let d = 0; d < dim; d++) s += q[i * dim + d]! * db[j * dim + d]!;
      return [s, j] as const;
    }).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    const relevant = dots.map(([, j]) => dbLabels[j] === qLabels[i]);
    const r = relevant.filter(Boolean).length;
    if (r === 0) return null;
    let hits = 0;
    let apAtR = 0;
    let ap = 0;
    relevant.forEach((rel, rank) => {
      if (!rel) return;
      hits++;
      ap += hits / (rank + 1);
      if (rank + 1 <= r) apAtR += hits / (rank + 1);
    });
    return { apAtR: apAtR / r, ap: ap / r, first: relevant.indexOf(true) };
  }

  test('block sizes 1, 7 and one block agree exactly with each other and with a brute-force reference; no tensor is left', () => {
    const before = tf.memory().numTensors;
    const whole = retrievalEvaluate(db, dbLabels, q, qLabels, dim);
    const one = retrievalEvaluate(db, dbLabels, q, qLabels, dim, { blockQueries: 1 });
    const seven = retrievalEvaluate(db, dbLabels, q, qLabels, dim, { blockQueries: 7 }); // 50 = 7 * 7 + 1: a short last block
    const byFloats = retrievalEvaluate(db, dbLabels, q, qLabels, dim, { blockFloats: 1000 }); // 3 queries per block
    assert.equal(tf.memory().numTensors, before);
    for (const other of [one, seven, byFloats]) {
      assert.deepEqual(metricsOf(other), metricsOf(whole));
      assert.deepEqual(other.perQuery, whole.perQuery);
    }
    assert.ok(whole.skipped > 0 && whole.evaluated > 0, `skipped ${whole.skipped}, evaluated ${whole.evaluated}`);
    let hits1 = 0;
    let hits10 = 0;
    for (let i = 0; i < 50; i++) {
      const ref = reference(i);
      if (ref === null) {
        assert.equal(whole.perQuery.relevant[i], 0, `query ${i}`);
        continue;
      }
      assert.equal(whole.perQuery.firstRelevant[i], ref.first, `query ${i}: first relevant rank`);
      assertClose([whole.perQuery.apAtR[i]!, whole.perQuery.ap[i]!], [ref.apAtR, ref.ap], { atol: 1e-12 }, `query ${i}`);
      if (ref.first < 1) hits1++;
      if (ref.first < 10) hits10++;
    }
    assertClose([whole.recallAt1, whole.recallAt10], [(100 * hits1) / whole.evaluated, (100 * hits10) / whole.evaluated], { atol: 1e-9 });
  });
});

describe('retrieval inputs', () => {
  const m = Float32Array.from([1, 0, 0, 1]);
  const l = Int32Array.from([0, 1]);
  test('bad shapes, labels, blocks and values are errors that name the field', () => {
    assert.throws(() => retrievalEvaluate(m, l, Float32Array.from([1, 2, 3]), l, 2), /queries has 3 values, not a multiple of dim 2/);
    assert.throws(() => retrievalEvaluate(Float32Array.from([1, 2, 3]), l, m, l, 2), /database has 3 values, not a multiple of dim 2/);
    assert.throws(() => retrievalEvaluate(m, Int32Array.from([0]), m, l, 2), /database has 2 rows but databaseLabels has 1/);
    assert.throws(() => retrievalEvaluate(m, l, m, Int32Array.from([0, 1, 1]), 2), /queries has 2 rows but queryLabels has 3/);
    assert.throws(() => retrievalEvaluate(m, l, m, l, 0), /dim must be a positive integer, got 0/);
    assert.throws(() => retrievalEvaluate(new Float32Array(0), new Int32Array(0), m, l, 2), /database is empty/);
    assert.throws(() => retrievalEvaluate(m, l, new Float32Array(0), new Int32Array(0), 2), /no queries/);
    assert.throws(() => retrievalEvaluate(m, l, m, l, 2, { blockQueries: 0 }), /blockQueries must be a positive integer, got 0/);
    assert.throws(() => retrievalEvaluate(m, l, Float32Array.from([1, Number.POSITIVE_INFINITY]), Int32Array.from([0]), 2), /queries has a non-finite value Infinity at 1/);
  });
});

describe('retrieval protocol', () => {
  function splits(): FeatureSplits {
    // The hand-made case, plus a query of label 3 that no training image has.
    return {
      stage: 'res4',
      dim: 2,
      numClasses: 4,
      dataset: 'toy',
      train: { features: database, labels: databaseLabels, cached: false },
      test: { features: Float32Array.from([...queries, 0, 1]), labels: Int32Array.from([A, B, C, 3]), cached: false },
    };
  }

  test('runs on hand-made feature splits: test images query the training images', async () => {
    const lines: string[] = [];
    const options = retrievalProtocol.options.parse({});
    const result = await retrievalProtocol.run({ kind: 'features', features: splits() }, options, (line) => lines.push(line));
    assert.deepEqual(Object.keys(result.metrics), ['mapAtR', 'map', 'recallAt1', 'recallAt5', 'recallAt10']);
    const m = result.metrics;
    assertClose([m.mapAtR!, m.map!, m.recallAt1!, m.recallAt5!, m.recallAt10!], metricsOf(expected), { atol: 1e-9 });
    assert.deepEqual(
      { queries: result.details?.queries, database: result.details?.database, evaluated: result.details?.evaluated, skipped: result.details?.skipped },
      { queries: 4, database: 6, evaluated: 3, skipped: 1 },
    );
    assert.deepEqual(lines, ['retrieval: 1 of 4 queries have no relevant database image and are skipped']);

    const report: EvalReport = {
      protocol: 'retrieval',
      checkpoint: { path: 'runs/x/last.safetensors', sha256: null } as unknown as EvalReport['checkpoint'],
      data: { name: 'toy', trainImages: 6, testImages: 4, stage: 'res4', dim: 2 },
      options: {},
      metrics: result.metrics,
      details: result.details!,
      artifacts: {},
      backend: 'native',
      createdAt: '2024-01-01T00:00:00.000Z',
      seconds: 0,
    };
    const text = retrievalProtocol.format(report);
    assert.match(text, /^retrieval on res4 \(2-d\), 4 test queries -> 6 train images, 1 queries without a relevant image skipped\n/);
    assert.match(text, /\nmAP@R +35\.19\n/);
    assert.match(text, /\nmAP +57\.41\n/);
    assert.match(text, /\nRecall@1 +66\.67\nRecall@5 +66\.67\nRecall@10 +100\.00\n$/);
  });

  test('mismatched feature sizes name the split and field; unknown options are refused', async () => {
    const log = () => {};
    const o = retrievalProtocol.options.parse({});
    const badTest = splits();
    badTest.test.features = Float32Array.from([1, 0, 0]);
    await assert.rejects(retrievalProtocol.run({ kind: 'features', features: badTest }, o, log), /test\.features has 3 values, not a multiple of features\.dim 2/);
    const badTrain = splits();
    badTrain.train.labels = Int32Array.from([0, 1]);
    await assert.rejects(retrievalProtocol.run({ kind: 'features', features: badTrain }, o, log), /train\.features has 6 rows but train\.labels has 2/);
    const badDim = splits();
    badDim.dim = 5;
    await assert.rejects(retrievalProtocol.run({ kind: 'features', features: badDim }, o, log), /train\.features has 12 values, not a multiple of features\.dim 5/);
    assert.equal(retrievalProtocol.options.safeParse({ k: 5 }).success, false);
    assert.equal(retrievalProtocol.input, 'features');
  });
});
