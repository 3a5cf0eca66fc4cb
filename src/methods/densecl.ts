// DenseCL (Wang et al. 2021, "Dense contrastive learning for self-supervised
// visual pre-training"), section 3 and the authors' densecl.py: MoCo v2's
// global term plus the same contrast between positions of the res5 maps.
//
//   F_q, F_k = res5 of the query and (momentum, shuffle-BN) key encoders      [B, S, C], S = H·W
//   r_q, r_k = normalise(dense head(F)) per position                          [B, S, D]
//   match(s) = argmax_t cos(F_q[s], F_k[t])     the key position each query position corresponds to,
//                                               from the backbone features (not the projections)
//   L_dense  = InfoNCE(r_q[s], r_k[match(s)], dense queue, T) over every (image, position)
//   L        = (1 - λ) L_global + λ L_dense      λ 0.5
//   after the step: the dense queue takes normalise(mean_s r_k) of each key image
//
// The global branch (head, momentum encoder, key queue, shuffle-BN) is MoCo
// v2's own code; DenseCL adds the dense head, its momentum twin and queue.
// The dense head is the paper's 1x1 conv -> ReLU -> 1x1 conv, as an MLP on
// the map's positions (the same weights at every position).
//
// The paper's values, and ours:
// - λ 0.5, T 0.2, queue 65,536 for each term -> λ 0.5; T and queue length are MoCo v2's here (0.1, 4096), the same for both queues.
// - dense head 2048 -> 2048 -> 128 on a 7x7 map -> featureDim -> featureDim -> 128 on res5 (4x4 at 32 px with the CIFAR stem, 2x2 at 64 px with the ImageNet stem).
// - λ warm-up: none in the paper's final setting (its ablation found none needed).
import { z } from 'zod';
import { Mulberry32 } from '../core/random.js';
import * as tf from '../core/tf.js';
import type { Tensor2D, Tensor3D, Tensor4D } from '@tensorflow/tfjs-core';
import { infoNCE } from '../losses/info_nce.js';
import { l2Normalize } from '../losses/normalize.js';
import { noGrad } from '../nn/module.js';
import { globalAvgPool, type ResNet } from '../nn/resnet.js';
import { defineMethod, type LossOutput, type MethodContext, type StepContext, type TensorBatch } from './method.js';
import { MoCo, MoCoOptions, mocoTemperature } from './moco.js';
import { EmaPair } from './parts/ema.js';
import { ProjectionHead } from './parts/heads.js';
import { KeyQueue } from './parts/queue.js';
import { shuffledForward } from './parts/split_bn.js';

export const DenseCLOptions = MoCoOptions.extend({
  /** λ: the dense term's share of the loss. */
  denseWeight: z.number().min(0).max(1).default(0.5),
}).strict();
export type DenseCLOptions = z.infer<typeof DenseCLOptions>;

/** A map [B, H, W, C] as rows of positions [B, H·W, C]. */
function positions(map: Tensor4D): Tensor3D {
  const [b, h, w, c] = map.shape;
  return tf.reshape(map, [b, h * w, c]);
}

/**
 * The dense InfoNCE: each query position's positive is the key position whose
 * backbone feature is most similar to its own (cosine), its negatives the
 * queue. `qDense`, `kDense` [B, S, D] unit rows; `qFeatures`, `kFeatures`
 * [B, S, C] backbone features (any scale). Returns the loss and the matched
 * key position of each query position [B, S].
 */
export function denseContrast(qDense: Tensor3D, kDense: Tensor3D, qFeatures: Tensor3D, kFeatures: Tensor3D, negatives: Tensor2D, temperature: number) {
  const [b, s, d] = qDense.shape;
  const match = noGrad(() => {
    const similarity = tf.matMul(l2Normalize(qFeatures, 2), l2Normalize(kFeatures, 2), false, true); // [B, S, S]
    return tf.argMax(similarity, 2); // [B, S]
  });
  const positives = tf.gather(kDense, match, 1, 1); // [B, S, D]: batch b's key rows at match[b]
  const loss = infoNCE(tf.reshape(qDense, [b * s, d]), tf.reshape(positives, [b * s, d]), negatives, temperature);
  return { loss, match };
}

export class DenseCL extends MoCo {
  override readonly name = 'densecl';
  readonly denseHead: ProjectionHead;
  readonly denseMomentum: EmaPair<ProjectionHead>;
  readonly denseQueue: KeyQueue;
  readonly denseWeight: number;

  constructor(o: DenseCLOptions, ctx: MethodContext) {
    super('v2', o, ctx);
    this.denseWeight = o.denseWeight;
    const d = this.backbone.featureDim;
    const build = () => new ProjectionHead(d, d, o.dim, { layers: 2, rng: new Mulberry32(ctx.seed + 3) });
    this.denseHead = this.addModule('denseHead', build());
    this.denseMomentum = new EmaPair(this.denseHead, build);
    this.addModule('momentumDenseHead', this.denseMomentum.target);
    this.denseQueue = this.addModule('denseQueue', new KeyQueue(o.queueLength, o.dim, { rng: new Mulberry32(ctx.seed + 4) }));
  }

  /** A head applied at every position of a map, unit rows: [B, S, D]. */
  private dense(head: ProjectionHead, map: Tensor4D): Tensor3D {
    const rows = positions(map);
    const [b, s, c] = rows.shape;
    return l2Normalize(tf.reshape(head.forward(tf.reshape(rows, [b * s, c])), [b, s, -1]), 2);
  }

  override loss(batch: TensorBatch, ctx: StepContext): LossOutput {
    const qMap = this.backbone.forward(batch.views.view1!).res5;
    const q = l2Normalize(this.head.forward(globalAvgPool(qMap)));
    const qDense = this.dense(this.denseHead, qMap);
    const [keyBackbone, keyHead] = this.momentumPairs.map((p) => p.target) as [ResNet, ProjectionHead];
    const { k, kDense, kMap } = noGrad(() => {
      const map = shuffledForward(batch.views.view2!, this.shuffleRng(ctx.step), (x) => keyBackbone.forward(x as Tensor4D).res5);
      return { k: l2Normalize(keyHead.forward(globalAvgPool(map))), kDense: this.dense(this.denseMomentum.target, map), kMap: map };
    });
    this.keyQueue.stage(k);
    this.denseQueue.stage(l2Normalize(tf.mean(kDense, 1)));
    const global = infoNCE(q, k, this.keyQueue.keys as Tensor2D, this.temperature);
    const { loss: dense } = denseContrast(qDense, kDense, positions(qMap), positions(kMap), this.denseQueue.keys as Tensor2D, this.temperature);
    const loss = tf.add(tf.mul(global, 1 - this.denseWeight), tf.mul(dense, this.denseWeight));
    return { loss, terms: { global, dense } } as LossOutput;
  }

  override afterStep(): void {
    super.afterStep();
    this.denseMomentum.update(this.momentum);
    this.denseQueue.commit();
  }
}

export const denseclSpec = defineMethod({
  names: ['densecl'],
  description: 'DenseCL: MoCo v2 plus contrast between corresponding positions of the two views\' res5 maps',
  options: DenseCLOptions,
  resolve: (_name, o) => ({ ...o, temperature: o.temperature ?? mocoTemperature('v2') }),
  create: (_name, o, ctx) => new DenseCL(o, ctx),
});
