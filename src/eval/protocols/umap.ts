// UMAP of test-set features (McInnes et al. 2018; umap-js): the first N test
// images' pooled features, L2-normalised (as the kNN protocol reads them, so
// Euclidean neighbours rank as cosine ones), embedded in 2-D with a seeded
// stream, drawn as an SVG (and a PNG) coloured by class, with two numbers
// (definitions in ../umap.ts):
//   knnAccuracy       leave-one-out k=20 majority vote among the embedded
//                     test points (percent); featureKnnAccuracy is the same
//                     vote in the feature space, what the embedding keeps of it
//   trustworthiness   T(5) of the embedding against the normalised features
//
// The protocol's input is the backbone, not the features: a feature protocol
// gets no folder to write its plot into (only backbone protocols get a work
// folder, app/evaluate.ts), so, like attention, it takes the backbone and its
// work folder and gets the features itself through prepareFeatures: the same
// test split, preprocessing and feature cache as the feature protocols. That
// call also extracts the training split, limited to 1 image, which is unused.
import { dirname, join, relative } from 'node:path';
import { z } from 'zod';
import { FASHION_MNIST_CLASSES } from '../../data/fashion_mnist.js';
import { prepareFeatures, singleLabel } from '../feature_input.js';
import { FEATURE_STAGES } from '../features.js';
import { l2NormalizeRows } from '../knn.js';
import { defineProtocol, type EvalReport } from '../protocol.js';
import { knnAccuracy, trustworthiness, umapEmbed, umapSvg, writeSvg, writeSvgPng } from '../umap.js';

/** The majority vote's neighbours (the kNN protocol's majorityK) and trustworthiness's k (sklearn's default). */
export const UMAP_KNN_K = 20;
export const TRUSTWORTHINESS_K = 5;

export const UmapOptions = z
  .object({
    points: z.number().int().positive().default(2000).describe('test images embedded: the first N of the test split (capped by it)'),
    neighbors: z.number().int().min(2).default(15).describe('UMAP nNeighbors: the local neighbourhood, the point itself included'),
    minDist: z.number().min(0).max(1).default(0.1).describe('UMAP minDist: how tightly points may pack (0..1, the spread)'),
    seed: z.number().int().min(0).default(0).describe('seed of the initial layout and the negative samples'),
    epochs: z.number().int().positive().optional().describe("UMAP nEpochs (default umap-js's own: 500 up to 2500 points, fewer beyond)"),
    stage: z.enum(FEATURE_STAGES).default('res5').describe('backbone stage whose pooled output is the feature'),
    batchSize: z.number().int().positive().default(256).describe('images per forward pass when extracting features'),
    png: z.boolean().default(true).describe('also render the SVG to a PNG (sharp)'),
  })
  .strict();
export type UmapOptions = z.infer<typeof UmapOptions>;

