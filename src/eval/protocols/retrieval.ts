// Image retrieval on frozen features: the test split's images are the
// queries, the training split's the database, ranked by cosine similarity; a
// database image is relevant when it shares the query's label. mAP@R
// (Musgrave et al. 2020, "A metric learning reality check"), mAP over the
// full ranking, and Recall@1/5/10 in the metric-learning sense (a query counts
// when at least one of its k nearest is relevant; Oh Song et al. 2016). The
// definitions, the tie rule and the blocking are in ../retrieval.ts.
import { z } from 'zod';
import { defineProtocol, type EvalReport } from '../protocol.js';
import { singleLabel, type FeatureSplits } from '../feature_input.js';
import { RECALL_KS, retrievalEvaluate } from '../retrieval.js';

// No options: the recall cut-offs stay fixed so that reports compare, and the
// feature input's --stage, --limit and --test-limit choose the data.
export const RetrievalOptions = z.object({}).strict();

/** Feature splits as a caller may have built them by hand: each side checked against `dim`, naming the field. */
function checkSplits(f: FeatureSplits): void {
  const { dim } = f;
  if (!(Number.isInteger(dim) && dim > 0)) throw new Error(`retrieval: features.dim must be a positive integer, got ${dim}`);
  for (const side of ['train', 'test'] as const) {
    const { features, labels } = f[side];
    if (features.length % dim !== 0) {
      throw new Error(`retrieval: ${side}.features has ${features.length} values, not a multiple of features.dim ${dim}`);
    }
    const rows = features.length / dim;
    if (labels.length !== rows) throw new Error(`retrieval: ${side}.features has ${rows} rows but ${side}.labels has ${labels.length}`);
  }
}

export const retrievalProtocol = defineProtocol({
  name: 'retrieval',
  description: 'image retrieval on L2-normalised features, test images as queries against the training images: mAP@R, mAP, Recall@1/5/10',
  options: RetrievalOptions,
  input: 'features',
  async run(input, _o, log) {
    if (input.kind !== 'features') throw new Error('retrieval: needs features');
    const f = singleLabel(input.features, 'retrieval');
    checkSplits(f);
    const r = retrievalEvaluate(f.train.features, f.train.labels, f.test.features, f.test.labels, f.dim, { log });
    if (r.skipped > 0) log(`retrieval: ${r.skipped} of ${r.queries} queries have no relevant database image and are skipped`);
    return {
      metrics: { mapAtR: r.mapAtR, map: r.map, recallAt1: r.recallAt1, recallAt5: r.recallAt5, recallAt10: r.recallAt10 },
      details: {
        queries: r.queries,
        database: r.database,
        evaluated: r.evaluated,
        skipped: r.skipped,
        similarity: 'cosine',
        recallKs: [...RECALL_KS],
        recall: 'a query counts at k when at least one of its k nearest database images is relevant',
        ties: 'equal similarities rank the lower database index first',
      },
    };
  },
  format(report: EvalReport) {
    const { metrics: m, data, details } = report;
    const skipped = typeof details?.skipped === 'number' && details.skipped > 0 ? `, ${details.skipped} queries without a relevant image skipped` : '';
    const rows: Array<[string, number | undefined]> = [
      ['mAP@R', m.mapAtR],
      ['mAP', m.map],
      ...RECALL_KS.map((k): [string, number | undefined] => [`Recall@${k}`, m[`recallAt${k}`]]),
    ];
    const width = Math.max(...rows.map(([name]) => name.length), 'metric'.length);
    const lines = rows.map(([name, v]) => `${name.padEnd(width)}  ${(v ?? Number.NaN).toFixed(2).padStart(6)}`);
    return (
      `retrieval on ${data.stage} (${data.dim}-d), ${data.testImages} test queries -> ${data.trainImages} train images${skipped}\n` +
      `${'metric'.padEnd(width)}       %\n${lines.join('\n')}\n`
    );
  },
});
