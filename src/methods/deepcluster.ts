// DeepCluster (Caron et al. 2018), section 3 and the authors' main.py:
//
//   each epoch's start: f(x) of every training image (no augmentation)
//     -> PCA-whitened to pcaDim -> L2-normalised -> k-means into k clusters
//     -> the clusters are the pseudo-labels; the top layer is re-initialised
//   each step: cross-entropy of top(f(view)) against the image's pseudo-label,
//     batches drawn uniformly over the clusters (parts/clustering.ts)
//
// The trainer extracts the features and calls `recluster`, and takes the
// epoch's order from `epochOrder`; the pseudo-labels are a buffer, so a run
// resumed mid-epoch trains on the labels it had.
//
// The paper's values (AlexNet/VGG on ImageNet), and ours:
// - features: fc7 of AlexNet -> the backbone's pooled res5, the ResNet form mmselfsup and DeepCluster-v2 use.
// - k 10,000 for 1,000 classes -> 100 (10 per class of Fashion-MNIST, as the paper's ratio).
// - PCA to 256 of 4,096 dims -> a quarter of the feature width, at most 256 (pcaDim 0).
// - Sobel filter on the input -> none: our images are grey or clip-art with flat colours, and views have no colour jitter.
// - top layer N(0, 0.01) weights, zero bias, re-initialised after each clustering, its momentum restarted from zero: the
//   paper's (the authors build a fresh SGD for it each epoch).
// - SGD lr 0.05, constant, batch 256, 500 epochs -> the same lr and constant schedule, the run's batch and epochs.
import { z } from 'zod';
import { Mulberry32, Rng } from '../core/random.js';
import * as tf from '../core/tf.js';
import type { Tensor1D, Variable } from '@tensorflow/tfjs-core';
import { deepClusterView, type PipelineSpec, type RecipeOptions } from '../data/index.js';
import { l2NormalizeRows } from '../losses/normalize.js';
import { Linear } from '../nn/layers.js';
import { normal } from '../nn/init.js';
import type { ResNet } from '../nn/resnet.js';
import { Method, defineMethod, type LossOutput, type MethodContext, type Reclustering, type TensorBatch } from './method.js';
import { kMeans, pcaWhiten, uniformOverLabels } from './parts/clustering.js';
import { classificationLoss } from './parts/pretext.js';

const CLUSTER_STREAM = 1;
const SAMPLE_STREAM = 2;
const TOP_LAYER_STREAM = 3;

export const DeepClusterOptions = z
  .object({
    clusters: z.number().int().min(2).default(100),
    /** Dimensions kept by the PCA-whitening; 0: a quarter of the feature width, at most 256. */
    pcaDim: z.number().int().min(0).default(0),
    kmeansIterations: z.number().int().positive().default(20),
  })
  .strict();
export type DeepClusterOptions = z.infer<typeof DeepClusterOptions>;

/** The PCA width `pcaDim` means for features of width `dim`. */
export function clusteringDim(pcaDim: number, dim: number): number {
  if (pcaDim > dim) throw new Error(`deepcluster: pcaDim ${pcaDim} is wider than the features (${dim})`);
  return pcaDim > 0 ? pcaDim : Math.min(256, Math.max(1, Math.floor(dim / 4)));
}

export class DeepCluster extends Method {
  readonly name = 'deepcluster';
  readonly backbone: ResNet;
  /** The classifier over the clusters, re-initialised after each clustering. */
  readonly top: Linear;
  /** Cluster of each training image (int32; -1 before the first clustering). */
  readonly pseudoLabels: Variable;
  private readonly recipe: RecipeOptions;
  private readonly seed: number;

