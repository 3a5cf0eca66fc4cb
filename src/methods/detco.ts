// DetCo (Xie et al. 2021): MoCo v2 with hierarchical intermediate contrast
// (HIC) and cross global/local contrast (CGLC). Per stage s of Res2..Res5:
//
//   gg_s = InfoNCE(global_s(x1), global_s^k(x2), globalQueue_s)
//   ll_s = InfoNCE(local_s(x3),  local_s^k(x4),  localQueue_s)
//   lg_s = InfoNCE(local_s(x3),  global_s^k(x2), globalQueue_s)
//   loss = sum_s w_s (gg_s + ll_s + lg_s),  w = 0.1, 0.4, 0.7, 1.0   (eq. 3-5)
//
// x1/x2 are MoCo v2 views, x3/x4 jigsaw sets (3x3 patches of their own
// crops). `hic: false` keeps Res5 only; `cglc: false` keeps gg only; both off
// is the MoCo v2 baseline of the ablation. Defaults as src/methods/moco.ts.
import { Mulberry32 } from '../core/random.js';
import { z } from 'zod';
import * as tf from '../core/tf.js';
import type { Scalar, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { detcoPipeline, type PipelineSpec, type RecipeOptions } from '../data/index.js';
import { infoNCE } from '../losses/info_nce.js';
import { l2Normalize } from '../losses/normalize.js';
import { MLP, withRunningStatsFrozen } from '../nn/layers.js';
import { Module, noGrad } from '../nn/module.js';
import { globalAvgPool, type ResNet, type ResNetStages } from '../nn/resnet.js';
import { Method, defineMethod, type LossOutput, type MethodContext, type StepContext, type TensorBatch } from './method.js';
import { MOCO_V2_TEMPERATURE, MoCoOptions } from './moco.js';
import { EmaPair } from './parts/ema.js';
import { ProjectionHead } from './parts/heads.js';
import { KeyQueue, commitQueues } from './parts/queue.js';
import { shuffledForward, useSplitBatchNorm } from './parts/split_bn.js';

export const STAGES = ['res2', 'res3', 'res4', 'res5'] as const;
export type Stage = (typeof STAGES)[number];
export const STAGE_WEIGHTS: Record<Stage, number> = { res2: 0.1, res3: 0.4, res4: 0.7, res5: 1.0 };
const PATCHES = 9;

export const DetCoOptions = MoCoOptions.extend({
  /** Hierarchical intermediate contrast: every stage, not Res5 only. */
  hic: z.boolean().default(true),
  /** Cross global/local contrast: the ll and lg terms. */
  cglc: z.boolean().default(true),
  /**
   * BN after the local head's hidden layer. Without it the Res4-Res5 local
   * embeddings collapse onto one direction within ~100 steps, leaving ll and lg
   * at chance (docs/experiments.md#2026-12-05-bn-in-the-local-head).
   */
  localBatchNorm: z.boolean().default(true),
}).strict();
export type DetCoOptions = z.infer<typeof DetCoOptions>;

/**
 * Avg-pool each of the 9 patches, concatenate them, MLP to `dim`. Hidden width
 * C (not 9C), as the paper's modest local MLP; BN on the hidden layer (an
 * addition: see DetCoOptions.localBatchNorm).
 */
export class LocalHead extends Module {
  readonly mlp: MLP;
  constructor(channels: number, dim: number, rng: Mulberry32, batchNorm = false) {
    super();
    this.mlp = this.addModule('mlp', new MLP([PATCHES * channels, channels, dim], { rng, batchNorm }));
  }

  /** Pooled patch features [B·9, C] (a sample's 9 patches consecutive, in cell order) -> [B, dim]. */
  forward(pooled: Tensor2D): Tensor2D {
    const [n, c] = pooled.shape;
    if (n % PATCHES !== 0) throw new Error(`LocalHead: ${n} patch features are not whole sets of ${PATCHES}`);
    return this.mlp.forward(tf.reshape(pooled, [n / PATCHES, PATCHES * c]));
  }
}

/** The global and local head of every stage; one module so the key encoder twins it at once. */
export class DetCoHeads extends Module {
  readonly global = {} as Record<Stage, ProjectionHead>;
  readonly local = {} as Record<Stage, LocalHead>;
  constructor(channels: Record<Stage, number>, dim: number, seed: number, localBatchNorm = false) {
    super();
    const rng = new Mulberry32(seed);
    for (const s of STAGES) {
      this.global[s] = this.addModule(`global.${s}`, new ProjectionHead(channels[s], channels[s], dim, { rng }));
      this.local[s] = this.addModule(`local.${s}`, new LocalHead(channels[s], dim, rng, localBatchNorm));
    }
  }
}

type PerStage = Record<Stage, Tensor2D>;

export class DetCo extends Method {
  readonly name = 'detco';
  readonly backbone: ResNet;
  readonly heads: DetCoHeads;
  readonly momentumPairs: [EmaPair<ResNet>, EmaPair<DetCoHeads>];
  readonly globalQueues = {} as Record<Stage, KeyQueue>;
  readonly localQueues = {} as Partial<Record<Stage, KeyQueue>>;
  readonly stages: readonly Stage[];
  readonly stageWeights: Record<Stage, number>;
  private readonly seed: number;
  private readonly recipe: RecipeOptions;

  constructor(readonly o: DetCoOptions, ctx: MethodContext) {
    super();
    this.seed = ctx.seed;
    this.recipe = ctx.recipe;
    this.stages = o.hic ? STAGES : ['res5'];
    this.stageWeights = o.hic ? STAGE_WEIGHTS : { ...STAGE_WEIGHTS, res5: 1 };
    const build = () => useSplitBatchNorm(ctx.backbone(), o.bnSplits);
    this.backbone = this.addModule('backbone', build());
    const buildHeads = () => new DetCoHeads(this.backbone.channels, o.dim, this.seed + 1, o.localBatchNorm);
    this.heads = this.addModule('heads', buildHeads());
    this.momentumPairs = [new EmaPair(this.backbone, build), new EmaPair(this.heads, buildHeads)];
    this.addModule('momentumBackbone', this.momentumPairs[0].target);
    this.addModule('momentumHeads', this.momentumPairs[1].target);
    this.stages.forEach((s, i) => {
      const rng = new Mulberry32(this.seed + 10 + i);
      this.globalQueues[s] = this.addModule(`globalQueue.${s}`, new KeyQueue(o.queueLength, o.dim, { rng }));
      if (o.cglc) this.localQueues[s] = this.addModule(`localQueue.${s}`, new KeyQueue(o.queueLength, o.dim, { rng }));
    });
  }

  /** view1/view2 always; the jigsaw sets only with CGLC. Patches stay in cell order so local features concatenate alike. */
  pipeline(): PipelineSpec {
    const { outputs } = detcoPipeline({ ...this.recipe, shuffle: false });
    return { outputs: this.o.cglc ? outputs : outputs.filter((out) => out.kind === 'view') };
  }

  /** Avg-pooled features of the used stages of `net`. */
  private pooled(net: ResNet, x: Tensor4D): PerStage {
    const maps: ResNetStages = net.forward(x);
    return Object.fromEntries(this.stages.map((s) => [s, globalAvgPool(maps[s])])) as PerStage;
  }

  /**
   * Query embeddings: global of a view, or local of a jigsaw set. Only the
   * global views feed the running BN statistics that evaluation uses (the
   * momentum encoder copies them), so the patches pass with them frozen.
   */
  queries(x: Tensor4D, kind: 'global' | 'local'): PerStage {
    const forward = () => this.pooled(this.backbone, x);
    const f = kind === 'local' ? withRunningStatsFrozen(this.backbone, forward) : forward();
    return Object.fromEntries(this.stages.map((s) => [s, l2Normalize(this.heads[kind][s].forward(f[s]))])) as PerStage;
  }

  /** Key embeddings from the momentum encoder, with shuffle-BN and no gradient. */
  keys(x: Tensor4D, kind: 'global' | 'local', step: number): PerStage {
    const [net, heads] = this.momentumPairs.map((p) => p.target) as [ResNet, DetCoHeads];
    const rng = new Mulberry32(this.seed * 7919 + step * 2 + (kind === 'local' ? 1 : 0));
    return noGrad(() => {
      const sizes = this.stages.map((s) => net.channels[s]);
      const all = shuffledForward(x, rng, (xs) => tf.concat(Object.values(this.pooled(net, xs as Tensor4D)), 1));
      const parts = tf.split(all, sizes, 1) as Tensor2D[];
      return Object.fromEntries(this.stages.map((s, i) => [s, l2Normalize(heads[kind][s].forward(parts[i]!))])) as PerStage;
    });
  }

  loss(batch: TensorBatch, ctx: StepContext): LossOutput {
    const { view1, view2, jigsaw1, jigsaw2 } = batch.views;
    const T = this.o.temperature ?? MOCO_V2_TEMPERATURE;
    const qGlobal = this.queries(view1!, 'global');
    const kGlobal = this.keys(view2!, 'global', ctx.step);
    const qLocal = this.o.cglc ? this.queries(jigsaw1!, 'local') : null;
    const kLocal = this.o.cglc ? this.keys(jigsaw2!, 'local', ctx.step) : null;
    const terms: Record<string, Scalar> = {};
    const weighted: Scalar[] = [];
    for (const s of this.stages) {
      const globalQueue = this.globalQueues[s].keys as Tensor2D;
      terms[`gg_${s}`] = infoNCE(qGlobal[s], kGlobal[s], globalQueue, T);
      this.globalQueues[s].stage(kGlobal[s]);
      if (qLocal && kLocal) {
        terms[`ll_${s}`] = infoNCE(qLocal[s], kLocal[s], this.localQueues[s]!.keys as Tensor2D, T);
        terms[`lg_${s}`] = infoNCE(qLocal[s], kGlobal[s], globalQueue, T);
        this.localQueues[s]!.stage(kLocal[s]);
      }
      const stageTerms = Object.entries(terms).filter(([name]) => name.endsWith(s)).map(([, t]) => t);
      weighted.push(tf.mul(tf.addN(stageTerms), this.stageWeights[s]));
    }
    const loss = tf.addN(weighted) as Scalar;
    return { loss, terms };
  }

  override afterStep(): void {
    for (const pair of this.momentumPairs) pair.update(this.o.momentum);
    // One all-gather for all eight queues when data-parallel.
    commitQueues([...Object.values(this.globalQueues), ...Object.values(this.localQueues)], this.comm);
  }
}

export const detcoSpec = defineMethod({
  names: ['detco'],
  description: 'DetCo: MoCo v2 with hierarchical intermediate and cross global/local contrast',
  options: DetCoOptions,
  resolve: (_name, o) => ({ ...o, temperature: o.temperature ?? MOCO_V2_TEMPERATURE }),
  // Runs from before localBatchNorm have biased local layers and no BN there.
  fromCheckpoint: (o, names) =>
    o.localBatchNorm === undefined && names.some((n) => /^heads\.local\.\w+\.mlp\.fc0\.bias$/.test(n)) ? { ...o, localBatchNorm: false } : o,
  create: (_name, o, ctx) => new DetCo(o, ctx),
});
