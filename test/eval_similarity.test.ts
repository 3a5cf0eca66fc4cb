// `eval similarity`: the statistics on hand-made embeddings (P, N, histogram
// counts and log(K) - L_NCE worked out by hand), the bound's ceiling and its
// rise as positives align, and the protocol end to end on tiny real
// checkpoints: MoCo v2 (global-global, its loss against infoNCE on the same
// batch), DetCo (both halves, per stage) and supervised (a clear error).
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { rmSync } from 'node:fs';
import * as tf from '../src/core/tf.js';
import type { Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { useBackend } from '../src/backend/select.js';
import { evaluate } from '../src/app/evaluate.js';
import { Loader, loadTrainingSet } from '../src/data/index.js';
import { registerProtocol } from '../src/eval/protocols/index.js';
import { similarityProtocol } from '../src/eval/protocols/similarity.js';
import { methodFromCheckpoint } from '../src/io/backbone.js';
import { histogramBin, histogramEdges, SimilarityAccumulator, similarityDeltas } from '../src/eval/similarity.js';
import type { Protocol } from '../src/eval/protocol.js';
import { LAST_CHECKPOINT, readCheckpoint } from '../src/io/checkpoint.js';
import { infoNCE } from '../src/losses/info_nce.js';
import { MoCo } from '../src/methods/moco.js';
import type { RunConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';
import { tinyConfig } from './method_runs.js';

await useBackend('native');
registerProtocol(similarityProtocol as unknown as Protocol);

const E = Math.E;
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Unit vectors at `degrees`, row-major [n, 2], each scaled by `scale`. */
function at(degrees: number[], scale = 1): Float32Array {
  return Float32Array.from(degrees.flatMap((d) => [scale * Math.cos((d * Math.PI) / 180), scale * Math.sin((d * Math.PI) / 180)]));
}

/** InfoNCE of one row of cosines by hand: -log(exp(s_ii/T) / sum_j exp(s_ij/T)). */
function rowLoss(cosines: number[], i: number, T: number): number {
  return -Math.log(Math.exp(cosines[i]! / T) / cosines.reduce((s, c) => s + Math.exp(c / T), 0));
}

test('hand-made 2-D embeddings: P, N, histogram counts and log(K) - L_NCE', () => {
  // Queries at 0, 90 and 180 degrees, keys the same: cosines [[1, 0, -1], [0, 1, 0], [-1, 0, 1]].
  const T = 0.5;
  const acc = new SimilarityAccumulator(T, 4);
  acc.add(at([0, 90, 180], 3), at([0, 90, 180], 0.5), 3, 2); // lengths do not matter: cosines
  const r = acc.result();
  assert.equal(r.queries, 3);
  assert.equal(r.negativePairs, 6);
  assert.equal(r.k, 3);
  assert.ok(Math.abs(r.positiveMean - E) < 1e-9, `P = e, got ${r.positiveMean}`);
  // Negatives exp(0) four times and exp(-1) twice.
  assert.ok(Math.abs(r.negativeMean - (4 + 2 / E) / 6) < 1e-9, `N, got ${r.negativeMean}`);
  // Bins of width (e - 1/e)/4 = 0.588 from 1/e: 1/e -> 0, 1 -> 1, e -> 3.
  assert.deepEqual(r.positiveHistogram, [0, 0, 0, 3]);
  assert.deepEqual(r.negativeHistogram, [2, 4, 0, 0]);
  const cos = [
    [1, 0, -1],
    [0, 1, 0],
    [-1, 0, 1],
  ];
  const loss = (rowLoss(cos[0]!, 0, T) + rowLoss(cos[1]!, 1, T) + rowLoss(cos[2]!, 2, T)) / 3;
  assert.ok(Math.abs(r.loss - loss) < 1e-9, `L_NCE ${r.loss} vs ${loss}`);
  assert.ok(Math.abs(r.bound - (Math.log(3) - loss)) < 1e-9);

  // Keys turned 60 degrees: positives exp(0.5); row 0 cosines [cos 60, cos 150, cos 240] (float32 inputs: 1e-6).
  const turned = new SimilarityAccumulator(T, 4);
  turned.add(at([0, 90, 180]), at([60, 150, 240]), 3, 2);
  const t = turned.result();
  assert.ok(Math.abs(t.positiveMean - Math.exp(0.5)) < 1e-6);
  const c = (a: number) => Math.cos((a * Math.PI) / 180);
  const rows = [
    [c(60), c(150), c(240)],
    [c(-30), c(60), c(150)],
    [c(-120), c(-30), c(60)],
  ];
  const negatives = rows.flatMap((row, i) => row.filter((_, j) => j !== i)).map(Math.exp);
  assert.ok(Math.abs(t.negativeMean - negatives.reduce((a, b) => a + b) / 6) < 1e-6);
  const expectLoss = rows.reduce((s, row, i) => s + rowLoss(row, i, T), 0) / 3;
  assert.ok(Math.abs(t.loss - expectLoss) < 1e-6, `turned L_NCE ${t.loss} vs ${expectLoss}`);
  assert.equal(histogramBin(Math.exp(0.5), 4), 2, 'exp(0.5) = 1.65 lies in the third bin');
  assert.deepEqual(t.positiveHistogram, [0, 0, 3, 0]);

  // ΔP and ΔN are global minus local.
  assert.deepEqual(similarityDeltas({ positiveMean: 2, negativeMean: 1 }, { positiveMean: 1.5, negativeMean: 1.25 }), { deltaPositive: 0.5, deltaNegative: -0.25 });
  const edges = histogramEdges(4);
  assert.equal(edges.length, 5);
  assert.ok(Math.abs(edges[0]! - 1 / E) < 1e-12 && edges[4] === E);
});

test('accumulating batches: sums add, K stays fixed, bad shapes are errors', () => {
  const one = new SimilarityAccumulator(0.2, 10);
  one.add(at([0, 90, 180]), at([10, 80, 200]), 3, 2);
  const two = new SimilarityAccumulator(0.2, 10);
  two.add(at([0, 90, 180]), at([10, 80, 200]), 3, 2);
  two.add(at([0, 90, 180]), at([10, 80, 200]), 3, 2);
  const [a, b] = [one.result(), two.result()];
  assert.equal(b.queries, 6);
  assert.ok(Math.abs(a.positiveMean - b.positiveMean) < 1e-12 && Math.abs(a.negativeMean - b.negativeMean) < 1e-12 && Math.abs(a.bound - b.bound) < 1e-12);
  assert.deepEqual(b.negativeHistogram, a.negativeHistogram.map((n) => 2 * n));
  assert.throws(() => two.add(at([0, 90]), at([0, 90]), 2, 2), /K must stay fixed/);
  assert.throws(() => new SimilarityAccumulator(0.2).add(at([0, 90]), at([0]), 2, 2), /\[2, 2\]/);
  assert.throws(() => new SimilarityAccumulator(0).result(), /temperature/);
  assert.throws(() => new SimilarityAccumulator(0.2).result(), /no pairs/);
});

test('the bound never exceeds log(K) and rises as the positives align', () => {
  const T = 0.5;
  const q = [0, 90, 180, 270];
  const bounds = [90, 60, 30, 0].map((turn) => {
    const acc = new SimilarityAccumulator(T);
    acc.add(at(q), at(q.map((d) => d + turn)), 4, 2);
    const r = acc.result();
    assert.ok(r.bound <= Math.log(4) + 1e-12, `bound ${r.bound} > log 4`);
    return r.bound;
  });
  for (let i = 1; i < bounds.length; i++) assert.ok(bounds[i]! > bounds[i - 1]!, `bounds should rise as keys turn onto queries: ${bounds.join(', ')}`);
  // Orthogonal, aligned pairs at a sharp temperature: the bound reaches log(K).
  const sharp = new SimilarityAccumulator(0.02);
  const eye = Float32Array.from([1, 0, 0, 0, 1, 0, 0, 0, 1]);
  sharp.add(eye, eye, 3, 3);
  assert.ok(Math.log(3) - sharp.result().bound < 1e-9);
  // Random embeddings: still below log(K).
  const rnd = new SimilarityAccumulator(0.1);
  const r = () => Float32Array.from({ length: 8 * 5 }, (_, i) => Math.sin(i * 12.9898 + 78.233) * 43758.5453 % 1);
  rnd.add(r(), r().reverse(), 8, 5);
  assert.ok(rnd.result().bound <= Math.log(8));
});

/** Trains `config` (no precise BN, no kNN) and returns its last checkpoint. */
async function tinyRun(method: string, over: Record<string, unknown>): Promise<string> {
  const config: RunConfig = tinyConfig(method, { epochs: 1, preciseBn: { images: 0 }, ...over });
  dirs.push(dirname(config.out));
  await train(config, { quiet: true, log: () => undefined });
  return join(config.out, LAST_CHECKPOINT);
}

async function similarity(checkpoint: string, options: Record<string, unknown>) {
  const lines: string[] = [];
  const { report } = await evaluate({ checkpoint, protocol: 'similarity', options, backend: 'native', save: false, log: (l) => lines.push(l) });
  return { report, lines };
}

test('a tiny MoCo v2 checkpoint: global-global end to end, its loss = infoNCE on the same views', async () => {
  // 128 images in batches of 64: 2 steps.
  const path = await tinyRun('mocov2', { batchSize: 64, methodOptions: { queueLength: 256 } });
  const { report, lines } = await similarity(path, { samples: 100, batchSize: 32, bins: 20 });
  const m = report.metrics;
  const d = report.details as Record<string, any>;
  assert.equal(d.samples, 96, 'three whole batches of 32 out of 100');
  assert.equal(d.k, 32);
  assert.equal(d.temperature, 0.1);
  assert.equal(report.data.trainImages, 96);
  for (const key of ['positiveLocal', 'negativeLocal', 'deltaPositive', 'boundLocal']) assert.ok(!(key in m), `no ${key} for MoCo`);
  for (const v of [m.positiveGlobal!, m.negativeGlobal!]) assert.ok(v >= 1 / Math.E && v <= Math.E, `${v} outside [1/e, e]`);
  assert.ok(m.positiveGlobal! > m.negativeGlobal!, `two views of one image should be closer than two images: P ${m.positiveGlobal}, N ${m.negativeGlobal}`);
  assert.ok(m.boundGlobal! <= Math.log(32) && Math.abs(m.boundGlobal! - (Math.log(32) - m.lossGlobal!)) < 1e-9);
  const gg = d.globalGlobal;
  assert.equal(gg.positiveHistogram.reduce((a: number, b: number) => a + b), 96);
  assert.equal(gg.negativeHistogram.reduce((a: number, b: number) => a + b), 96 * 31);
  assert.ok(lines.some((l) => /3\/3 batches/.test(l)), `progress lines: ${lines.join(' | ')}`);
  const table = similarityProtocol.format(report);
  assert.match(table, /global-global/);
  console.log(table.trimEnd());

  // The same loss from the method itself: one batch of 64, the loader's first batch with the protocol's seed.
  const one = await similarity(path, { samples: 64, batchSize: 64, seed: 3 });
  const checkpoint = readCheckpoint(path);
  const method = methodFromCheckpoint(checkpoint) as MoCo;
  const set = await loadTrainingSet(checkpoint.state.config.dataset);
  const loader = new Loader(set, method.pipeline(), { batchSize: 64, seed: 3, shuffle: true, dropLast: true });
  const first = (await loader.epoch(0).next()).value!;
  await loader.close();
  const expected = tf.tidy(() => {
    const v = (name: string) => tf.tensor4d(first.tensors[name]!.data, first.tensors[name]!.shape) as Tensor4D;
    return infoNCE(method.query(v('view1')), method.key(v('view2'), 0) as Tensor2D, null, method.temperature).dataSync()[0]!;
  });
  method.dispose();
  assert.ok(Math.abs(one.report.metrics.lossGlobal! - expected) < 1e-4, `protocol L_NCE ${one.report.metrics.lossGlobal} vs infoNCE ${expected}`);
  // Reproducible: the same options give the same numbers.
  const again = await similarity(path, { samples: 64, batchSize: 64, seed: 3 });
  assert.deepEqual(again.report.metrics, one.report.metrics);

  await assert.rejects(similarity(path, { pairs: 'local-global' }), /local-global statistics need a DetCo checkpoint.*mocov2/);
  await assert.rejects(similarity(path, { stage: 'res3' }), /mocov2 has heads on res5 only/);
});

test('a tiny DetCo checkpoint: both halves, ΔP and ΔN, per stage', async () => {
  const path = await tinyRun('detco', { batchSize: 64, methodOptions: { queueLength: 256 } });
  const { report } = await similarity(path, { samples: 64, batchSize: 32 });
  const m = report.metrics;
  for (const key of ['positiveGlobal', 'negativeGlobal', 'positiveLocal', 'negativeLocal', 'boundGlobal', 'boundLocal', 'deltaPositive', 'deltaNegative']) {
    assert.ok(Number.isFinite(m[key]), `${key}: ${m[key]}`);
  }
  assert.ok(Math.abs(m.deltaPositive! - (m.positiveGlobal! - m.positiveLocal!)) < 1e-12);
  assert.ok(Math.abs(m.deltaNegative! - (m.negativeGlobal! - m.negativeLocal!)) < 1e-12);
  assert.ok(m.boundLocal! <= Math.log(32) && m.boundGlobal! <= Math.log(32));
  assert.notEqual(m.positiveLocal, m.positiveGlobal, 'the local head on the jigsaw set is another embedding');
  console.log(similarityProtocol.format(report).trimEnd());
  const d = report.details as Record<string, any>;
  assert.equal(d.localGlobal.positiveHistogram.reduce((a: number, b: number) => a + b), 64);
  assert.equal(d.stage, 'res5');

  const res3 = await similarity(path, { samples: 64, batchSize: 32, stage: 'res3', pairs: 'global-global' });
  assert.equal((res3.report.details as Record<string, any>).stage, 'res3');
  assert.ok(!('positiveLocal' in res3.report.metrics));
  assert.notEqual(res3.report.metrics.positiveGlobal, m.positiveGlobal);
});

test('a supervised checkpoint is refused, naming the method', async () => {
  const path = await tinyRun('supervised', { batchSize: 128 });
  await assert.rejects(similarity(path, {}), /the supervised method has no contrastive global head; similarity statistics support mocov1, mocov2, detco/);
});
