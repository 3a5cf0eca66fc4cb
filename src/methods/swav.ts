// SwAV (Caron et al. 2020), section 3.1 and the authors' main_swav.py:
//
//   z_v = normalise(g(f(x_v)))              every crop v: 2 global, L small (multi-crop)
//   s_v = z_v Cᵀ                            scores against K prototypes, C's rows unit length
//   q_i = SinkhornKnopp(s_i, ε, 3 rounds)   codes of the 2 global crops, no gradient,
//                                           over [queue; batch] when the queue is on
//   L   = 1/2 sum_i 1/(V-1) sum_{v != i} -sum_k q_ik log softmax(s_v / T)_k    swapped prediction
//   before each step: C's rows re-normalised; first epoch: C's gradient zeroed
//
// The prototypes are a Linear without bias; our Linear stores [in, out], so a
// prototype is a column of its [D, K] weight. Small crops pass the backbone
// with its running BN statistics frozen (as PIRL's patches): evaluation
// normalises whole 32 px images with whole-image statistics.
//
// The paper's values, and ours for 32 px Fashion-MNIST and short schedules:
// - prototypes 3000 (ImageNet) -> 100: 10 per class, and under a batch of 128, so the batch alone can spread its codes over them.
// - projector 2048 hidden, 128 out -> 512, 32: with more dimensions than prototypes (128 vs 100) the loss sat at ln 100 for 90 steps.
// - T 0.1, ε 0.05, 3 Sinkhorn rounds: the paper's.
// - multi-crop 2x224 + 6x96 px -> 2x32 + 2x16 px (localCrops): each small crop costs a quarter of a global one, and the suite's runs are short.
// - prototypes frozen for 313 iterations (the first epoch at batch 4096) -> the first epoch (freezePrototypesEpochs).
// - queue of 3840 from epoch 15 for batches under 256 -> off (queueLength 0): batch 128 > 100 prototypes; when on, it starts at queueStartEpoch and is used once full, as the paper's.
// - LARS, lr 4.8 at batch 4096 -> the run's optimizer and lr.
import { Mulberry32 } from '../core/random.js';
import { z } from 'zod';
import * as tf from '../core/tf.js';
import type { NamedTensorMap, Scalar, Tensor2D, Tensor4D, Variable } from '@tensorflow/tfjs-core';
import { multiCropPipeline, type PipelineSpec, type RecipeOptions } from '../data/index.js';
import { rowLogSumExp } from '../losses/log_sum_exp.js';
import { detach, l2Normalize } from '../losses/normalize.js';
import { sinkhornKnopp } from '../losses/sinkhorn.js';
import { Linear, withRunningStatsFrozen } from '../nn/layers.js';
import { noGrad } from '../nn/module.js';
import type { ResNet } from '../nn/resnet.js';
import { Method, defineMethod, type LossOutput, type MethodContext, type StepContext, type TensorBatch } from './method.js';
import { ProjectionHead } from './parts/heads.js';
import { KeyQueue } from './parts/queue.js';

/** Crops that get codes (the paper's crops_for_assign): the two global ones. */
const GLOBAL_CROPS = 2;

export const SwAVOptions = z
  .object({
    hiddenDim: z.number().int().positive().default(512),
    outDim: z.number().int().positive().default(32),
    prototypes: z.number().int().min(2).default(100),
    temperature: z.number().positive().default(0.1),
    /** Sinkhorn-Knopp's entropy weight ε. */
    epsilon: z.number().positive().default(0.05),
    sinkhornIterations: z.number().int().positive().default(3),
    /** Small crops per image, besides the two global ones. */
    localCrops: z.number().int().min(0).default(2),
    /** Epochs at the start whose prototype gradients are zeroed. */
    freezePrototypesEpochs: z.number().int().min(0).default(1),
    /** Past global-crop embeddings the codes are spread over with the batch's (0: no queue). */
    queueLength: z.number().int().min(0).default(0),
    /** The epoch the queue starts filling; it is used once full. */
    queueStartEpoch: z.number().int().min(0).default(1),
  })
  .strict();
