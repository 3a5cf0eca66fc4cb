// Similarity statistics of a contrastive method's own pairs (DetCo, Xie et
// al. 2021, appendix Fig. IV): on M images of the run's training data, the
// mean exp(cos) of positive and negative pairs, their histograms over
// [1/e, e], and the InfoNCE bound log(K) - L_NCE on the mutual information,
// for two pairings:
//
//   global-global  query encoder + global head on view1  vs  key (momentum)
//                  encoder + global head on view2: P^g, N^g (MoCo's and
//                  DetCo's gg term)
//   local-global   query encoder + local head on the jigsaw set jigsaw1  vs
//                  key encoder + global head on view2: P^l, N^l (DetCo's lg
//                  term; DetCo checkpoints trained with CGLC only)
//
// ΔP = P^g - P^l and ΔN = N^g - N^l. Negatives are the other images of the
// batch (batchSize - 1 per query, so K = batchSize); the method's key queue is
// not used, so both pairings see the same negatives' images. L_NCE uses the
// method's temperature. The definitions are in ../similarity.ts.
//
// The protocol's input is a backbone, but the statistics need the method's
// heads and momentum encoder: the checkpoint the backbone came from is read
// again and the whole method rebuilt from the registry (createMethod and
// methodContext, from the checkpoint's config and data facts) and restored (restoreMethod). Views come from the method's own
// pipeline through the loader, with a fixed seed, so a report reproduces.
import type { Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { z } from 'zod';
import * as tf from '../../core/tf.js';
import { Loader, loadTrainingSet, type Batch } from '../../data/index.js';
import { methodFromCheckpoint } from '../../io/backbone.js';
import { readCheckpoint } from '../../io/checkpoint.js';
import { DetCo, STAGES, type Stage } from '../../methods/detco.js';
import type { Method } from '../../methods/index.js';
import { MOCO_V2_TEMPERATURE, MoCo } from '../../methods/moco.js';
import { defineProtocol, type EvalReport } from '../protocol.js';
import { histogramEdges, SimilarityAccumulator, similarityDeltas, SIMILARITY_RANGE, type SimilarityStats } from '../similarity.js';

export const SUPPORTED_METHODS = ['mocov1', 'mocov2', 'detco'] as const;
/** Methods whose loss has no contrastive global embedding at all. */
const NO_CONTRASTIVE_HEAD = new Set(['supervised', 'rotation', 'jigsaw', 'relloc', 'deepcluster']);

export const SimilarityOptions = z
  .object({
    samples: z.number().int().positive().default(32_000).describe('training images M (capped by the set; a whole number of batches is used)'),
    batchSize: z.number().int().min(2).default(256).describe('images per batch; the other images of a batch are the negatives (K = batch size)'),
    bins: z.number().int().positive().default(50).describe('histogram bins over exp(cos) in [1/e, e]'),
    stage: z.enum(STAGES).default('res5').describe('DetCo: the stage whose heads embed (other methods: res5 only)'),
    pairs: z
      .enum(['auto', 'global-global', 'local-global', 'both'])
      .default('auto')
      .describe('pairings: auto = both for DetCo with CGLC, else global-global'),
    seed: z.number().int().min(0).default(0).describe('seed of the sample choice and the views'),
  })
  .strict();
export type SimilarityOptions = z.infer<typeof SimilarityOptions>;

type Pairing = 'globalGlobal' | 'localGlobal';

/** What the protocol embeds with: one method's query/key embeddings of a batch. */
interface Embedder {
  method: Method;
  temperature: number;
  /** Pipeline outputs the pairings read. */
  outputs: string[];
  /** [n, dim] query and key embeddings of a batch for a pairing, L2-normalised. */
  embed(views: Record<string, Tensor4D>, pairing: Pairing): { q: Tensor2D; k: Tensor2D };
}

/** Errors unless `method` (a checkpoint's method name) has what these statistics read. */
export function checkSupported(method: string): void {
  if (NO_CONTRASTIVE_HEAD.has(method)) {
    throw new Error(`similarity: the ${method} method has no contrastive global head; similarity statistics support ${SUPPORTED_METHODS.join(', ')}`);
  }
  if (!(SUPPORTED_METHODS as readonly string[]).includes(method)) {
    throw new Error(`similarity: similarity statistics support ${SUPPORTED_METHODS.join(', ')}; this checkpoint's method is ${method}`);
  }
}

/** The pairings `o.pairs` asks of `method`, and the embedder; errors name what the checkpoint lacks. */
function embedderFor(method: Method, o: SimilarityOptions, path: string): { embedder: Embedder; pairings: Pairing[] } {
  if (method instanceof DetCo) {
    const stage: Stage = o.stage;
    if (!method.stages.includes(stage)) {
      throw new Error(`similarity: the DetCo checkpoint ${path} was trained without HIC and has trained heads on ${method.stages.join(', ')} only; --stage ${stage} is not one`);
    }
    const local = method.o.cglc;
    if (!local && (o.pairs === 'local-global' || o.pairs === 'both')) {
      throw new Error(`similarity: local-global statistics need a DetCo checkpoint trained with CGLC (cross global/local contrast); ${path} was trained with cglc: false`);
    }
    const pairings: Pairing[] =
      o.pairs === 'global-global' ? ['globalGlobal'] : o.pairs === 'local-global' ? ['localGlobal'] : local ? ['globalGlobal', 'localGlobal'] : ['globalGlobal'];
    const outputs = ['view1', 'view2', ...(pairings.includes('localGlobal') ? ['jigsaw1'] : [])];
    return {
      pairings,
      embedder: {
        method,
        temperature: method.o.temperature ?? MOCO_V2_TEMPERATURE,
        outputs,
        embed(views, pairing) {
          // DetCo's gg and lg terms: query = heads of the query encoder, key = global head of the momentum encoder on view2.
          const qs = pairing === 'globalGlobal' ? method.queries(views.view1!, 'global') : method.queries(views.jigsaw1!, 'local');
          const ks = method.keys(views.view2!, 'global', 0);
          return { q: qs[stage], k: ks[stage] };
        },
      },
    };
  }
  if (method instanceof MoCo) {
    if (o.stage !== 'res5') throw new Error(`similarity: ${method.name} has heads on res5 only; --stage ${o.stage} applies to DetCo checkpoints`);
    if (o.pairs === 'local-global' || o.pairs === 'both') {
      throw new Error(`similarity: local-global statistics need a DetCo checkpoint (a local head); ${path} is ${method.name}`);
    }
    return {
      pairings: ['globalGlobal'],
      embedder: {
        method,
        temperature: method.temperature,
        outputs: ['view1', 'view2'],
        // Algorithm 1 of MoCo: q from the query encoder on x1, k from the momentum encoder on x2 (eval mode: shuffle-BN changes nothing).
        embed: (views) => ({ q: method.query(views.view1!), k: method.key(views.view2!, 0) }),
      },
    };
  }
  throw new Error(`similarity: similarity statistics support ${SUPPORTED_METHODS.join(', ')}; got ${method.name}`);
}

const PAIRING_NAMES: Record<Pairing, string> = { globalGlobal: 'global-global', localGlobal: 'local-global' };

function statsDetails(s: SimilarityStats): Record<string, unknown> {
  return {
    positiveMean: s.positiveMean,
    negativeMean: s.negativeMean,
    loss: s.loss,
    bound: s.bound,
    k: s.k,
    queries: s.queries,
    negativePairs: s.negativePairs,
    positiveHistogram: s.positiveHistogram,
    negativeHistogram: s.negativeHistogram,
  };
}

export const similarityProtocol = defineProtocol({
  name: 'similarity',
  description:
    "similarity statistics of a MoCo/DetCo checkpoint's own pairs: mean exp(cos) of positives and negatives (global-global, DetCo's local-global), histograms, and log(K) - L_NCE",
  options: SimilarityOptions,
  input: 'backbone',
  async run(input, o, log) {
    if (input.kind !== 'backbone') throw new Error('similarity: needs a backbone input (a checkpoint)');
    const { path, randomInit } = input.loaded.checkpoint;
    const checkpoint = readCheckpoint(path);
    checkSupported(checkpoint.method);
    const method = methodFromCheckpoint(checkpoint, randomInit);
    try {
      const { embedder, pairings } = embedderFor(method, o, path);
      const { config } = checkpoint.state;
      const set = await loadTrainingSet(config.dataset);
      const m = Math.min(o.samples, set.count);
      const batchSize = Math.min(o.batchSize, m);
      if (batchSize < 2) throw new Error(`similarity: needs at least 2 images, the training set has ${set.count}`);
      const batches = Math.floor(m / batchSize);
      const used = batches * batchSize;
      // The method's own pipeline, whole, so a view is the one training would draw for (seed, image).
      const loader = new Loader(set, method.pipeline(), { batchSize, seed: o.seed, shuffle: true, dropLast: true, workers: 0 });
      const acc = Object.fromEntries(pairings.map((p) => [p, new SimilarityAccumulator(embedder.temperature, o.bins)])) as Partial<Record<Pairing, SimilarityAccumulator>>;
      log(`similarity: ${checkpoint.method} ${pairings.map((p) => PAIRING_NAMES[p]).join(' and ')} on ${used} of ${set.count} training images, ${batches} batches of ${batchSize} (K = ${batchSize}), T = ${embedder.temperature}`);
      const every = Math.max(1, Math.round(batches / 10));
      try {
        let b = 0;
        for await (const batch of loader.epoch(0)) {
          if (b >= batches) break;
          embedBatch(embedder, batch, pairings, acc);
          b++;
          if (b % every === 0 || b === batches) log(`similarity: ${b}/${batches} batches (${b * batchSize} images)`);
        }
      } finally {
        await loader.close();
      }
      const stats = Object.fromEntries(pairings.map((p) => [p, acc[p]!.result()])) as Partial<Record<Pairing, SimilarityStats>>;
      const metrics: Record<string, number> = {};
      const g = stats.globalGlobal;
      const l = stats.localGlobal;
      if (g) Object.assign(metrics, { positiveGlobal: g.positiveMean, negativeGlobal: g.negativeMean, lossGlobal: g.loss, boundGlobal: g.bound });
      if (l) Object.assign(metrics, { positiveLocal: l.positiveMean, negativeLocal: l.negativeMean, lossLocal: l.loss, boundLocal: l.bound });
      if (g && l) Object.assign(metrics, similarityDeltas(g, l));
      metrics.logK = Math.log(batchSize);
      return {
        metrics,
        details: {
          method: checkpoint.method,
          stage: o.stage,
          temperature: embedder.temperature,
          samples: used,
          k: batchSize,
          negatives: 'the other images of the batch: K - 1 = batchSize - 1 per query (not the key queue)',
          encoders: 'query: query encoder and head (global on view1; DetCo local head on jigsaw1); key: momentum encoder and global head on view2',
          deltas: 'deltaPositive = P^g - P^l, deltaNegative = N^g - N^l',
          bound: 'log(K) - L_NCE in nats, L_NCE = InfoNCE at the temperature on the same pairs',
          histogramRange: [...SIMILARITY_RANGE],
          histogramEdges: histogramEdges(o.bins),
          ...(g ? { globalGlobal: statsDetails(g) } : {}),
          ...(l ? { localGlobal: statsDetails(l) } : {}),
        },
        data: { name: config.dataset.name, trainImages: used, testImages: 0 },
      };
    } finally {
      method.dispose();
    }
  },
  format(report: EvalReport) {
    const m = report.metrics;
    const d = report.details ?? {};
    const rows: Array<[string, number | undefined, number | undefined, number | undefined]> = [
      ['global-global', m.positiveGlobal, m.negativeGlobal, m.boundGlobal],
      ['local-global', m.positiveLocal, m.negativeLocal, m.boundLocal],
    ];
    const fmt = (v: number | undefined) => (v === undefined ? '-' : v.toFixed(4)).padStart(9);
    const lines = rows.filter(([, p]) => p !== undefined).map(([name, p, n, b]) => `${name.padEnd(14)}${fmt(p)}${fmt(n)}${fmt(b)}`);
    if (m.deltaPositive !== undefined) lines.push(`${'Δ (g - l)'.padEnd(14)}${fmt(m.deltaPositive)}${fmt(m.deltaNegative)}`);
    return (
      `similarity of ${d.method} pairs on ${d.stage}, ${report.data.trainImages} images, K = ${d.k}, T = ${d.temperature}; bound = log K - L_NCE (log K = ${(m.logK ?? Number.NaN).toFixed(3)})\n` +
      `${'pairs'.padEnd(14)}${'P'.padStart(9)}${'N'.padStart(9)}${'bound'.padStart(9)}\n${lines.join('\n')}\n`
    );
  },
});

/** Embeds one loader batch for every pairing and adds it to the accumulators. */
function embedBatch(embedder: Embedder, batch: Batch, pairings: Pairing[], acc: Partial<Record<Pairing, SimilarityAccumulator>>): void {
  const views: Record<string, Tensor4D> = {};
  for (const name of embedder.outputs) {
    const t = batch.tensors[name];
    if (!t) throw new Error(`similarity: the ${embedder.method.name} pipeline has no output '${name}'`);
    views[name] = tf.tensor4d(t.data, t.shape);
  }
  try {
    for (const pairing of pairings) {
      const [q, k] = tf.tidy(() => {
        const e = embedder.embed(views, pairing);
        return [e.q, e.k];
      });
      try {
        const [n, dim] = q.shape;
        acc[pairing]!.add(q.dataSync() as Float32Array, k.dataSync() as Float32Array, n, dim);
      } finally {
        tf.dispose([q, k]);
      }
    }
  } finally {
    tf.dispose(Object.values(views));
  }
}