export const umapProtocol = defineProtocol({
  name: 'umap',
  description: 'UMAP of test-set features coloured by class (SVG, PNG), with kNN accuracy (k=20, leave-one-out) in the 2-D embedding and its trustworthiness T(5)',
  options: UmapOptions,
  input: 'backbone',
  async run(input, o, log) {
    if (input.kind !== 'backbone') throw new Error('umap: needs a backbone');
    const { loaded } = input;
    const splits = singleLabel(
      await prepareFeatures(loaded, { stage: o.stage, limit: 1, testLimit: o.points, testFraction: 0.2, batchSize: o.batchSize, cache: true }, log),
      'umap',
    );
    const { test, dim } = splits;
    const n = test.labels.length;
    if (n <= Math.max(o.neighbors, 2 * TRUSTWORTHINESS_K, UMAP_KNN_K)) {
      throw new Error(`umap: ${n} test images are too few (neighbors ${o.neighbors}, kNN k=${UMAP_KNN_K}, trustworthiness needs more than ${2 * TRUSTWORTHINESS_K})`);
    }
    const features = l2NormalizeRows(test.features, dim);
    log(`umap: embedding ${n} ${o.stage} features (${dim}-d), ${o.neighbors} neighbours, minDist ${o.minDist}, seed ${o.seed}`);
    let reported = 0;
    const e = await umapEmbed(features, dim, {
      nNeighbors: o.neighbors,
      minDist: o.minDist,
      seed: o.seed,
      nEpochs: o.epochs,
      onEpoch: (epoch, total) => {
        if (epoch === total || epoch >= reported + total / 10) {
          reported = epoch;
          log(`umap: epoch ${epoch}/${total}`);
        }
      },
    });
    log(`umap: neighbours ${e.seconds.neighbours.toFixed(1)} s, graph ${e.seconds.graph.toFixed(1)} s, layout ${e.seconds.layout.toFixed(1)} s`);
    const t0 = performance.now();
    const inEmbedding = knnAccuracy(e.embedding, 2, test.labels, UMAP_KNN_K);
    const inFeatures = knnAccuracy(features, dim, test.labels, UMAP_KNN_K);
    const trust = trustworthiness(features, dim, e.embedding, 2, TRUSTWORTHINESS_K);
    const metricSeconds = (performance.now() - t0) / 1000;

    const artifacts: Record<string, string> = {};
    if (input.workDir) {
      const classNames = splits.dataset === 'fashion-mnist' ? FASHION_MNIST_CLASSES : undefined;
      const title =
        `UMAP of ${n} ${splits.dataset} test images, ${o.stage} features (${loaded.checkpoint.method}${loaded.checkpoint.randomInit ? ', random init' : ''}); ` +
        `kNN@${UMAP_KNN_K} ${inEmbedding.accuracy.toFixed(1)}%, T(${TRUSTWORTHINESS_K}) ${trust.toFixed(3)}`;
      const svg = umapSvg(e.embedding, test.labels, { classNames, title });
      const svgFile = join(input.workDir, 'umap.svg');
      writeSvg(svgFile, svg);
      // The report is <workDir>.json, so paths relative to it start from the work folder's parent.
      artifacts.svg = relative(dirname(input.workDir), svgFile);
      if (o.png) {
        const pngFile = join(input.workDir, 'umap.png');
        await writeSvgPng(pngFile, svg);
        artifacts.png = relative(dirname(input.workDir), pngFile);
      }
      log(`umap: plot ${svgFile}`);
    } else log('umap: no report folder (not saving), so the plot is not written');

    return {
      metrics: { points: n, knnAccuracy: inEmbedding.accuracy, featureKnnAccuracy: inFeatures.accuracy, trustworthiness: trust },
      details: {
        stage: o.stage,
        features: 'globally average-pooled, L2-normalised; Euclidean distances',
        neighbours: 'exact (blocked GEMM), given to umap-js with the point itself first; not NN-descent',
        epochs: e.epochs,
        knn: `leave-one-out among the ${n} embedded test points, the ${UMAP_KNN_K} nearest vote one each (ties: nearer voters in total, then the lower class)`,
        trustworthiness: `Venna & Kaski T(k), k = ${TRUSTWORTHINESS_K}, as sklearn.manifold.trustworthiness (Euclidean in both spaces)`,
        seconds: { ...e.seconds, metrics: metricSeconds },
      },
      artifacts,
      data: { name: splits.dataset, testImages: n, stage: o.stage, dim },
    };
  },
  format(report: EvalReport) {
    const { metrics: m, data } = report;
    const plot = report.artifacts.svg ? `plot: ${report.artifacts.svg}${report.artifacts.png ? `, ${report.artifacts.png}` : ''}` : 'plot not written';
    const rows: Array<[string, string]> = [
      [`kNN k=${UMAP_KNN_K} leave-one-out, 2-D embedding`, `${m.knnAccuracy!.toFixed(2)} %`],
      [`kNN k=${UMAP_KNN_K} leave-one-out, features`, `${m.featureKnnAccuracy!.toFixed(2)} %`],
      [`trustworthiness T(${TRUSTWORTHINESS_K})`, m.trustworthiness!.toFixed(4)],
    ];
    const width = Math.max(...rows.map(([name]) => name.length));
    const table = rows.map(([name, value]) => `${name.padEnd(width)}  ${value.padStart(8)}\n`).join('');
    return `UMAP of ${m.points} ${data.name} test images, ${data.stage} features (${data.dim}-d); ${plot}\n${table}`;
  },
});
