// src/eval/svm.ts and src/eval/protocols/svm.ts: the dual coordinate-descent
// L2-loss SVM against hand-derived optima and its own primal, the two AP
// definitions by hand, svm_tools' folds and cost choice, and the protocol on
// separable blobs and on a hand-made multi-label set.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../src/core/random.js';
import { singleLabel, type FeatureSplits } from '../src/eval/feature_input.js';
import { svmProtocol, SvmProtocolOptions } from '../src/eval/protocols/svm.js';
import {
  averagePrecision,
  decisionValues,
  interpolatedAveragePrecision,
  primalObjective,
  searchCost,
  stratifiedFolds,
  SVM_TOOLS_COSTS,
  trainBinarySvm,
  type BinaryProblem,
} from '../src/eval/svm.js';
import { clusters } from './eval_toy.js';
import { assertClose } from './helpers.js';

/** n points of two Gaussian classes in `dim` dimensions, means +-shift on every axis, labels +1 for the first half. */
function gaussianPair(n: number, dim: number, shift: number, seed: number): BinaryProblem {
  const r = Rng.seeded(seed);
  const features = new Float32Array(n * dim);
  const labels = new Int8Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i < n / 2 ? 1 : -1;
    for (let j = 0; j < dim; j++) features[i * dim + j] = labels[i]! * shift + r.normal();
  }
  return { features, dim, labels };
}

