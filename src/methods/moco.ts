// MoCo v1 (He et al. 2020) and v2 (Chen et al. 2020, "Improved baselines"),
// following the pseudo-code of v1's Algorithm 1:
//
//   q = normalize(g(f_q(x1)))                      query encoder
//   k = normalize(g_k(f_k(shuffle(x2))))[unshuffle] key encoder, no gradient
//   loss = InfoNCE(q, k, queue, T)                 eq. 1
//   θ_k <- m θ_k + (1 - m) θ_q;  enqueue(k)        eq. 2, after the step
//
// v1: linear 128-d head. v2: 2-layer MLP head, blur and stronger colour
// jitter; its cosine schedule is the run config's default.
//
// Small-data defaults (Fashion-MNIST, 20k images, batch 256, a few epochs);
// the measurements are in docs/experiments.md#moco:
// - queueLength 4096: 16 batches, so queued keys are never much staler than
//   the paper's 65536 of 1.28M images are.
// - momentum 0.99, not 0.999: 0.999 would leave a 400-step run's key encoder
//   mostly at its random start (0.999^400 = 0.67).
// - bnSplits 4: shuffle-BN over 4 emulated GPUs of 64 images at batch 256.
// - temperature 0.1 for v2 (the paper's 0.2; the authors' CIFAR colab's 0.1)
//   and 0.2 for v1 (the paper's 0.07): a sharp softmax over 10 classes of
//   near-duplicates mostly pushes apart images of the same class.
import { Mulberry32 } from '../core/random.js';
import { z } from 'zod';
import type { Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { mocoV2View, type PipelineSpec, type RecipeOptions, type ViewSpec } from '../data/index.js';
import { infoNCE } from '../losses/info_nce.js';
import { l2Normalize } from '../losses/normalize.js';
import { noGrad } from '../nn/module.js';
import type { ResNet } from '../nn/resnet.js';
import { Method, defineMethod, type LossOutput, type MethodContext, type StepContext, type TensorBatch } from './method.js';
import { EmaPair } from './parts/ema.js';
import { ProjectionHead } from './parts/heads.js';
import { KeyQueue } from './parts/queue.js';
import { shuffledForward, useSplitBatchNorm } from './parts/split_bn.js';

export const MoCoOptions = z
  .object({
    /** Keys in the queue (negatives per query). */
    queueLength: z.number().int().positive().default(4096),
    /** Embedding size. */
    dim: z.number().int().positive().default(128),
    /** Default 0.2 (v1) or 0.1 (v2), filled in when a run starts. */
    temperature: z.number().positive().optional(),
    /** Key-encoder EMA momentum m. */
    momentum: z.number().min(0).max(1).default(0.99),
    /** Shuffle-BN groups (emulated GPUs); 1 = plain BN. */
    bnSplits: z.number().int().positive().default(4),
  })
  .strict();
export type MoCoOptions = z.infer<typeof MoCoOptions>;

export type MoCoVersion = 'v1' | 'v2';

/** v1's default temperature (small-data value, above). */
export const MOCO_V1_TEMPERATURE = 0.2;
/** v2's default temperature (small-data value; DetCo, built on v2, shares it). */
export const MOCO_V2_TEMPERATURE = 0.1;

/** The version's default temperature (the small-data values above). */
export function mocoTemperature(version: MoCoVersion): number {
  return version === 'v1' ? MOCO_V1_TEMPERATURE : MOCO_V2_TEMPERATURE;
}

/** MoCo v1's augmentation: crop, grey 20%, colour jitter 0.4 always, flip; no blur. */
function mocoV1View(o: RecipeOptions): ViewSpec {
  return { ...mocoV2View(o), jitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.4, p: 1 }, blur: null };
}

export class MoCo extends Method {
  readonly name: string;
  readonly backbone: ResNet;
  readonly head: ProjectionHead;
  readonly momentumPairs: [EmaPair<ResNet>, EmaPair<ProjectionHead>];
  readonly keyQueue: KeyQueue;
  readonly temperature: number;
  readonly momentum: number;
  private readonly seed: number;
  private readonly recipe: RecipeOptions;

  constructor(
    readonly version: MoCoVersion,
    o: MoCoOptions,
    ctx: MethodContext,
  ) {
    super();
    this.name = `moco${version}`;
    this.temperature = o.temperature ?? mocoTemperature(version);
    this.momentum = o.momentum;
    this.seed = ctx.seed;
    this.recipe = ctx.recipe;
    const build = () => useSplitBatchNorm(ctx.backbone(), o.bnSplits);
    this.backbone = this.addModule('backbone', build());
    const d = this.backbone.featureDim;
    const buildHead = () => new ProjectionHead(d, d, o.dim, { layers: version === 'v1' ? 1 : 2, rng: new Mulberry32(this.seed + 1) });
    this.head = this.addModule('head', buildHead());
    this.momentumPairs = [new EmaPair(this.backbone, build), new EmaPair(this.head, buildHead)];
    this.addModule('momentumBackbone', this.momentumPairs[0].target);
    this.addModule('momentumHead', this.momentumPairs[1].target);
    this.keyQueue = this.addModule('keyQueue', new KeyQueue(o.queueLength, o.dim, { rng: new Mulberry32(this.seed + 2) }));
  }

  pipeline(): PipelineSpec {
    const view = this.version === 'v1' ? mocoV1View(this.recipe) : mocoV2View(this.recipe);
    return { outputs: [{ kind: 'view', name: 'view1', view }, { kind: 'view', name: 'view2', view }] };
  }

  query(x: Tensor4D): Tensor2D {
    return l2Normalize(this.head.forward(this.backbone.features(x)));
  }

  /** Keys of the momentum encoder, with shuffle-BN and no gradient. */
  key(x: Tensor4D, step: number): Tensor2D {
    const [backbone, head] = this.momentumPairs.map((p) => p.target) as [ResNet, ProjectionHead];
    const rng = this.shuffleRng(step);
    return noGrad(() => shuffledForward(x, rng, (s) => l2Normalize(head.forward(backbone.features(s as Tensor4D)))));
  }

  /** The stream of step `step`'s shuffle-BN permutation: a resumed run draws the same one. */
  protected shuffleRng(step: number): Mulberry32 {
    return new Mulberry32(this.seed * 7919 + step);
  }

  loss(batch: TensorBatch, ctx: StepContext): LossOutput {
    const q = this.query(batch.views.view1!);
    const k = this.key(batch.views.view2!, ctx.step);
    this.keyQueue.stage(k);
    const loss = infoNCE(q, k, this.keyQueue.keys as Tensor2D, this.temperature);
    return { loss, terms: { infoNCE: loss } };
  }

  override afterStep(): void {
    for (const pair of this.momentumPairs) pair.update(this.momentum);
    this.keyQueue.commit();
  }
}

const versionOf = (name: string): MoCoVersion => (name === 'mocov1' ? 'v1' : 'v2');

export const mocoSpec = defineMethod({
  names: ['mocov1', 'mocov2'],
  description: 'MoCo v1/v2: a momentum key encoder and a queue of negatives, InfoNCE',
  options: MoCoOptions,
  resolve: (name, o) => ({ ...o, temperature: o.temperature ?? mocoTemperature(versionOf(name)) }),
  create: (name, o, ctx) => new MoCo(versionOf(name), o, ctx),
});