export type SwAVOptions = z.infer<typeof SwAVOptions>;

/**
 * The swapped-prediction loss: for each code crop i (`codes[i]`, [B, K], rows
 * summing to 1, the targets) and every other crop v (`scores[v]`, [B, K]),
 * the cross-entropy -sum_k q_ik log softmax(s_v / T)_k, averaged over the
 * batch, over the V - 1 other crops and over the code crops. The code crops
 * are the first `codes.length` of `scores`.
 */
export function swappedPrediction(codes: Tensor2D[], scores: Tensor2D[], temperature: number): Scalar {
  if (codes.length === 0 || scores.length < 2 || codes.length > scores.length) {
    throw new Error(`swappedPrediction: needs 1 to ${scores.length} code crops of ${scores.length} >= 2 crops, got ${codes.length}`);
  }
  return tf.tidy(() => {
    const terms: Scalar[] = [];
    codes.forEach((q, i) =>
      scores.forEach((s, v) => {
        if (v === i) return;
        const logits = tf.div(s, temperature) as Tensor2D;
        const logSoftmax = tf.sub(logits, tf.reshape(rowLogSumExp(logits), [-1, 1]));
        terms.push(tf.neg(tf.mean(tf.sum(tf.mul(q, logSoftmax), 1))) as Scalar);
      }),
    );
    return tf.div(tf.addN(terms), terms.length) as Scalar;
  });
}

/** Rows of a crop-interleaved batch ([B·n, K]: sample s's crops at s·n .. s·n + n - 1) split into n crops of [B, K]. */
function byCrop(x: Tensor2D, n: number): Tensor2D[] {
  const [rows, k] = x.shape;
  return tf.split(tf.reshape(tf.transpose(tf.reshape(x, [rows / n, n, k]), [1, 0, 2]), [rows, k]), n, 0) as Tensor2D[];
}

export class SwAV extends Method {
  readonly name = 'swav';
  readonly backbone: ResNet;
  readonly projector: ProjectionHead;
  /** C: [outDim, prototypes], one prototype per column. */
  readonly prototypes: Linear;
  readonly queue: KeyQueue | null;
  /** Rows the queue holds so far (int32 scalar, saved), to use it only once full. */
  private readonly queued: Variable | null;
  private pendingRows = 0;
  private readonly recipe: RecipeOptions;

  constructor(
    readonly options: SwAVOptions,
    ctx: MethodContext,
  ) {
    super();
    const { hiddenDim, outDim, prototypes, queueLength } = options;
    this.recipe = ctx.recipe;
    this.backbone = this.addModule('backbone', ctx.backbone());
    this.projector = this.addModule(
      'projector',
      new ProjectionHead(this.backbone.featureDim, hiddenDim, outDim, { layers: 2, batchNorm: true, rng: new Mulberry32(ctx.seed + 1) }),
    );
    this.prototypes = this.addModule('prototypes', new Linear(outDim, prototypes, { bias: false, rng: new Mulberry32(ctx.seed + 2) }));
    this.normalizePrototypes();
    this.queue = queueLength > 0 ? this.addModule('queue', new KeyQueue(queueLength, outDim, { rng: new Mulberry32(ctx.seed + 3) })) : null;
    this.queued = queueLength > 0 ? this.addBuffer('queued', tf.scalar(0, 'int32')) : null;
  }

  pipeline(): PipelineSpec {
    const spec = multiCropPipeline({ ...this.recipe, localCount: this.options.localCrops });
    return this.options.localCrops > 0 ? spec : { outputs: spec.outputs.filter((o) => o.name !== 'local') };
  }

  /** Unit-length embeddings z of a batch of crops: [N, outDim]. */
  embed(x: Tensor4D): Tensor2D {
    return l2Normalize(this.projector.forward(this.backbone.features(x)), 1);
  }

