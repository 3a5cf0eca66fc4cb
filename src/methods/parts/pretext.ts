// What the pretext-task methods (RotNet, the jigsaw puzzle, relative
// location) share: every image of a sample through the backbone, the pooled
// features of the sample's images concatenated in slot order, a classifier
// over them, and softmax cross-entropy against a label the pipeline drew (aux
// `<output>.label`). The pretext accuracy is logged as the `accuracy` term.
// The papers' heads are an fc6 on each image's features (shared), the
// results concatenated, then fc7 (4096 wide) and fc8; ours is an optional
// per-image Linear -> BN -> ReLU of `partDim` (0: none), then an MLP of
// `hiddenDim` (0: linear).
import { z } from 'zod';
import { Mulberry32 } from '../../core/random.js';
import * as tf from '../../core/tf.js';
import type { Scalar, Tensor1D, Tensor2D } from '@tensorflow/tfjs-core';
import type { RecipeOptions } from '../../data/index.js';
import { softmaxCrossEntropyMean } from '../../losses/detection.js';
import { MLP } from '../../nn/layers.js';
import { Module } from '../../nn/module.js';
import type { ResNet } from '../../nn/resnet.js';
import { Method, type LossOutput, type MethodContext, type TensorBatch } from '../method.js';

/** A width of a pretext head's layer, 0 leaving the layer out: `hiddenDim` (0: one Linear) and `partDim` (0: no per-image layer). */
export const pretextHeadField = (width: number) => z.number().int().min(0).default(width);

/**
 * Default patch side of the grid tasks: a quarter of the view (8 px at 32, 16
 * at 64), about the size a cell's sub-crop has in the view, so patches reach
 * the backbone at the scale whole images do, as the papers' patches are cut
 * at the image's own resolution. `perView` 2 (relative location) zooms them
 * twice.
 */
export function pretextPatchSize(recipe: RecipeOptions, perView = 4): number {
  return Math.max(4, Math.round((recipe.size ?? 32) / perView));
}

/** A grid task's spec `fromCheckpoint`: runs from before `partDim` have no per-image layer. */
export function partDimFromCheckpoint(o: Record<string, unknown>, names: readonly string[]): Record<string, unknown> {
  return o.partDim === undefined && !names.some((n) => n.startsWith('head.part.')) ? { ...o, partDim: 0 } : o;
}

/** Side of each patch of a grid task in pixels; unset means pretextPatchSize, which resolvePatchSize records when a run starts. */
export const pretextPatchField = () => z.number().int().min(4).optional();

/** A grid task's spec `resolve`: the patch side the run records. */
export function resolvePatchSize<O extends { patchSize?: number | undefined }>(_name: string, o: O, ctx: MethodContext): O {
  return { ...o, patchSize: o.patchSize ?? pretextPatchSize(ctx.recipe) };
}

/** Classifies a sample from its `parts` images' pooled features: [B·parts, C] (a sample's rows consecutive) -> [B, classes]. */
export class ConcatClassifier extends Module {
  /** The per-image layer (Linear -> BN -> ReLU), when partDim > 0. */
  readonly part: MLP | undefined;
  readonly mlp: MLP;

  constructor(readonly parts: number, featureDim: number, readonly classes: number, hiddenDim: number, rng: Mulberry32, partDim = 0) {
    super();
    this.part = partDim > 0 ? this.addModule('part', new MLP([featureDim, partDim], { lastBatchNorm: true, lastRelu: true, rng })) : undefined;
    const width = parts * (partDim > 0 ? partDim : featureDim);
    const dims = hiddenDim > 0 ? [width, hiddenDim, classes] : [width, classes];
    this.mlp = this.addModule('mlp', new MLP(dims, { batchNorm: true, rng }));
  }

  forward(pooled: Tensor2D): Tensor2D {
    const n = pooled.shape[0];
    if (n % this.parts !== 0) throw new Error(`ConcatClassifier: ${n} feature rows are not whole sets of ${this.parts}`);
    const perImage = this.part ? this.part.forward(pooled) : pooled;
    return this.mlp.forward(tf.reshape(perImage, [n / this.parts, this.parts * perImage.shape[1]]));
  }
}

/** Mean softmax cross-entropy of `logits` [N, K] against integer `labels` [N], and the top-1 accuracy (no gradient). */
export function classificationLoss(logits: Tensor2D, labels: Tensor1D): { loss: Scalar; accuracy: Scalar } {
  const host = labels.dataSync() as Int32Array;
  if (host.some((l) => !(l >= 0 && l < logits.shape[1]))) throw new Error(`classificationLoss: labels outside 0-${logits.shape[1] - 1}`);
  const loss = softmaxCrossEntropyMean(logits, Int32Array.from(host));
  const accuracy = tf.tidy(() => tf.mean(tf.cast(tf.equal(tf.argMax(logits, 1), tf.cast(labels, 'int32')), 'float32')) as Scalar);
  return { loss, accuracy };
}

/** One pretext task: which pipeline output holds the images, how many per sample, how many classes. */
export interface PretextTask {
  /** The pipeline output; its label is aux `<output>.label`, one per `parts` images. */
  output: string;
  parts: number;
  classes: number;
  hiddenDim: number;
  /** Width of the per-image layer before the concatenation; 0 or absent for none. */
  partDim?: number;
}

/** A pretext method: the backbone, a ConcatClassifier `head` and the cross-entropy of its task. */
export abstract class PretextMethod extends Method {
  readonly backbone: ResNet;
  readonly head: ConcatClassifier;
  protected readonly recipe: RecipeOptions;

  protected constructor(readonly task: PretextTask, ctx: MethodContext) {
    super();
    this.recipe = ctx.recipe;
    this.backbone = this.addModule('backbone', ctx.backbone());
    const rng = new Mulberry32(ctx.seed + 1);
    this.head = this.addModule('head', new ConcatClassifier(task.parts, this.backbone.featureDim, task.classes, task.hiddenDim, rng, task.partDim));
  }

  /** The head's logits for a batch: [B, classes]. */
  logits(batch: TensorBatch): Tensor2D {
    const images = batch.views[this.task.output];
    if (!images) throw new Error(`${this.name}: the batch has no '${this.task.output}' images`);
    return this.head.forward(this.backbone.features(images));
  }

  loss(batch: TensorBatch): LossOutput {
    const labels = batch.aux[`${this.task.output}.label`];
    if (!labels) throw new Error(`${this.name}: the batch has no '${this.task.output}.label'`);
    const { loss, accuracy } = classificationLoss(this.logits(batch), labels as Tensor1D);
    return { loss, terms: { ce: loss, accuracy } };
  }
}
