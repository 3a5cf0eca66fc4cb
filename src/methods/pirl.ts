// PIRL: pretext-invariant representations (Misra & van der Maaten 2020).
//
//   f(v_I)  = normalise(BN(W_f pool(res5(I))))             image branch
//   g(v_IT) = normalise(BN(W_g [W_p pool(res5(p_1)) .. W_p pool(res5(p_9))]))
//             each of the 9 jigsaw patches (already in random order) through
//             the backbone and a linear head, concatenated, then linear to 128
//   L = λ L_NCE(m_I, g(v_IT)) + (1 - λ) L_NCE(m_I, f(v_I)),  λ = 0.5   (eq. 5)
//       with m_I the image's memory-bank entry as the positive and sampled
//       bank entries as the negatives (eq. 3-4; InfoNCE in place of NCE)
//   after the step: m_I <- normalise(m m_I + (1 - m) f(v_I))   (section 3.2: m 0.5; here 0.9)
//
// Small-data defaults: 4096 negatives (the paper: 32,000 of 1.28M images),
// T = 0.2 (the paper: 0.07), bank momentum 0.9 (the paper: 0.5), BN on both
// embeddings (the paper: none) and a bank warmed up with the untrained
// network's embeddings, as InsDis (memory_bank.ts); patches are 16 px of a
// 32 px view (recipes.ts's jigsaw set), and they leave the running BN
// statistics to the image branch.
import { Mulberry32 } from '../core/random.js';
import { z } from 'zod';
import * as tf from '../core/tf.js';
import type { Scalar, Tensor2D } from '@tensorflow/tfjs-core';
import { pirlPipeline, type PipelineSpec, type RecipeOptions } from '../data/index.js';
import { infoNCE } from '../losses/info_nce.js';
import { l2Normalize } from '../losses/normalize.js';
import { Linear, withRunningStatsFrozen } from '../nn/layers.js';
import type { ResNet } from '../nn/resnet.js';
import { Method, defineMethod, type LossOutput, type MethodContext, type StepContext, type TensorBatch } from './method.js';
import { ProjectionHead } from './parts/heads.js';
import { MemoryBank, memoryBankOptionFields, withBankSize } from './parts/memory_bank.js';
import { stepSeed } from './parts/seeds.js';

const PATCHES = 9;

export const PIRLOptions = z
  .object({
    ...memoryBankOptionFields,
    /** λ of eq. 5: the weight of the jigsaw term. */
    lambda: z.number().min(0).max(1).default(0.5),
  })
  .strict();
export type PIRLOptions = z.infer<typeof PIRLOptions>;

export class PIRL extends Method {
  readonly name = 'pirl';
  readonly backbone: ResNet;
  readonly imageHead: ProjectionHead;
  readonly patchHead: Linear;
  readonly jigsawHead: ProjectionHead;
  readonly memory: MemoryBank;

  private readonly recipe: RecipeOptions;
  private readonly seed: number;

  constructor(
    readonly options: PIRLOptions & { bankSize: number },
    ctx: MethodContext,
  ) {
    super();
    const { dim } = options;
    const { seed } = ctx;
    this.seed = seed;
    this.recipe = ctx.recipe;
    const rng = new Mulberry32(seed + 1);
    const backbone = this.addModule('backbone', ctx.backbone());
    this.backbone = backbone;
    const embedding = { layers: 1, lastBatchNorm: options.headBatchNorm, rng };
    this.imageHead = this.addModule('imageHead', new ProjectionHead(backbone.featureDim, 0, dim, embedding));
    this.patchHead = this.addModule('patchHead', new Linear(backbone.featureDim, dim, { rng }));
    this.jigsawHead = this.addModule('jigsawHead', new ProjectionHead(PATCHES * dim, 0, dim, embedding));
    this.memory = this.addModule('memory', new MemoryBank(options.bankSize, dim, { momentum: options.bankMomentum, seed: seed + 2 }));
  }

  pipeline(): PipelineSpec {
    return pirlPipeline(this.recipe);
  }

  /**
   * g(v_IT): [B * 9, p, p, C] patches, sample-major, -> [B, dim]. The patches
   * leave the running BN statistics, which evaluation uses on whole images, to
   * the image branch.
   */
  jigsawEmbedding(patches: TensorBatch['views'][string]): Tensor2D {
    const perPatch = this.patchHead.forward(withRunningStatsFrozen(this.backbone, () => this.backbone.features(patches)));
    const concatenated = tf.reshape(perPatch, [-1, PATCHES * this.options.dim]) as Tensor2D;
    return l2Normalize(this.jigsawHead.forward(concatenated), 1);
  }

  /** f(v_I): [B, H, W, C] images -> [B, dim]. */
  imageEmbedding(view: TensorBatch['views'][string]): Tensor2D {
    return l2Normalize(this.imageHead.forward(this.backbone.features(view)), 1);
  }

  override warmUp(batch: TensorBatch): void {
    this.memory.fill(batch.indices, this.imageEmbedding(batch.views.view!));
  }

  loss(batch: TensorBatch, ctx: StepContext): LossOutput {
    const { temperature, negatives: count, lambda } = this.options;
    const image = this.imageEmbedding(batch.views.view!);
    const jigsaw = this.jigsawEmbedding(batch.views.jigsaw!);
    const memory = this.memory.get(batch.indices);
    const negatives = this.memory.sample(count, new Mulberry32(stepSeed(this.seed, ctx.step)));
    const jigsawTerm = infoNCE(jigsaw, memory, negatives, temperature);
    const imageTerm = infoNCE(image, memory, negatives, temperature);
    const loss = tf.add(tf.mul(jigsawTerm, lambda), tf.mul(imageTerm, 1 - lambda)) as Scalar;
    this.memory.stage(batch.indices, image);
    return { loss, terms: { jigsaw: jigsawTerm, image: imageTerm } };
  }

  override afterStep(): void {
    this.memory.commit();
  }
}

export const pirlSpec = defineMethod({
  names: ['pirl'],
  description: 'PIRL: jigsaw-invariant embeddings against a memory bank',
  options: PIRLOptions,
  resolve: withBankSize,
  create: (name, o, ctx) => new PIRL(withBankSize(name, o, ctx), ctx),
});