  /** Prototype scores of backbone features [N, featureDim]: [N, K] (the codes' inputs; argmax is the cluster). */
  prototypeScores(features: Tensor2D): Tensor2D {
    return this.prototypes.forward(l2Normalize(this.projector.forward(features), 1));
  }

  /**
   * The cluster of each of `count` images from their backbone features
   * (row-major [count, dim]): the argmax of their Sinkhorn codes, computed
   * over all of them at once, in eval mode.
   */
  clusters(features: Float32Array, dim: number): Int32Array {
    const restoreModes = this.saveModes();
    this.eval();
    try {
      return tf.tidy(() => Int32Array.from(tf.argMax(sinkhornKnopp(this.prototypeScores(tf.tensor2d(features, [features.length / dim, dim]))), 1).dataSync()));
    } finally {
      restoreModes();
    }
  }

  loss(batch: TensorBatch, ctx: StepContext): LossOutput {
    const { localCrops, temperature, epsilon, sinkhornIterations } = this.options;
    const zGlobal = this.embed(batch.views.global!);
    // A new array: tfjs keeps the one split() returns as its tape record of the outputs.
    const scores = [...byCrop(this.prototypes.forward(zGlobal), GLOBAL_CROPS)];
    if (localCrops > 0) {
      const zLocal = withRunningStatsFrozen(this.backbone, () => this.embed(batch.views.local!));
      scores.push(...byCrop(this.prototypes.forward(zLocal), localCrops));
    }
    const useQueue = this.queueReady(ctx);
    const codes = noGrad(() => {
      const history = useQueue ? (tf.matMul(this.queue!.keys, this.prototypes.weight) as Tensor2D) : null;
      return scores.slice(0, GLOBAL_CROPS).map((s) => {
        const q = sinkhornKnopp(history ? tf.concat([history, s], 0) : s, { epsilon, iterations: sinkhornIterations });
        return history ? (tf.slice(q, [history.shape[0]!, 0], s.shape) as Tensor2D) : q;
      });
    });
    if (this.queue && ctx.epoch >= this.options.queueStartEpoch) {
      this.queue.stage(detach(zGlobal));
      this.pendingRows = zGlobal.shape[0];
    }
    const loss = swappedPrediction(codes, scores, temperature);
    return { loss, terms: { swappedPrediction: loss, queue: tf.scalar(useQueue ? 1 : 0) } };
  }

  /** The queue is on, its epoch has come, and it is full. */
  private queueReady(ctx: StepContext): boolean {
    if (!this.queue || ctx.epoch < this.options.queueStartEpoch) return false;
    return this.queued!.dataSync()[0]! >= this.queue.length;
  }

  private normalizePrototypes(): void {
    tf.tidy(() => this.prototypes.weight.assign(l2Normalize(this.prototypes.weight, 0)));
  }

  override beforeStep(): void {
    this.normalizePrototypes();
  }

  override transformGradients(grads: NamedTensorMap, ctx: StepContext): NamedTensorMap {
    const name = this.prototypes.weight.name;
    if (ctx.epoch >= this.options.freezePrototypesEpochs || !grads[name]) return grads;
    return { ...grads, [name]: tf.zerosLike(grads[name]) };
  }

  override afterStep(): void {
    if (!this.queue || this.pendingRows === 0) return;
    this.queue.commit();
    const filled = Math.min(this.queue.length, this.queued!.dataSync()[0]! + this.pendingRows);
    this.queued!.assign(tf.scalar(filled, 'int32'));
    this.pendingRows = 0;
  }
}

export const swavSpec = defineMethod({
  names: ['swav'],
  description: 'SwAV: multi-crop views predict each other\'s Sinkhorn-Knopp codes over learned prototypes',
  options: SwAVOptions,
  create: (_name, o, ctx) => new SwAV(o, ctx),
});
