// Linear SVMs on frozen features, the VOC07 protocol of FAIR's svm_tools as
// OpenSelfSup and DetCo run it (benchmarks/svm_tools: train_svm_kfold.py,
// test_svm.py, svm_helper.py): rows L2-normalised, one-vs-rest per class an
// L2-loss linear SVM (liblinear's dual coordinate descent, Hsieh et al. 2008;
// eval/svm.ts) with class weights {+1: 2, -1: 1}, the cost chosen per class by
// 3-fold cross-validated AP over svm_tools' costs, refit on the whole training
// split, and scored on the test split by AP; mAP is the mean test AP over the
// classes with a test positive.
//
// Labels come two ways. Single-label (a data set with one class per image):
// class k's positives are the images labelled k, and top-1 accuracy, the
// argmax of the per-class decision values, is reported too. Multi-label
// (`--scenes DIR`: FeatureSplits' multi-hot rows, the COCO categories present
// in each scene), VOC07 as svm_tools runs it: class k's positives are the
// images containing k, every other image a negative; svm_tools ignores VOC's
// 'difficult' images (label 0) in training and test, and scenes have none, so
// nothing is ignored here. There is no top-1 then (an image has several
// classes); the metrics are mAP and cvMAP either way.
//
// DetCo's "every stage" table (an SVM on res2..res5) is this protocol run once
// per `--stage`: each stage is its own feature extraction (cached per stage)
// and its own report.
import { z } from 'zod';
import { Rng } from '../../core/random.js';
import { isMultiLabel, type FeatureSplits, type SplitFeatures } from '../feature_input.js';
import { defineProtocol } from '../protocol.js';
import { decisionValues, interpolatedAveragePrecision, l2NormalizeRows, searchCost, SVM_DEFAULTS, SVM_TOOLS_COSTS, trainBinarySvm } from '../svm.js';

/** Costs from a flag's "1,10,0.5" or from a config's list. */
const costList = z.preprocess(
  (v) => (typeof v === 'string' ? v.split(',').map((c) => (c.trim() === '' ? Number.NaN : Number(c))) : v),
  z.array(z.number().positive().finite()).min(1),
);

export const SvmProtocolOptions = z
  .object({
    costs: costList.default([...SVM_TOOLS_COSTS]).describe("comma-separated SVM costs C searched per class (svm_tools': 1,10,100 and 0.5^4..0.5^19)"),
    folds: z.number().int().min(2).default(3).describe('cross-validation folds (stratified, unshuffled) that choose each class\'s cost'),
    positiveWeight: z.number().positive().default(SVM_DEFAULTS.positiveWeight).describe("class weight of the positives, multiplying C (the negatives' is 1)"),
    tolerance: z.number().positive().default(SVM_DEFAULTS.tolerance).describe("stopping tolerance on the dual's projected-gradient spread (liblinear's eps)"),
    maxIterations: z.number().int().positive().default(SVM_DEFAULTS.maxIterations).describe('most dual coordinate-descent epochs per SVM'),
    seed: z.number().int().min(0).default(0).describe('seed of the coordinate order'),
  })
  .strict();

/** Each side's features against its rows, and its labels: classes in range, or multi-hot 0/1 rows of numClasses. */
function checkLabels(f: FeatureSplits, multi: boolean): void {
  const { dim, numClasses } = f;
  for (const [name, set] of [['train', f.train], ['test', f.test]] as const) {
    const n = set.labels.length;
    if (set.features.length !== n * dim) throw new Error(`svm: ${name}.features has ${set.features.length} values, not ${n} labels x dim ${dim}`);
    if (multi) {
      const m = set.multiLabels;
      if (!m) throw new Error(`svm: ${name}.multiLabels is missing; multi-label splits need it on both sides`);
      if (m.length !== n * numClasses) throw new Error(`svm: ${name}.multiLabels has ${m.length} values, not ${n} images x ${numClasses} classes`);
      const bad = m.findIndex((v) => v > 1);
      if (bad >= 0) throw new Error(`svm: ${name}.multiLabels[${bad}] = ${m[bad]}; multi-hot rows hold 0 or 1`);
      continue;
    }
    const bad = set.labels.findIndex((l) => !(l >= 0 && l < numClasses));
    if (bad >= 0) throw new Error(`svm: ${name}.labels[${bad}] = ${set.labels[bad]} is outside 0..${numClasses - 1}`);
  }
}

function formatCost(c: number): string {
  const k = Math.log2(c);
  return Number.isInteger(k) && k < -3 ? `2^${k}` : String(c);
}