describe('linear SVM (dual coordinate descent, squared hinge)', () => {
  test('two points in 1-D: w, b and the dual objective match the hand-derived optimum', () => {
    // x = +1 (y = +1) and x = -1 (y = -1); with the bias feature x~ = (1, 1) and
    // (-1, 1), orthogonal with |x~|^2 = 2. Primal with u = 1 - w - b, v = 1 - w + b
    // (both margins below 1 at the optimum):
    //   P = (w^2 + b^2)/2 + C+ u^2 + C- v^2.
    // dP/dw = 0 and dP/db = 0 give w = a+ + a-, b = a+ - a-, with a+ = 2 C+ u,
    // a- = 2 C- v (the dual variables); then u = 1 - 2 a+, so
    //   a+ = 2 C+ / (1 + 4 C+),  a- = 2 C- / (1 + 4 C-),
    // and each point's share of the dual, a^2 (1 + 1/(4C)) - a, is -a/2, so the
    // optimum is P* = D* = (a+ + a-)/2 = w/2.
    // C = 1, weights 1/1: a = 2/5, w = 4/5, b = 0, P* = 2/5.
    // C = 1, weights 2/1 (C+ = 2): a+ = 4/9, a- = 2/5, w = 38/45, b = 2/45, P* = 19/45.
    const p: BinaryProblem = { features: Float32Array.from([1, -1]), dim: 1, labels: Int8Array.from([1, -1]) };
    const cases = [
      { positiveWeight: 1, w: 4 / 5, b: 0, alpha: [2 / 5, 2 / 5], obj: 2 / 5 },
      { positiveWeight: 2, w: 38 / 45, b: 2 / 45, alpha: [4 / 9, 2 / 5], obj: 19 / 45 },
    ];
    for (const c of cases) {
      const o = { cost: 1, positiveWeight: c.positiveWeight, tolerance: 1e-10, maxIterations: 10_000 };
      const m = trainBinarySvm(p, o);
      assert.ok(m.converged);
      assert.ok(Math.abs(m.weights[0]! - c.w) < 1e-6, `w ${m.weights[0]} vs ${c.w}`);
      assert.ok(Math.abs(m.intercept - c.b) < 1e-6, `b ${m.intercept} vs ${c.b}`);
      assert.ok(Math.abs(m.alpha[0]! - c.alpha[0]!) < 1e-6 && Math.abs(m.alpha[1]! - c.alpha[1]!) < 1e-6, `alpha ${m.alpha}`);
      assert.ok(Math.abs(m.dualObjective - c.obj) < 1e-6, `dual ${m.dualObjective} vs ${c.obj}`);
      assert.ok(Math.abs(primalObjective(m, p, o) - c.obj) < 1e-6);
    }
  });

  test('a separable problem at a large C: 100% training accuracy, margins >= 1 up to the L2 slack, KKT holds', () => {
    const p = gaussianPair(60, 2, 2.5, 1);
    const f0 = decisionValues({ weights: Float64Array.from([1, 1]), intercept: 0 }, p.features);
    assert.ok(Array.from(f0).every((v, i) => v * p.labels[i]! > 0), 'the toy set is separable by x1 + x2');
    const C = 1e4;
    const m = trainBinarySvm(p, { cost: C, tolerance: 1e-7, maxIterations: 100_000 });
    assert.ok(m.converged, `stopped after ${m.iterations} epochs`);
    const f = decisionValues(m, p.features);
    let support = 0;
    for (let i = 0; i < 60; i++) {
      const y = p.labels[i]!;
      const margin = y * f[i]!;
      const Ci = C * (y === 1 ? 2 : 1);
      assert.ok(margin > 0, `point ${i} misclassified`);
      // KKT of the L2 loss: alpha_i > 0 exactly when y f = 1 - alpha_i / (2 C_i) < 1; alpha_i = 0 needs y f >= 1.
      if (m.alpha[i]! > 0) {
        support++;
        assert.ok(Math.abs(margin - (1 - m.alpha[i]! / (2 * Ci))) < 1e-5, `support vector ${i}: margin ${margin}, alpha ${m.alpha[i]}`);
      } else assert.ok(margin >= 1 - 1e-5, `non-support ${i}: margin ${margin}`);
      assert.ok(margin >= 1 - 1e-3, `point ${i}: margin ${margin} at C = ${C}`);
    }
    assert.ok(support >= 2 && support < 20, `${support} support vectors`);
  });

  test('at convergence the dual objective equals the primal (duality gap ~ 0); before it, it stays below', () => {
    const p = gaussianPair(300, 5, 0.4, 2); // overlapping classes: many margin violators
    for (const cost of [0.01, 1, 30]) {
      const o = { cost, tolerance: 1e-8, maxIterations: 100_000 };
      const m = trainBinarySvm(p, o);
      const primal = primalObjective(m, p, o);
      assert.ok(m.converged);
      assert.ok(Math.abs(primal - m.dualObjective) <= 1e-6 * primal, `C ${cost}: primal ${primal}, dual ${m.dualObjective}`);
      const early = trainBinarySvm(p, { ...o, maxIterations: 1 });
      const gap = primalObjective(early, p, o) - early.dualObjective;
      assert.ok(gap > 1e-6 * primal, `C ${cost}: one epoch leaves a gap (${gap})`);
      assert.ok(early.dualObjective <= m.dualObjective + 1e-9 && m.dualObjective <= primal + 1e-9);
    }
  });

  test('class weight 2 on the positives moves the boundary towards the negatives', () => {
    const p = gaussianPair(400, 1, 0.5, 3); // overlapping 1-D classes, equal sizes
    const threshold = (positiveWeight: number) => {
      const m = trainBinarySvm(p, { cost: 1, positiveWeight, tolerance: 1e-8 });
      assert.ok(m.weights[0]! > 0);
      return -m.intercept / m.weights[0]!;
    };
    const even = threshold(1);
    const weighted = threshold(2);
    const light = threshold(0.5);
    assert.ok(weighted < even - 0.05, `x* ${even} -> ${weighted} with positive weight 2`);
    assert.ok(light > even + 0.05, `x* ${even} -> ${light} with positive weight 0.5`);
  });

  test('reproducible: the same stream gives the same model; shrinking and not reach the same optimum', () => {
    const p = gaussianPair(200, 6, 0.3, 4);
    const a = trainBinarySvm(p, { cost: 1, rng: Rng.seeded(7) });
    const b = trainBinarySvm(p, { cost: 1, rng: Rng.seeded(7) });
    assert.deepEqual(a, b);
    const c = trainBinarySvm(p, { cost: 1, rng: Rng.seeded(8), tolerance: 1e-9, maxIterations: 100_000 });
    const d = trainBinarySvm(p, { cost: 1, shrinking: false, tolerance: 1e-9, maxIterations: 100_000 });
    for (let j = 0; j < 6; j++) assert.ok(Math.abs(c.weights[j]! - d.weights[j]!) < 1e-6);
    assert.ok(Math.abs(c.intercept - d.intercept) < 1e-6);
  });

  test('bad inputs name the field', () => {
    const p: BinaryProblem = { features: Float32Array.from([1, -1]), dim: 1, labels: Int8Array.from([1, -1]) };
    assert.throws(() => trainBinarySvm(p, { cost: 0 }), /cost must be a positive/);
    assert.throws(() => trainBinarySvm({ ...p, labels: Int8Array.from([1, 0]) }, { cost: 1 }), /labels\[1\] is 0/);
    assert.throws(() => trainBinarySvm({ ...p, labels: Int8Array.from([1, 1]) }, { cost: 1 }), /both classes/);
    assert.throws(() => trainBinarySvm({ ...p, rows: Int32Array.from([0, 2]) }, { cost: 1 }), /rows\[1\] = 2/);
    assert.throws(() => trainBinarySvm({ ...p, dim: 3 }, { cost: 1 }), /not a multiple of dim 3/);
    assert.throws(() => trainBinarySvm(p, { cost: 1, maxIterations: 0.5 }), /maxIterations/);
  });
});

