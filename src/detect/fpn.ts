// Feature Pyramid Network (Lin et al. 2017) over the ResNet's res2..res5, as
// detectron2's FPN with norm: a 1x1 lateral conv + BN per stage, the top-down
// path adding 2x nearest-upsampled coarser maps, and a 3x3 output conv + BN,
// giving P2..P5 with F channels each. No P6: at 128 px it would be a 2x2 map
// carrying only anchors larger than the image (docs/detection.md).
import * as tf from '../core/tf.js';
import type { GradSaveFunc, Tensor, Tensor4D } from '@tensorflow/tfjs-core';
import type { Mulberry32 } from '../core/random.js';
import { xavierFanInUniform } from '../nn/init.js';
import { BatchNorm2d, Conv2d } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import type { ResNetStages } from '../nn/resnet.js';

export const FPN_LEVELS = ['p2', 'p3', 'p4', 'p5'] as const;
const STAGES = ['res2', 'res3', 'res4', 'res5'] as const;

export type Pyramid = [Tensor4D, Tensor4D, Tensor4D, Tensor4D];

/** A conv with detectron2's c2_xavier_fill weights and a zero bias (if any). */
export function xavierConv(inChannels: number, outChannels: number, kernelSize: number, rng: Mulberry32, bias = false): Conv2d {
  const conv = new Conv2d(inChannels, outChannels, kernelSize, { rng, bias });
  conv.weight.assign(xavierFanInUniform(conv.weight.shape, inChannels * kernelSize * kernelSize, rng));
  conv.bias?.assign(tf.zerosLike(conv.bias));
  return conv;
}

/**
 * x [N, H, W, C] -> [N, 2H, 2W, C], each value repeated 2x2 (nearest
 * neighbour). Its gradient sums each 2x2 block, written out: tfjs's Tile
 * gradient stops at rank 4 and its ResizeNearestNeighbor runs in plain JS.
 */
export const upsample2x = tf.customGrad((...args: unknown[]) => {
  const save = args.pop() as GradSaveFunc;
  const x = args[0] as Tensor4D;
  const [n, h, w, c] = x.shape as [number, number, number, number];
  save([]);
  const wide = tf.tile(tf.reshape(x, [n * h, w, 1, c]), [1, 1, 2, 1]);
  const tall = tf.tile(tf.reshape(wide, [n, h, 1, 2 * w * c]), [1, 1, 2, 1]);
  return {
    value: tf.reshape(tall, [n, 2 * h, 2 * w, c]),
    gradFunc: (dy: Tensor) => tf.sum(tf.reshape(dy, [n, h, 2, w, 2, c]), [2, 4]),
  };
}) as (x: Tensor4D) => Tensor4D;

class ConvNorm extends Module {
  readonly conv: Conv2d;
  readonly norm: BatchNorm2d;
  constructor(inChannels: number, outChannels: number, kernelSize: number, rng: Mulberry32) {
    super();
    this.conv = this.addModule('conv', xavierConv(inChannels, outChannels, kernelSize, rng));
    this.norm = this.addModule('norm', new BatchNorm2d(outChannels));
  }
  forward(x: Tensor4D): Tensor4D {
    return this.norm.forward(this.conv.forward(x));
  }
}

export class FPN extends Module {
  private readonly laterals: ConvNorm[];
  private readonly outputs: ConvNorm[];

  constructor(inChannels: Record<(typeof STAGES)[number], number>, readonly channels: number, rng: Mulberry32) {
    super();
    this.laterals = STAGES.map((s, i) => this.addModule(`lateral${i + 2}`, new ConvNorm(inChannels[s], channels, 1, rng)));
    this.outputs = STAGES.map((_, i) => this.addModule(`output${i + 2}`, new ConvNorm(channels, channels, 3, rng)));
  }

  forward(stages: ResNetStages): Pyramid {
    const out: Tensor4D[] = [];
    let top: Tensor4D | undefined;
    for (let i = STAGES.length - 1; i >= 0; i--) {
      const lateral = this.laterals[i]!.forward(stages[STAGES[i]!]);
      const merged: Tensor4D = top ? tf.add(lateral, upsample2x(top)) : lateral;
      out[i] = this.outputs[i]!.forward(merged);
      top = merged;
    }
    return out as Pyramid;
  }
}
