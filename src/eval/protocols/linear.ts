// The linear probe on frozen features: a softmax classifier on standardised
// features, SGD + momentum under a cosine rate (linear_probe.ts), trained on
// the training split and scored on the test split.
import { z } from 'zod';
import { trainLinearProbe } from '../linear_probe.js';
import { singleLabel } from '../feature_input.js';
import { accuracyTable, defineProtocol } from '../protocol.js';

export const LinearOptions = z
  .object({
    epochs: z.number().int().positive().default(30).describe('epochs over the cached training features'),
    lr: z.number().positive().default(0.1).describe('peak learning rate'),
    weightDecay: z.number().min(0).default(0).describe('L2 weight decay'),
    seed: z.number().int().min(0).default(0).describe('seed of the mini-batch order'),
  })
  .strict();

export const linearProtocol = defineProtocol({
  name: 'linear',
  description: 'linear classifier on frozen, standardised features (SGD + momentum, cosine rate); top-1 and top-5 on the test split',
  options: LinearOptions,
  input: 'features',
  async run(input, o, log) {
    if (input.kind !== 'features') throw new Error('linear: needs features');
    const { train, test, dim, numClasses } = singleLabel(input.features, 'linear');
    const r = trainLinearProbe(train, test, dim, {
      numClasses,
      epochs: o.epochs,
      lr: o.lr,
      weightDecay: o.weightDecay,
      seed: o.seed,
      onEpoch: (epoch, loss) => {
        if ((epoch + 1) % 10 === 0 || epoch + 1 === o.epochs) log(`linear probe epoch ${epoch + 1}/${o.epochs}: loss ${loss.toFixed(4)}`);
      },
    });
    return {
      metrics: { top1: r.test.top1, top5: r.test.top5, trainTop1: r.train.top1, trainTop5: r.train.top5, finalLoss: r.losses.at(-1)! },
      details: { losses: r.losses },
    };
  },
  format(report) {
    const { metrics: m, options: o, data } = report;
    return accuracyTable(`linear probe on ${data.stage} (${data.dim}-d), ${o.epochs} epochs, ${data.trainImages} train -> ${data.testImages} test images`, [
      ['linear (test)', m.top1!, m.top5!],
      ['linear (train)', m.trainTop1!, m.trainTop5!],
    ]);
  },
});
