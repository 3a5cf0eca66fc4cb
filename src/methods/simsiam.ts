// SimSiam (Chen & He 2021), algorithm 1:
//
//   z = g(f(x)),  p = h(z)                 backbone, projector (BN on its output), predictor
//   L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2,   D(p, z) = -cos(p, z)      eq. 1-4
//
// One network, no negatives, no momentum encoder: the stop-gradient alone
// keeps it from collapsing. Both views go through it as one batch (BN over
// 2N). The negative cosine is BYOL's (losses/neg_cosine.ts, 2 - 2 cos with the
// target detached), rescaled to the paper's -cos, so the loss runs from -1 down.
//
// The paper's values, and ours for 32 px Fashion-MNIST and short schedules:
// - projector 3 layers of 2048 (ImageNet; CIFAR: 2) -> 3 of 512, narrowed for 32-256 features: in the methods bench 2 layers
//   scored kNN 69.4 (below the untrained 71.3) and 3 layers 72.3 (docs/experiments.md#2026-12-05-simsiams-projector-depth).
// - predictor 2048 -> 512 -> 2048 (a 4x bottleneck) -> 512 -> 128 -> 512: the same bottleneck.
// - MoCo v2's augmentations -> BYOL's small-view pair (recipes.ts: crops of 50-100%, solarize on view 2): with no negatives, 20% crops of a 28 px garment kept the kNN at 50.7, BYOL's views reached 55.5 (batch 64, 3 epochs).
// - SGD lr 0.05 x batch/256 with the predictor's lr held constant -> the run's lr and schedule for every weight: holding the
//   predictor at the peak rate lowered the loss but also the kNN, in the bench and the short run (docs/experiments.md#2026-12-05-simsiam-predictor-rate).
import { Mulberry32 } from '../core/random.js';
import { z } from 'zod';
import * as tf from '../core/tf.js';
import type { Scalar, Tensor2D } from '@tensorflow/tfjs-core';
import { twoViewPipeline, type PipelineSpec, type RecipeOptions } from '../data/index.js';
import { negCosine } from '../losses/neg_cosine.js';
import type { ResNet } from '../nn/resnet.js';
import { Method, defineMethod, type LossOutput, type MethodContext, type TensorBatch } from './method.js';
import { bothViews } from './parts/views.js';
import { PredictionHead, ProjectionHead } from './parts/heads.js';

export const SimSiamOptions = z
  .object({
    /** Linear layers of the projector (the paper: 3 on ImageNet, 2 on CIFAR). */
    projectorLayers: z.number().int().min(1).default(3),
    hiddenDim: z.number().int().positive().default(512),
    outDim: z.number().int().positive().default(512),
    /** The predictor's bottleneck. */
    predictorDim: z.number().int().positive().default(128),
  })
  .strict();
export type SimSiamOptions = z.infer<typeof SimSiamOptions>;

/**
 * The symmetrised loss of SimSiam's eq. 4: (D(p1, sg(z2)) + D(p2, sg(z1))) / 2
 * with D = -cos; z1 and z2 receive no gradient from it.
 */
export function simsiamLoss(p1: Tensor2D, p2: Tensor2D, z1: Tensor2D, z2: Tensor2D): Scalar {
  // negCosine is the mean of 2 - 2 cos, so -cos = negCosine / 2 - 1.
  return tf.tidy(() => tf.sub(tf.div(tf.add(negCosine(p1, z2), negCosine(p2, z1)), 4), 1) as Scalar);
}

export class SimSiam extends Method {
  readonly name = 'simsiam';
  readonly backbone: ResNet;
  readonly projector: ProjectionHead;
  readonly predictor: PredictionHead;
  private readonly recipe: RecipeOptions;

  constructor(
    readonly options: SimSiamOptions,
    ctx: MethodContext,
  ) {
    super();
    const { projectorLayers, hiddenDim, outDim, predictorDim } = options;
    this.recipe = ctx.recipe;
    this.backbone = this.addModule('backbone', ctx.backbone());
    this.projector = this.addModule(
      'projector',
      new ProjectionHead(this.backbone.featureDim, hiddenDim, outDim, {
        layers: projectorLayers,
        batchNorm: true,
        lastBatchNorm: true,
        rng: new Mulberry32(ctx.seed + 1),
      }),
    );
    this.predictor = this.addModule('predictor', new PredictionHead(outDim, predictorDim, outDim, { rng: new Mulberry32(ctx.seed + 2) }));
  }

  pipeline(): PipelineSpec {
    return twoViewPipeline('byol', this.recipe);
  }

  /** The loss from the projections z [2N, outDim] of both views (view 1's rows first). */
  lossFromProjections(z: Tensor2D): Scalar {
    const [p1, p2] = tf.split(this.predictor.forward(z), 2, 0) as Tensor2D[];
    const [z1, z2] = tf.split(z, 2, 0) as Tensor2D[];
    return simsiamLoss(p1!, p2!, z1!, z2!);
  }

  loss(batch: TensorBatch): LossOutput {
    const x = bothViews(batch);
    const loss = this.lossFromProjections(this.projector.forward(this.backbone.features(x)));
    return { loss, terms: { negCosine: loss } };
  }
}

export const simsiamSpec = defineMethod({
  names: ['simsiam'],
  description: 'SimSiam: a predictor regresses the other view\'s stop-gradient projection; no negatives, no momentum encoder',
  options: SimSiamOptions,
  create: (_name, o, ctx) => new SimSiam(o, ctx),
});
