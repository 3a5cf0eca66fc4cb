// SimCLR (Chen et al. 2020), algorithm 1:
//
//   x1, x2 = t(x), t'(x)                      two SimCLR views of each image
//   h      = f(x)                             the ResNet's pooled features
//   z      = g(h)                             MLP head: Linear -> BN -> ReLU -> Linear
//   L      = NT-Xent(z1, z2, T)               eq. 1 over 2N - 2 in-batch negatives
//
// Both views go through the encoder as one batch of 2N, so BN normalises over
// both (the paper's global BN, on one process). LARS is the paper's optimizer
// for large batches: choose it with `optimizer: { name: lars }` in the run
// config (it is the config's choice, not the method's).
// Data-parallel: each rank's anchors take their negatives from every rank's
// projections (an all-gather with a gradient, nt_xent_ranks.ts), so the
// negatives are the global batch's, as on one process; BN stays per rank.
// Small-data defaults: T = 0.5 and a 512-wide head, the paper's CIFAR-10
// setting (appendix B.9) with a narrower hidden layer for narrow ResNets.
import { Mulberry32 } from '../core/random.js';
import { z } from 'zod';
import * as tf from '../core/tf.js';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import { twoViewPipeline, type PipelineSpec, type RecipeOptions } from '../data/index.js';
import { ntXentAcrossRanks } from '../losses/nt_xent_ranks.js';
import type { ResNet } from '../nn/resnet.js';
import { Method, defineMethod, type LossOutput, type MethodContext, type TensorBatch } from './method.js';
import { bothViews } from './parts/views.js';
import { ProjectionHead } from './parts/heads.js';

export const SimCLROptions = z
  .object({
    temperature: z.number().positive().default(0.5),
    hiddenDim: z.number().int().positive().default(512),
    outDim: z.number().int().positive().default(128),
  })
  .strict();
export type SimCLROptions = z.infer<typeof SimCLROptions>;

export class SimCLR extends Method {
  readonly name = 'simclr';
  readonly backbone: ResNet;
  readonly projector: ProjectionHead;

  private readonly recipe: RecipeOptions;

  constructor(
    readonly options: SimCLROptions,
    ctx: MethodContext,
  ) {
    super();
    this.recipe = ctx.recipe;
    const backbone = this.addModule('backbone', ctx.backbone());
    this.backbone = backbone;
    const rng = new Mulberry32(ctx.seed + 1);
    this.projector = this.addModule(
      'projector',
      new ProjectionHead(backbone.featureDim, options.hiddenDim, options.outDim, { layers: 2, batchNorm: true, rng }),
    );
  }

  pipeline(): PipelineSpec {
    return twoViewPipeline('simclr', this.recipe);
  }

  loss(batch: TensorBatch): LossOutput {
    const x = bothViews(batch);
    const [z1, z2] = tf.split(this.projector.forward(this.backbone.features(x)), 2, 0) as [Tensor2D, Tensor2D];
    const loss = ntXentAcrossRanks(this.comm, z1, z2, this.options.temperature);
    return { loss, terms: { ntXent: loss } };
  }
}

export const simclrSpec = defineMethod({
  names: ['simclr'],
  description: 'SimCLR: two views, an MLP projector and NT-Xent over in-batch negatives',
  options: SimCLROptions,
  create: (_name, o, ctx) => new SimCLR(o, ctx),
});
