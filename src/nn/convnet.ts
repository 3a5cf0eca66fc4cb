// The 3-conv CNN of the bench and of docs/architecture.md's engine comparison:
// 3x3 convs 32 (stride 1), 64 (stride 2), 128 (stride 2), each + BN + ReLU,
// global average pool, linear classifier.
import { Mulberry32 } from '../core/random.js';
import type { Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { Module } from './module.js';
import { BatchNorm2d, Conv2d, Linear } from './layers.js';
import { globalAvgPool } from './resnet.js';

export interface ConvNetOptions {
  inChannels?: number;
  numClasses?: number;
  seed?: number;
}

const LAYERS = [
  { channels: 32, stride: 1 },
  { channels: 64, stride: 2 },
  { channels: 128, stride: 2 },
];

export class ConvNet extends Module {
  readonly featureDim = 128;
  readonly fc: Linear;
  private readonly convs: Conv2d[] = [];
  private readonly norms: BatchNorm2d[] = [];

  constructor({ inChannels = 3, numClasses = 10, seed = 0 }: ConvNetOptions = {}) {
    super();
    const rng = new Mulberry32(seed);
    let channels = inChannels;
    LAYERS.forEach(({ channels: out, stride }, i) => {
      this.convs.push(this.addModule(`conv${i + 1}`, new Conv2d(channels, out, 3, { stride, rng })));
      this.norms.push(this.addModule(`bn${i + 1}`, new BatchNorm2d(out)));
      channels = out;
    });
    this.fc = this.addModule('fc', new Linear(channels, numClasses, { rng }));
  }

  features(x: Tensor4D): Tensor2D {
    const h = this.convs.reduce((h, conv, i) => this.norms[i]!.forward(conv.forward(h), { relu: true }), x);
    return globalAvgPool(h);
  }

  logits(x: Tensor4D): Tensor2D {
    return this.fc.forward(this.features(x));
  }
}
