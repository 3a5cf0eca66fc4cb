// Barlow Twins (Zbontar et al. 2021), algorithm 1:
//
//   z1, z2 = g(f(x1)), g(f(x2))            backbone, projector (Linear-BN-ReLU x2, Linear)
//   C = BN(z1)ᵀ BN(z2) / N                 cross-correlation of the batch-standardised embeddings
//   L = sum_i (1 - C_ii)² + λ sum_{i != j} C_ij²      eq. 1 (losses/barlow_twins.ts)
//
// No negatives, no predictor, no momentum encoder: the redundancy term keeps
// the D embedding dimensions from collapsing onto one another. Both views go
// through the network as one batch (BN over 2N); each view is standardised
// on its own in the loss.
//
// λ scaled to the embedding size as λ = 1/D. Each diagonal term competes
// with the D - 1 off-diagonal terms of its row, whose total weight is λ (D - 1):
// 1/D makes that about 1, so invariance and redundancy weigh alike. The
// paper's 0.0051 at D = 8192 makes it 41.8; keeping 41.8 (λ = 0.0051 · 8192 / D)
// failed here: with a batch of 64-128 per view, C has rank below the batch,
// the off-diagonal floor is large, and the redundancy term dominated. The
// loss swung from step to step and the kNN fell (35.7 against 63.3 untrained
// at D 128; docs/experiments.md#swav-simsiam-barlow-twins).

// The paper's values, and ours for 32 px Fashion-MNIST and short schedules:
// - projector 3 layers of 8192 -> 3 layers of 512: the narrow ResNets' features are 32-256 wide, and C is D x D.
// - λ 0.0051 (D 8192) -> 1/D, above.
// - BYOL's asymmetric augmentations: the same recipe (recipes.ts: no blur on small views, crops of 50-100%).
// - LARS, lr 0.2 (weights) at batch 2048, loss unscaled -> the run's optimizer; the loss is divided by D (lossScale), so an SGD lr that suits the other methods suits it too.
import { Mulberry32 } from '../core/random.js';
import { z } from 'zod';
import * as tf from '../core/tf.js';
import type { Scalar, Tensor2D } from '@tensorflow/tfjs-core';
import { twoViewPipeline, type PipelineSpec, type RecipeOptions } from '../data/index.js';
import { barlowTwinsLoss } from '../losses/barlow_twins.js';
import type { ResNet } from '../nn/resnet.js';
import { Method, defineMethod, type LossOutput, type MethodContext, type TensorBatch } from './method.js';
import { bothViews } from './parts/views.js';
import { ProjectionHead } from './parts/heads.js';

export const BarlowTwinsOptions = z
  .object({
    projectorLayers: z.number().int().min(1).default(3),
    hiddenDim: z.number().int().positive().default(512),
    /** D: the embedding (and cross-correlation) size. */
    outDim: z.number().int().positive().default(512),
    /** Off-diagonal weight; default 1 / outDim, filled in when a run starts. */
    lambda: z.number().min(0).optional(),
    /** Factor on eq. 1's sum; default 1 / outDim, filled in when a run starts. */
    lossScale: z.number().positive().optional(),
  })
  .strict();
export type BarlowTwinsOptions = z.infer<typeof BarlowTwinsOptions>;

/** λ for embeddings of `dim`: 1/D, so the off-diagonal terms of a row weigh about as much as its diagonal one. */
export function barlowLambda(dim: number): number {
  return 1 / dim;
}

export class BarlowTwins extends Method {
  readonly name = 'barlow';
  readonly backbone: ResNet;
  readonly projector: ProjectionHead;
  private readonly recipe: RecipeOptions;

  constructor(
    readonly options: BarlowTwinsOptions & { lambda: number; lossScale: number },
    ctx: MethodContext,
  ) {
    super();
    const { projectorLayers, hiddenDim, outDim } = options;
    this.recipe = ctx.recipe;
    this.backbone = this.addModule('backbone', ctx.backbone());
    this.projector = this.addModule(
      'projector',
      new ProjectionHead(this.backbone.featureDim, hiddenDim, outDim, { layers: projectorLayers, batchNorm: true, rng: new Mulberry32(ctx.seed + 1) }),
    );
  }

  pipeline(): PipelineSpec {
    return twoViewPipeline('byol', this.recipe);
  }

  loss(batch: TensorBatch): LossOutput {
    const x = bothViews(batch);
    const [z1, z2] = tf.split(this.projector.forward(this.backbone.features(x)), 2, 0) as Tensor2D[];
    const { loss, invariance, redundancy } = barlowTwinsLoss(z1!, z2!, this.options.lambda);
    const scaled = tf.mul(loss, this.options.lossScale) as Scalar;
    return { loss: scaled, terms: { barlowTwins: scaled, invariance, redundancy } };
  }
}

export const barlowSpec = defineMethod({
  names: ['barlow'],
  description: 'Barlow Twins: the cross-correlation of two views\' embeddings is driven to the identity',
  options: BarlowTwinsOptions,
  resolve: (_name, o) => ({ ...o, lambda: o.lambda ?? barlowLambda(o.outDim), lossScale: o.lossScale ?? 1 / o.outDim }),
  create: (_name, o, ctx) => new BarlowTwins(o as BarlowTwinsOptions & { lambda: number; lossScale: number }, ctx),
});