describe('average precision', () => {
  test('by hand, with and without interpolation; tied scores are one threshold', () => {
    // Distinct scores, ranking + - - + +: (R, P) = (1/3, 1), (1/3, 1/2), (1/3, 1/3), (2/3, 1/2), (1, 3/5).
    // sklearn: 1/3 * 1 + 1/3 * 1/2 + 1/3 * 3/5 = 7/10.
    // Interpolated: the precision at recall 2/3 becomes max(1/2, 3/5) = 3/5: 1/3 + 2/3 * 3/5 = 11/15.
    const scores = [5, 4, 3, 2, 1];
    const pos = [true, false, false, true, true];
    assert.ok(Math.abs(averagePrecision(scores, pos) - 7 / 10) < 1e-12);
    assert.ok(Math.abs(interpolatedAveragePrecision(scores, pos) - 11 / 15) < 1e-12);
    // With a tie, ranking + (- +) - - +: the tied pair is one threshold at (R, P) = (2/3, 2/3),
    // whichever of the two comes first: 1/3 * 1 + 1/3 * 2/3 + 1/3 * 1/2 = 13/18 for both.
    const tied = [0.9, 0.8, 0.8, 0.7, 0.6, 0.5];
    const a = [true, false, true, false, false, true];
    const b = [true, true, false, false, false, true];
    for (const labels of [a, b]) {
      assert.ok(Math.abs(averagePrecision(tied, labels) - 13 / 18) < 1e-12);
      assert.ok(Math.abs(interpolatedAveragePrecision(tied, labels) - 13 / 18) < 1e-12);
    }
    // All scores tied: precision is the positive rate at recall 1.
    assert.equal(averagePrecision([1, 1, 1, 1], [true, false, false, false]), 1 / 4);
    assert.equal(averagePrecision([3, 2, 1], [true, true, false]), 1);
    assert.ok(Number.isNaN(averagePrecision([1, 2], [false, false])));
    assert.throws(() => averagePrecision([1, 2], [true]), /2 scores but 1 labels/);
  });
});