export const svmProtocol = defineProtocol({
  name: 'svm',
  description: "one-vs-rest linear SVMs on L2-normalised features, cost per class by 3-fold CV AP (svm_tools' VOC07 protocol); mAP, and top-1 unless multi-label (--scenes)",
  options: SvmProtocolOptions,
  input: 'features',
  async run(input, o, log) {
    if (input.kind !== 'features') throw new Error('svm: needs features');
    const f = input.features;
    const { train, test, dim, numClasses } = f;
    const multi = isMultiLabel(f);
    checkLabels(f, multi);
    const xTrain = l2NormalizeRows(train.features, dim);
    const xTest = l2NormalizeRows(test.features, dim);
    const nTest = test.labels.length;
    const scores = new Float64Array(nTest * numClasses);
    const svm = { positiveWeight: o.positiveWeight, tolerance: o.tolerance, maxIterations: o.maxIterations };
    const perClass: Array<{ class: number; name?: string; cost: number; cvAP: number; testAP: number; positives: number; testPositives: number }> = [];
    const has = (side: SplitFeatures, k: number): ((i: number) => boolean) =>
      multi ? (i) => side.multiLabels![i * numClasses + k] === 1 : (i) => side.labels[i] === k;
    const className = (k: number) => (f.classNames?.[k] !== undefined ? `${k} (${f.classNames[k]})` : String(k));
    const cvMatrix: number[][] = [];
    let unconverged = 0;
    const root = Rng.seeded(o.seed);
    for (let k = 0; k < numClasses; k++) {
      const t0 = performance.now();
      const trainHas = has(train, k);
      const labels = Int8Array.from({ length: train.labels.length }, (_, i) => (trainHas(i) ? 1 : -1));
      const positives = labels.reduce((s, v) => s + (v === 1 ? 1 : 0), 0);
      if (positives < o.folds || train.labels.length - positives < o.folds) {
        throw new Error(
          `svm: class ${className(k)} has ${positives} of ${train.labels.length} training images; each side of one-vs-rest needs at least folds (${o.folds})` +
            (multi ? ': use more scenes (--limit) or fewer --folds' : ''),
        );
      }
      const problem = { features: xTrain, dim, labels };
      const classRng = root.split(k);
      const search = searchCost(problem, {
        ...svm,
        costs: o.costs,
        folds: o.folds,
        rng: classRng,
        onCost: (c, cost, ap) => log(`svm class ${k + 1}/${numClasses}: cost ${formatCost(cost)} (${c + 1}/${o.costs.length}), CV AP ${(100 * ap).toFixed(2)}`),
      });
      const cost = o.costs[search.best]!;
      const model = trainBinarySvm(problem, { ...svm, cost, rng: classRng.split(o.folds) });
      unconverged += search.unconverged + (model.converged ? 0 : 1);
      const s = decisionValues(model, xTest);
      for (let i = 0; i < nTest; i++) scores[i * numClasses + k] = s[i]!;
      const isK = Array.from({ length: nTest }, (_, i) => has(test, k)(i));
      const testPositives = isK.filter(Boolean).length;
      const testAP = interpolatedAveragePrecision(s, isK);
      cvMatrix.push(search.cvAP.map((v) => 100 * v));
      perClass.push({ class: k, ...(f.classNames?.[k] !== undefined ? { name: f.classNames[k] } : {}), cost, cvAP: 100 * search.cvAP[search.best]!, testAP: 100 * testAP, positives, testPositives });
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      log(`svm class ${k + 1}/${numClasses}: chose cost ${formatCost(cost)}, CV AP ${(100 * search.cvAP[search.best]!).toFixed(2)}, test AP ${testPositives ? (100 * testAP).toFixed(2) : 'n/a (no positives)'} (${secs} s)`);
    }
    if (unconverged) log(`svm: ${unconverged} solves stopped at maxIterations ${o.maxIterations} before the tolerance held`);
    let correct = 0;
    for (let i = 0; i < nTest && !multi; i++) {
      let best = 0;
      for (let k = 1; k < numClasses; k++) if (scores[i * numClasses + k]! > scores[i * numClasses + best]!) best = k;
      if (best === test.labels[i]) correct++;
    }
    // A class with no test image has no AP; mAP averages the classes that have one.
    const scored = perClass.filter((c) => c.testPositives > 0);
    const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
    return {
      metrics: {
        mAP: scored.length ? mean(scored.map((c) => c.testAP)) : Number.NaN,
        ...(multi ? {} : { top1: nTest ? (100 * correct) / nTest : Number.NaN }),
        cvMAP: mean(perClass.map((c) => c.cvAP)),
      },
      details: {
        labels: multi
          ? "multi-label: a class's positives are the images containing it, every other image a negative (none ignored); no top-1"
          : "single-label: a class's positives are the images labelled with it; top-1 is the argmax of the decision values",
        perClass: perClass.map((c) => (c.testPositives ? c : { ...c, testAP: null })),
        costs: o.costs,
        cvAP: cvMatrix,
        unconverged,
        ap: 'test: all-point interpolated AP (svm_tools calculate_ap); CV: sklearn average_precision; tied scores are one threshold',
      },
    };
  },
  format(report) {
    const { metrics: m, data, details } = report;
    const rows = (details?.perClass ?? []) as Array<{ class: number; name?: string; cost: number; cvAP: number; testAP: number | null }>;
    const multi = typeof details?.labels === 'string' && details.labels.startsWith('multi-label');
    const names = rows.map((c) => (c.name === undefined ? '' : `  ${c.name}`));
    const lines = rows.map(
      (c, i) => `${String(c.class).padStart(5)}  ${formatCost(c.cost).padStart(8)}  ${c.cvAP.toFixed(2).padStart(6)}  ${c.testAP === null ? '    n/a' : c.testAP.toFixed(2).padStart(7)}${names[i]}`,
    );
    return [
      `${multi ? 'multi-label ' : ''}linear SVMs on ${data.stage} (${data.dim}-d), ${data.trainImages} train -> ${data.testImages} test images${multi ? ` (${data.name})` : ''}`,
      `class      cost   CV AP  test AP${names.some(Boolean) ? '  name' : ''}`,
      ...lines,
      multi ? `mAP ${m.mAP!.toFixed(2)}   (multi-label: no top-1)` : `mAP ${m.mAP!.toFixed(2)}   top-1 ${m.top1!.toFixed(2)}`,
      '',
    ].join('\n');
  },
});
