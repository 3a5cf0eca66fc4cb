// Linear SVMs on frozen features, the VOC07 protocol of FAIR's svm_tools as
// OpenSelfSup and DetCo run it (benchmarks/svm_tools: train_svm_kfold.py,
// test_svm.py, svm_helper.py): rows L2-normalised, one-vs-rest per class an
// L2-loss linear SVM (liblinear's dual coordinate descent, Hsieh et al. 2008;
// eval/svm.ts) with class weights {+1: 2, -1: 1}, the cost chosen per class by
// 3-fold cross-validated AP over svm_tools' costs, refit on the whole training
// split, and scored on the test split by AP. The labels here are single-label
// (FeatureSplits holds one class per image), so top-1 accuracy, the argmax of
// the per-class decision values, is reported too. Multi-label data (VOC's
// several objects per image) cannot be expressed by FeatureSplits and is not
// supported; the solver and the AP code are per class and would serve it.
//
// DetCo's "every stage" table (an SVM on res2..res5) is this protocol run once
// per `--stage`: each stage is its own feature extraction (cached per stage)
// and its own report.
import { z } from 'zod';
import { Rng } from '../../core/random.js';
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

function formatCost(c: number): string {
  const k = Math.log2(c);
  return Number.isInteger(k) && k < -3 ? `2^${k}` : String(c);
}

export const svmProtocol = defineProtocol({
  name: 'svm',
  description: "one-vs-rest linear SVMs on L2-normalised features, cost per class by 3-fold CV AP (svm_tools' VOC07 protocol); mAP and top-1",
  options: SvmProtocolOptions,
  input: 'features',
  async run(input, o, log) {
    if (input.kind !== 'features') throw new Error('svm: needs features');
    const { train, test, dim, numClasses } = input.features;
    for (const [name, set] of [['train', train], ['test', test]] as const) {
      const n = set.labels.length;
      if (set.features.length !== n * dim) throw new Error(`svm: ${name}.features has ${set.features.length} values, not ${n} labels x dim ${dim}`);
      const bad = set.labels.findIndex((l) => !(l >= 0 && l < numClasses));
      if (bad >= 0) throw new Error(`svm: ${name}.labels[${bad}] = ${set.labels[bad]} is outside 0..${numClasses - 1}`);
    }
    const xTrain = l2NormalizeRows(train.features, dim);
    const xTest = l2NormalizeRows(test.features, dim);
    const nTest = test.labels.length;
    const scores = new Float64Array(nTest * numClasses);
    const svm = { positiveWeight: o.positiveWeight, tolerance: o.tolerance, maxIterations: o.maxIterations };
    const perClass: Array<{ class: number; cost: number; cvAP: number; testAP: number; positives: number; testPositives: number }> = [];
    const cvMatrix: number[][] = [];
    let unconverged = 0;
    const root = Rng.seeded(o.seed);
    for (let k = 0; k < numClasses; k++) {
      const t0 = performance.now();
      const labels = Int8Array.from(train.labels, (l) => (l === k ? 1 : -1));
      const positives = labels.reduce((s, v) => s + (v === 1 ? 1 : 0), 0);
      if (positives < o.folds || train.labels.length - positives < o.folds) {
        throw new Error(`svm: class ${k} has ${positives} of ${train.labels.length} training images; each side of one-vs-rest needs at least folds (${o.folds})`);
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
      const isK = Array.from(test.labels, (l) => l === k);
      const testPositives = isK.filter(Boolean).length;
      const testAP = interpolatedAveragePrecision(s, isK);
      cvMatrix.push(search.cvAP.map((v) => 100 * v));
      perClass.push({ class: k, cost, cvAP: 100 * search.cvAP[search.best]!, testAP: 100 * testAP, positives, testPositives });
      const secs = ((performance.now() - t0) / 1000).toFixed(1);
      log(`svm class ${k + 1}/${numClasses}: chose cost ${formatCost(cost)}, CV AP ${(100 * search.cvAP[search.best]!).toFixed(2)}, test AP ${testPositives ? (100 * testAP).toFixed(2) : 'n/a (no positives)'} (${secs} s)`);
    }
    if (unconverged) log(`svm: ${unconverged} solves stopped at maxIterations ${o.maxIterations} before the tolerance held`);
    let correct = 0;
    for (let i = 0; i < nTest; i++) {
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
        top1: nTest ? (100 * correct) / nTest : Number.NaN,
        cvMAP: mean(perClass.map((c) => c.cvAP)),
      },
      details: {
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
    const rows = (details?.perClass ?? []) as Array<{ class: number; cost: number; cvAP: number; testAP: number | null }>;
    const lines = rows.map((c) => `${String(c.class).padStart(5)}  ${formatCost(c.cost).padStart(8)}  ${c.cvAP.toFixed(2).padStart(6)}  ${c.testAP === null ? '    n/a' : c.testAP.toFixed(2).padStart(7)}`);
    return [
      `linear SVMs on ${data.stage} (${data.dim}-d), ${data.trainImages} train -> ${data.testImages} test images`,
      'class      cost   CV AP  test AP',
      ...lines,
      `mAP ${m.mAP!.toFixed(2)}   top-1 ${m.top1!.toFixed(2)}`,
      '',
    ].join('\n');
  },
});
