// BYOL (Grill et al. 2020), section 3.1:
//
//   online: y = f_θ(v), z = g_θ(y), p = q_θ(z)      backbone, projector, predictor
//   target: z' = g_ξ(f_ξ(v'))                         EMA twin of backbone + projector
//   L = negCos(p1, sg(z'2)) + negCos(p2, sg(z'1))     eq. 2, symmetrised (eq. 4's L + L~)
//   after the step: ξ <- τ ξ + (1 - τ) θ,
//     τ = 1 - (1 - τ_base)(cos(π k / K) + 1) / 2      from τ_base to 1 (section 3.2)
//
// Views are the paper's asymmetric pair (blur always on view 1, solarize only
// on view 2). Each network sees both views as one batch. The target runs off
// the tape: its weights are buffers and its outputs are detached anyway.
// Small-data defaults (measurements: docs/experiments.md#byol): heads 2048
// wide, 128 out (the paper: 4096, 256), which kept the online kNN rising;
// τ_base 0.99, not 0.996, as solo-learn's CIFAR setting, since 0.996 leaves a
// 400-step run's target about half random; the recipe's SGD lr 0.1, not the
// runs' 0.06, the best of 0.06-0.5 on the bench; and one warm-up epoch, which
// steadied the online kNN.
import { Mulberry32 } from '../core/random.js';
import { z } from 'zod';
import * as tf from '../core/tf.js';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import { twoViewPipeline, type PipelineSpec, type RecipeOptions } from '../data/index.js';
import { negCosine } from '../losses/neg_cosine.js';
import { noGrad } from '../nn/module.js';
import type { ResNet } from '../nn/resnet.js';
import { Method, defineMethod, type LossOutput, type MethodContext, type StepContext, type TensorBatch } from './method.js';
import { bothViews } from './parts/views.js';
import { EmaPair, emaMomentum } from './parts/ema.js';
import { PredictionHead, ProjectionHead } from './parts/heads.js';

export const BYOLOptions = z
  .object({
    hiddenDim: z.number().int().positive().default(2048),
    outDim: z.number().int().positive().default(128),
    /** τ_base: the target momentum at step 0, rising to 1 at the last step. */
    momentumBase: z.number().min(0).max(1).default(0.99),
  })
  .strict();
export type BYOLOptions = z.infer<typeof BYOLOptions>;

export class BYOL extends Method {
  readonly name = 'byol';
  readonly backbone: ResNet;
  readonly projector: ProjectionHead;
  readonly predictor: PredictionHead;
  readonly momentumPairs: [EmaPair<ResNet>, EmaPair<ProjectionHead>];

  private readonly recipe: RecipeOptions;

  constructor(
    readonly options: BYOLOptions,
    ctx: MethodContext,
  ) {
    super();
    const { hiddenDim, outDim } = options;
    const { seed } = ctx;
    this.recipe = ctx.recipe;
    this.backbone = this.addModule('backbone', ctx.backbone());
    const buildProjector = () =>
      new ProjectionHead(this.backbone.featureDim, hiddenDim, outDim, { layers: 2, batchNorm: true, rng: new Mulberry32(seed + 1) });
    this.projector = this.addModule('projector', buildProjector());
    this.predictor = this.addModule('predictor', new PredictionHead(outDim, hiddenDim, outDim, { rng: new Mulberry32(seed + 2) }));
    this.momentumPairs = [new EmaPair(this.backbone, ctx.backbone), new EmaPair(this.projector, buildProjector)];
    this.addModule('targetBackbone', this.momentumPairs[0].target);
    this.addModule('targetProjector', this.momentumPairs[1].target);
  }

  pipeline(): PipelineSpec {
    return twoViewPipeline('byol', this.recipe);
  }

  loss(batch: TensorBatch, ctx: StepContext): LossOutput {
    const x = bothViews(batch);
    const [p1, p2] = tf.split(this.predictor.forward(this.projector.forward(this.backbone.features(x))), 2, 0) as Tensor2D[];
    const [target, targetProjector] = this.momentumPairs.map((pair) => pair.target) as [ResNet, ProjectionHead];
    const [z1, z2] = noGrad(() => tf.split(targetProjector.forward(target.features(x)), 2, 0)) as Tensor2D[];
    const loss = tf.add(negCosine(p1!, z2!), negCosine(p2!, z1!)) as tf.Scalar;
    return { loss, terms: { negCosine: loss, tau: tf.scalar(this.tau(ctx)) } };
  }

  override afterStep(ctx: StepContext): void {
    for (const pair of this.momentumPairs) pair.update(this.tau(ctx));
  }

  tau(ctx: StepContext): number {
    return emaMomentum(ctx.step, ctx.totalSteps, this.options.momentumBase);
  }
}

export const byolSpec = defineMethod({
  names: ['byol'],
  description: 'BYOL: an online network predicts an EMA target network, no negatives',
  options: BYOLOptions,
  recipe: { lr: 0.1, warmupEpochs: 1 },
  create: (_name, o, ctx) => new BYOL(o, ctx),
});