describe('cross-validation and cost choice', () => {
  test("svm_tools' cost list and sklearn's StratifiedKFold(3) folds", () => {
    assert.equal(SVM_TOOLS_COSTS.length, 19);
    assert.deepEqual(SVM_TOOLS_COSTS.slice(0, 4), [1, 10, 100, 0.0625]);
    assert.equal(SVM_TOOLS_COSTS.at(-1), 2 ** -19);
    // Labels + - - + - - + - - -: sorted, 7 negatives then 3 positives; positions
    // 0,3,6,9 / 1,4,7 / 2,5,8 give the folds 3/2/2 negatives and 1/1/1 positives,
    // handed out to each class's rows in data order.
    const folds = stratifiedFolds([1, -1, -1, 1, -1, -1, 1, -1, -1, -1], 3);
    assert.deepEqual(Array.from(folds), [0, 0, 0, 1, 0, 1, 2, 1, 2, 2]);
  });

  test('CV picks the large cost where a tiny C underfits, and the smaller cost on a tie', () => {
    // x1 separates the classes (+-0.1) but is small; x2 has a large mean shift buried in
    // noise. As C -> 0, w -> 2 sum_i C_i y_i x~_i, the weighted class-mean difference,
    // which x2 dominates and ranks poorly; a large C finds x1.
    const r = Rng.seeded(5);
    const n = 120;
    const features = new Float32Array(n * 2);
    const labels = new Int8Array(n);
    for (let i = 0; i < n; i++) {
      const y = i % 3 === 0 ? 1 : -1;
      labels[i] = y;
      features[2 * i] = 0.1 * y + 0.02 * r.normal();
      features[2 * i + 1] = (y === 1 ? 2 : 0) + 4 * r.normal();
    }
    const p = { features, dim: 2, labels };
    const s = searchCost(p, { costs: [1e-5, 1000], folds: 3, tolerance: 1e-4, maxIterations: 20_000 });
    assert.equal(s.best, 1, `CV AP ${s.cvAP}`);
    assert.ok(s.cvAP[1]! > 0.98 && s.cvAP[0]! < s.cvAP[1]! - 0.1, `CV AP ${s.cvAP}`);
    assert.equal(s.foldAP[0]!.length, 3);

    const easy = gaussianPair(60, 3, 3, 6);
    const seen: number[] = [];
    const t = searchCost(easy, { costs: [10, 0.5, 1], folds: 3, onCost: (_, cost) => seen.push(cost) });
    assert.deepEqual(t.cvAP, [1, 1, 1]);
    assert.equal(t.costs[t.best], 0.5);
    assert.deepEqual(seen, [10, 0.5, 1]);
    assert.throws(() => searchCost(easy, { costs: [1], folds: 40 }), /30 positive rows, fewer than folds \(40\)/);
  });
});