  constructor(
    readonly options: DeepClusterOptions,
    ctx: MethodContext,
  ) {
    super();
    this.recipe = ctx.recipe;
    this.seed = ctx.seed;
    this.backbone = this.addModule('backbone', ctx.backbone());
    this.top = this.addModule('top', new Linear(this.backbone.featureDim, options.clusters, { rng: new Mulberry32(ctx.seed + 1) }));
    this.pseudoLabels = this.addBuffer('pseudoLabels', tf.fill([ctx.datasetSize], -1, 'int32'));
    if (options.clusters > ctx.datasetSize) throw new Error(`deepcluster: ${options.clusters} clusters for ${ctx.datasetSize} training images`);
  }

  pipeline(): PipelineSpec {
    return { outputs: [{ kind: 'view', name: 'view', view: deepClusterView(this.recipe) }] };
  }

  override recluster(features: Float32Array, dim: number, epoch: number): Reclustering {
    const n = features.length / dim;
    const labels = this.labels();
    if (n !== labels.length) throw new Error(`deepcluster: features of ${n} images for a training set of ${labels.length}`);
    const { clusters, pcaDim, kmeansIterations } = this.options;
    const whitened = pcaWhiten({ data: features, n, dim }, clusteringDim(pcaDim, dim));
    const points = { ...whitened, data: l2NormalizeRows(whitened.data, whitened.dim) };
    const rng = Rng.seeded(this.seed).split(CLUSTER_STREAM).split(epoch);
    const { assignments, inertia, emptyReseeded } = kMeans(points, clusters, { iterations: kmeansIterations, rng });
    const previous = labels.some((l) => l < 0) ? null : labels;
    this.pseudoLabels.assign(tf.tensor1d(assignments, 'int32'));
    this.resetTop(epoch);
    const used = new Set(assignments).size;
    return {
      assignments,
      previous,
      summary: `k-means of ${n} x ${points.dim} (PCA-whitened from ${dim}): ${used}/${clusters} clusters used, inertia ${inertia.toFixed(4)}, ${emptyReseeded} empty re-seeded`,
      // The authors build a fresh SGD for the new top layer; the old one's momentum points at other clusters.
      resetOptimizerState: ['top.'],
    };
  }

  override epochOrder(epoch: number, count: number): Int32Array {
    const labels = this.labels();
    if (count !== labels.length) throw new Error(`deepcluster: an epoch of ${count} images for ${labels.length} pseudo-labels`);
    if (labels.some((l) => l < 0)) throw new Error('deepcluster: an epoch began before the first clustering');
    return uniformOverLabels(labels, this.options.clusters, Rng.seeded(this.seed).split(SAMPLE_STREAM).split(epoch));
  }

  loss(batch: TensorBatch): LossOutput {
    const labels = this.labels();
    const targets = Int32Array.from(batch.indices, (i) => labels[i]!);
    if (targets.some((l) => l < 0)) throw new Error('deepcluster: a batch came before the first clustering');
    const logits = this.top.forward(this.backbone.features(batch.views.view!));
    const { loss, accuracy } = classificationLoss(logits, tf.tensor1d(targets, 'int32') as Tensor1D);
    return { loss, terms: { ce: loss, accuracy } };
  }

  private labels(): Int32Array {
    return this.pseudoLabels.dataSync() as Int32Array;
  }

  /** The paper's fresh top layer: N(0, 0.01) weights, zero bias, drawn from (seed, epoch). */
  private resetTop(epoch: number): void {
    const rng = Rng.seeded(this.seed).split(TOP_LAYER_STREAM).split(epoch);
    tf.tidy(() => {
      this.top.weight.assign(normal(this.top.weight.shape, 0.01, rng));
      this.top.bias!.assign(tf.zerosLike(this.top.bias!));
    });
  }
}

export const deepClusterSpec = defineMethod({
  names: ['deepcluster'],
  description: 'DeepCluster: k-means of the features each epoch, then classify the images into their clusters',
  options: DeepClusterOptions,
  // The paper's constant rate: the top layer is new each epoch, and a rate decayed to ~0 leaves the last epochs' one unlearnt.
  recipe: { lr: 0.05, schedule: 'constant' },
  create: (_name, o, ctx) => new DeepCluster(o, ctx),
});
