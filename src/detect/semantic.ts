// Semantic segmentation on the FPN (detectron2's SemSegFPNHead, with BN as
// MoCo and DetCo configure norms): each of P2..P5 goes through 3x3 conv + BN
// + ReLU blocks, upsampled 2x after each until it reaches P2's stride, the
// maps are summed, a 1x1 conv gives class logits, and a bilinear upsampling
// brings them to the image. Pixel-wise softmax cross-entropy. Independent of
// the detector, so mIoU does not depend on box or mask quality.
import * as tf from '../core/tf.js';
import type { Scalar, Tensor4D } from '@tensorflow/tfjs-core';
import { Mulberry32 } from '../core/random.js';
import { softmaxCrossEntropyMean } from '../losses/detection.js';
import { kaimingNormalFanOut, normal } from '../nn/init.js';
import { BatchNorm2d, Conv2d } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import type { ResNet } from '../nn/resnet.js';
import { FPN, upsample2x, type Pyramid } from './fpn.js';

class ConvBnRelu extends Module {
  private readonly conv: Conv2d;
  private readonly norm: BatchNorm2d;
  constructor(inChannels: number, outChannels: number, rng: Mulberry32) {
    super();
    this.conv = this.addModule('conv', new Conv2d(inChannels, outChannels, 3, { rng }));
    this.conv.weight.assign(kaimingNormalFanOut(this.conv.weight.shape as [number, number, number, number], rng));
    this.norm = this.addModule('norm', new BatchNorm2d(outChannels));
  }
  forward(x: Tensor4D): Tensor4D {
    return this.norm.forward(this.conv.forward(x), { relu: true });
  }
}

export class SemanticFPN extends Module {
  readonly backbone: ResNet;
  readonly fpn: FPN;
  private readonly heads: ConvBnRelu[][];
  private readonly predictor: Conv2d;

  /** `numClasses` counts background (class 0). */
  constructor(backbone: ResNet, readonly numClasses: number, channels: number, seed: number) {
    super();
    const rng = new Mulberry32(seed);
    this.backbone = this.addModule('backbone', backbone);
    this.fpn = this.addModule('fpn', new FPN(backbone.channels, channels, rng));
    // Level k (P2 = 0) needs k 2x upsamplings, one block each (one block for P2).
    this.heads = [0, 1, 2, 3].map((level) =>
      Array.from({ length: Math.max(1, level) }, (_, j) => this.addModule(`head${level + 2}_${j}`, new ConvBnRelu(channels, channels, rng))),
    );
    this.predictor = this.addModule('predictor', new Conv2d(channels, numClasses, 1, { rng, bias: true }));
    this.predictor.weight.assign(normal(this.predictor.weight.shape, 0.001, rng));
    this.predictor.bias!.assign(tf.zerosLike(this.predictor.bias!));
  }

  /** Frees everything but the backbone, which belongs to whoever passed it in. */
  disposeHeads(): void {
    this.fpn.dispose();
    for (const block of this.heads.flat()) block.dispose();
    this.predictor.dispose();
  }

  pyramid(images: Tensor4D): Pyramid {
    return this.fpn.forward(this.backbone.forward(images));
  }

  /** Class logits at the image's resolution, [N, H, W, K]. */
  forward(images: Tensor4D): Tensor4D {
    const [, height, width] = images.shape;
    const pyramid = this.pyramid(images);
    const summed = pyramid
      .map((p, level) => this.heads[level]!.reduce((x, block) => (level > 0 ? upsample2x(block.forward(x)) : block.forward(x)), p))
      .reduce((a, b) => tf.add(a, b));
    const logits = this.predictor.forward(summed);
    if (logits.shape[1] === height && logits.shape[2] === width) return logits;
    // align_corners=False in PyTorch is tfjs's halfPixelCenters.
    return tf.image.resizeBilinear(logits, [height, width], false, true);
  }

  /** Mean pixel-wise cross-entropy against class maps (0 = background), N*H*W labels. */
  loss(images: Tensor4D, labels: Int32Array): Scalar {
    const logits = this.forward(images);
    return softmaxCrossEntropyMean(tf.reshape(logits, [-1, this.numClasses]), labels);
  }
}
