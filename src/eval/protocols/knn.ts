// kNN on frozen features (Wu et al. 2018): the training split is the memory,
// the test split the queries; a weighted vote of the k = 200 nearest by
// exp(cos / T), and a majority vote of the k = 20 nearest, from one search.
import { z } from 'zod';
import { knnEvaluate } from '../knn.js';
import { singleLabel } from '../feature_input.js';
import { accuracyTable, defineProtocol } from '../protocol.js';

export const KnnOptions = z
  .object({
    k: z.number().int().positive().default(200).describe('neighbours of the weighted protocol'),
    temperature: z.number().positive().default(0.1).describe('temperature of the weighted votes'),
    majorityK: z.number().int().positive().default(20).describe('neighbours of the majority protocol'),
  })
  .strict();

export const knnProtocol = defineProtocol({
  name: 'knn',
  description: 'k-nearest neighbours on L2-normalised features: k=200 weighted by exp(cos/T), and k=20 majority; top-1 and top-5',
  options: KnnOptions,
  input: 'features',
  async run(input, o) {
    if (input.kind !== 'features') throw new Error('knn: needs features');
    const { train, test, dim, numClasses } = singleLabel(input.features, 'knn');
    const r = knnEvaluate(train.features, train.labels, test.features, test.labels, dim, {
      numClasses,
      weightedK: o.k,
      temperature: o.temperature,
      majorityK: o.majorityK,
    });
    return {
      metrics: { top1: r.weighted.top1, top5: r.weighted.top5, majorityTop1: r.majority.top1, majorityTop5: r.majority.top5 },
      details: { weighted: r.weighted, majority: r.majority },
    };
  },
  format(report) {
    const { metrics: m, options: o, data } = report;
    return accuracyTable(`kNN on ${data.stage} (${data.dim}-d), ${data.trainImages} train -> ${data.testImages} test images`, [
      [`k=${o.k} weighted, T=${o.temperature}`, m.top1!, m.top5!],
      [`k=${o.majorityK} majority`, m.majorityTop1!, m.majorityTop5!],
    ]);
  },
});