describe('svm protocol', () => {
  const blobs = (): FeatureSplits => {
    const dim = 8;
    const train = clusters(3, 60, dim, 0.5, 11, 12);
    const test = clusters(3, 40, dim, 0.5, 11, 13);
    return {
      stage: 'res5',
      dim,
      numClasses: 3,
      dataset: 'blobs',
      train: { ...train, cached: false },
      test: { ...test, cached: false },
    };
  };

  test('three Gaussian blobs: top-1 > 95%, high mAP, progress per class and cost; the same run twice', async () => {
    const options = SvmProtocolOptions.parse({});
    assert.deepEqual(options.costs, SVM_TOOLS_COSTS);
    const lines: string[] = [];
    const a = await svmProtocol.run({ kind: 'features', features: blobs() }, options, (l) => lines.push(l));
    assert.ok(a.metrics.top1! > 95, `top-1 ${a.metrics.top1}`);
    assert.ok(a.metrics.mAP! > 95, `mAP ${a.metrics.mAP}`);
    assert.ok(a.metrics.cvMAP! > 95, `CV mAP ${a.metrics.cvMAP}`);
    const perClass = a.details!.perClass as Array<{ cost: number; testAP: number }>;
    assert.equal(perClass.length, 3);
    for (const c of perClass) assert.ok(SVM_TOOLS_COSTS.includes(c.cost));
    assert.equal(lines.filter((l) => /^svm class \d\/3: cost .*CV AP/.test(l)).length, 3 * 19);
    assert.ok(lines.some((l) => l.startsWith('svm class 3/3: chose cost')));
    const b = await svmProtocol.run({ kind: 'features', features: blobs() }, options, () => {});
    assert.deepEqual(a, b);
    const text = svmProtocol.format({
      protocol: 'svm',
      checkpoint: {} as never,
      data: { name: 'blobs', trainImages: 180, testImages: 120, stage: 'res5', dim: 8 },
      options,
      metrics: a.metrics,
      details: a.details,
      artifacts: {},
      backend: 'cpu',
      createdAt: '',
      seconds: 0,
    });
    assert.match(text, /mAP \d+\.\d\d {3}top-1 \d+\.\d\d/);
  });

  /**
   * Multi-label, 4 classes, 4-d features, train 36 / test 18 images, each
   * class in an image with probability 0.4: feature 0 is class 0's label and
   * feature 1 class 1's (so their SVMs rank every positive first), feature 2
   * is noise that class 2's label does not follow, feature 3 is a constant 1
   * (no row is zero). Class 3 has training positives but none in the test split.
   */
  const multiLabelSplits = (): FeatureSplits => {
    const r = Rng.seeded(21);
    const K = 4;
    const side = (n: number, test: boolean) => {
      const multiLabels = new Uint8Array(n * K);
      const features = new Float32Array(n * K);
      for (let i = 0; i < n; i++) {
        for (let k = 0; k < K; k++) multiLabels[i * K + k] = k === 3 && test ? 0 : r.chance(0.4) ? 1 : 0;
        features[i * K] = multiLabels[i * K]!;
        features[i * K + 1] = multiLabels[i * K + 1]!;
        features[i * K + 2] = r.next();
        features[i * K + 3] = 1;
      }
      return { features, labels: new Int32Array(n).fill(-1), multiLabels, cached: false };
    };
    return { stage: 'res4', dim: K, numClasses: K, classNames: ['a', 'b', 'c', 'd'], dataset: 'scenes:hand-made', train: side(36, false), test: side(18, true) };
  };

  test('multi-label: a feature equal to the label gives AP 100; positives are the images holding the class; mAP over classes with test positives; no top-1', async () => {
    const f = multiLabelSplits();
    const column = (m: Uint8Array, k: number) => Array.from({ length: m.length / 4 }, (_, i) => m[i * 4 + k]!).reduce((a, b) => a + b, 0);
    for (let k = 0; k < 4; k++) assert.ok(column(f.train.multiLabels!, k) >= 3, `class ${k} has ${column(f.train.multiLabels!, k)} training positives`);
    const options = SvmProtocolOptions.parse({ costs: [1, 10, 100] });
    const r = await svmProtocol.run({ kind: 'features', features: f }, options, () => {});
    assert.deepEqual(Object.keys(r.metrics).sort(), ['cvMAP', 'mAP']);
    const perClass = r.details!.perClass as Array<{ class: number; name: string; testAP: number | null; positives: number; testPositives: number }>;
    assert.deepEqual(perClass.map((c) => c.name), ['a', 'b', 'c', 'd']);
    for (const c of perClass) {
      assert.equal(c.positives, column(f.train.multiLabels!, c.class), `class ${c.class} training positives`);
      assert.equal(c.testPositives, column(f.test.multiLabels!, c.class), `class ${c.class} test positives`);
    }
    assert.equal(perClass[0]!.testAP, 100);
    assert.equal(perClass[1]!.testAP, 100);
    assert.ok(perClass[2]!.testAP! < 100, `class 2 (noise) test AP ${perClass[2]!.testAP}`);
    assert.equal(perClass[3]!.testAP, null, 'class 3 has no test positive');
    assertClose([r.metrics.mAP!], [(100 + 100 + perClass[2]!.testAP!) / 3], { atol: 1e-9, rtol: 0 });
    assert.match(String(r.details!.labels), /^multi-label/);
    const text = svmProtocol.format({
      protocol: 'svm',
      checkpoint: {} as never,
      data: { name: 'scenes:hand-made', trainImages: 36, testImages: 18, stage: 'res4', dim: 4 },
      options,
      metrics: r.metrics,
      details: r.details,
      artifacts: {},
      backend: 'cpu',
      createdAt: '',
      seconds: 0,
    });
    assert.match(text, /^multi-label linear SVMs on res4/);
    assert.match(text, /mAP \d+\.\d\d {3}\(multi-label: no top-1\)/);
    assert.match(text, /n\/a {2}d\n/);

    // The same images as single labels would be refused by the single-label protocols.
    assert.throws(() => singleLabel(f, 'umap'), /^Error: umap needs one class per image; --scenes gives multi-label data: use svm$/);
    assert.equal(singleLabel(blobs(), 'knn').numClasses, 3);
  });

  test('multi-label: rows of the wrong length or not 0/1 name the field; too few positives names the class and the way out', async () => {
    const options = SvmProtocolOptions.parse({ costs: [1] });
    const f = multiLabelSplits();
    await assert.rejects(
      svmProtocol.run({ kind: 'features', features: { ...f, test: { ...f.test, multiLabels: f.test.multiLabels!.subarray(4) } } }, options, () => {}),
      /test\.multiLabels has 68 values, not 18 images x 4 classes/,
    );
    const twos = Uint8Array.from(f.train.multiLabels!);
    twos[6] = 2;
    await assert.rejects(svmProtocol.run({ kind: 'features', features: { ...f, train: { ...f.train, multiLabels: twos } } }, options, () => {}), /train\.multiLabels\[6\] = 2; multi-hot rows hold 0 or 1/);
    const { multiLabels: _m, ...plain } = f.test;
    await assert.rejects(svmProtocol.run({ kind: 'features', features: { ...f, test: plain } }, options, () => {}), /test\.multiLabels is missing/);
    const rare = Uint8Array.from(f.train.multiLabels!);
    for (let i = 0; i < 36; i++) rare[i * 4 + 2] = i < 2 ? 1 : 0;
    await assert.rejects(
      svmProtocol.run({ kind: 'features', features: { ...f, train: { ...f.train, multiLabels: rare } } }, options, () => {}),
      /class 2 \(c\) has 2 of 36 training images; each side of one-vs-rest needs at least folds \(3\): use more scenes \(--limit\) or fewer --folds/,
    );
  });

  test('options: strict, costs from a flag string; bad inputs name the field', async () => {
    assert.deepEqual(SvmProtocolOptions.parse({ costs: '1, 0.5,100' }).costs, [1, 0.5, 100]);
    assert.equal(SvmProtocolOptions.safeParse({ costs: '1,x' }).success, false);
    assert.equal(SvmProtocolOptions.safeParse({ costs: [] }).success, false);
    assert.equal(SvmProtocolOptions.safeParse({ cost: 1 }).success, false);
    const options = SvmProtocolOptions.parse({ costs: [1] });
    const f = blobs();
    await assert.rejects(svmProtocol.run({ kind: 'features', features: { ...f, dim: 7 } }, options, () => {}), /train\.features has 1440 values, not 180 labels x dim 7/);
    const labels = Int32Array.from(f.test.labels);
    labels[5] = 3;
    await assert.rejects(svmProtocol.run({ kind: 'features', features: { ...f, test: { ...f.test, labels } } }, options, () => {}), /test\.labels\[5\] = 3 is outside 0\.\.2/);
    await assert.rejects(svmProtocol.run({ kind: 'features', features: { ...f, numClasses: 4 } }, options, () => {}), /class 3 has 0 of 180 training images/);
  });
});
