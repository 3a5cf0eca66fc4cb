// InsDis: instance discrimination with a memory bank (Wu et al. 2018).
//
//   v   = normalise(BN(W f(x)))             128-d embedding of one view
//   pos = M[i]                              the image's own bank entry
//   neg = M[j_1..j_K], j ~ U(N)             sampled bank entries (eq. 4 samples, NCE)
//   L   = InfoNCE(v, pos, neg, T)           the softmax form of eq. 2 over pos + neg
//   after the step: M[i] <- normalise(m M[i] + (1 - m) v)   (eq. 7; the paper's m 0.5, here 0.9)
//
// The paper's NCE approximation (eq. 5-6) is replaced by InfoNCE over the
// same sampled negatives, the form later work (MoCo, PIRL) converged on.
// Small-data defaults: K = 4096 as the paper; a bank of a few hundred images
// is sampled with replacement, so negatives repeat, which does no harm.
// T = 0.2, not the paper's 0.07; bank momentum 0.9, not 0.5; BN on the
// embedding, which the paper's linear head lacks; and the bank starts as the
// untrained network's embeddings (memory_bank.ts says why).
import { Mulberry32 } from '../core/random.js';
import { z } from 'zod';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import { mocoV2View, type PipelineSpec, type RecipeOptions } from '../data/index.js';
import { infoNCE } from '../losses/info_nce.js';
import { l2Normalize } from '../losses/normalize.js';
import type { ResNet } from '../nn/resnet.js';
import { Method, defineMethod, type LossOutput, type MethodContext, type StepContext, type TensorBatch } from './method.js';
import { ProjectionHead } from './parts/heads.js';
import { MemoryBank, memoryBankOptionFields, withBankSize } from './parts/memory_bank.js';
import { stepSeed } from './parts/seeds.js';

export const InsDisOptions = z
  .object(memoryBankOptionFields)
  .strict();
export type InsDisOptions = z.infer<typeof InsDisOptions>;

export class InsDis extends Method {
  readonly name = 'insdis';
  readonly backbone: ResNet;
  /** The 128-d linear embedding that replaces the classifier (section 3.1), BN'd unless headBatchNorm is off. */
  readonly head: ProjectionHead;
  readonly memory: MemoryBank;

  private readonly recipe: RecipeOptions;
  private readonly seed: number;

  constructor(
    readonly options: InsDisOptions & { bankSize: number },
    ctx: MethodContext,
  ) {
    super();
    const { seed } = ctx;
    this.seed = seed;
    this.recipe = ctx.recipe;
    const backbone = this.addModule('backbone', ctx.backbone());
    this.backbone = backbone;
    const rng = new Mulberry32(seed + 1);
    this.head = this.addModule('head', new ProjectionHead(backbone.featureDim, 0, options.dim, { layers: 1, lastBatchNorm: options.headBatchNorm, rng }));
    this.memory = this.addModule('memory', new MemoryBank(options.bankSize, options.dim, { momentum: options.bankMomentum, seed: seed + 2 }));
  }

  pipeline(): PipelineSpec {
    return { outputs: [{ kind: 'view', name: 'view', view: mocoV2View(this.recipe) }] };
  }

  embed(view: TensorBatch['views'][string]): Tensor2D {
    return l2Normalize(this.head.forward(this.backbone.features(view)) as Tensor2D, 1);
  }

  override warmUp(batch: TensorBatch): void {
    this.memory.fill(batch.indices, this.embed(batch.views.view!));
  }

  loss(batch: TensorBatch, ctx: StepContext): LossOutput {
    const v = this.embed(batch.views.view!);
    const positive = this.memory.get(batch.indices);
    const negatives = this.memory.sample(this.options.negatives, new Mulberry32(stepSeed(this.seed, ctx.step)));
    const loss = infoNCE(v, positive, negatives, this.options.temperature);
    this.memory.stage(batch.indices, v);
    return { loss, terms: { nce: loss } };
  }

  override afterStep(): void {
    this.memory.commit();
  }
}

export const insdisSpec = defineMethod({
  names: ['insdis'],
  description: 'InsDis: instance discrimination against a memory bank of embeddings',
  options: InsDisOptions,
  resolve: withBankSize,
  create: (name, o, ctx) => new InsDis(withBankSize(name, o, ctx), ctx),
});
