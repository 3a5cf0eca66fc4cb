// ResNet-18/34/50 (He et al. 2016) in torchvision's layout: stride on the 3x3
// conv of a bottleneck (v1.5), 1x1-conv + BN shortcut when the shape changes,
// Kaiming fan-out init for convs. Parameter names match torchvision's.
import { Mulberry32 } from '../core/random.js';
import * as tf from '../core/tf.js';
import type { Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { Module } from './module.js';
import { BatchNorm2d, Conv2d, Linear } from './layers.js';

export type ResNetDepth = 18 | 34 | 50;

export interface ResNetOptions {
  depth?: ResNetDepth;
  /** 'cifar': 3x3 stride-1 conv, no max-pool. 'imagenet': 7x7 stride-2 conv + 3x3 stride-2 max-pool. */
  stem?: 'cifar' | 'imagenet';
  /** Channels of the stem and of res2's 3x3 convs; res3..res5 double it each time (64 = torchvision). */
  width?: number;
  inChannels?: number;
  /** Adds the classifier `fc` on the pooled res5 features when set. */
  numClasses?: number;
  /** Zero gamma in the last BN of each block, so every block starts as the identity. */
  zeroInitResidual?: boolean;
  seed?: number;
}

/** Every stage's output: stem (stride 1 or 4), then res2..res5 (strides x1, x2, x4, x8 of the stem's). */
export type ResNetStages = {
  stem: Tensor4D;
  res2: Tensor4D;
  res3: Tensor4D;
  res4: Tensor4D;
  res5: Tensor4D;
};

type BlockKind = 'basic' | 'bottleneck';
const ARCHITECTURES: Record<ResNetDepth, { block: BlockKind; blocks: [number, number, number, number] }> = {
  18: { block: 'basic', blocks: [2, 2, 2, 2] },
  34: { block: 'basic', blocks: [3, 4, 6, 3] },
  50: { block: 'bottleneck', blocks: [3, 4, 6, 3] },
};
const EXPANSION: Record<BlockKind, number> = { basic: 1, bottleneck: 4 };

interface BlockArgs {
  inChannels: number;
  planes: number;
  stride: number;
  zeroInitResidual: boolean;
  rng: Mulberry32;
}

/** The projection shortcut, named `downsample.0` (conv) and `downsample.1` (BN) as in torchvision. */
class Downsample extends Module {
  private readonly conv: Conv2d;
  private readonly bn: BatchNorm2d;

  constructor(inChannels: number, outChannels: number, stride: number, rng: Mulberry32) {
    super();
    this.conv = this.addModule('0', new Conv2d(inChannels, outChannels, 1, { stride, rng }));
    this.bn = this.addModule('1', new BatchNorm2d(outChannels));
  }

  forward(x: Tensor4D): Tensor4D {
    return this.bn.forward(this.conv.forward(x));
  }
}

abstract class Block extends Module {
  protected readonly downsample: Downsample | undefined;

  constructor({ inChannels, planes, stride, rng }: BlockArgs, kind: BlockKind) {
    super();
    const out = planes * EXPANSION[kind];
    // Registered after the residual branch, in the subclass, to keep torchvision's order.
    this.downsample = stride !== 1 || inChannels !== out ? new Downsample(inChannels, out, stride, rng) : undefined;
  }

  /** relu(residual branch(x) + shortcut), the add and ReLU fused into the branch's last batch norm. */
  protected abstract residual(x: Tensor4D, shortcut: Tensor4D): Tensor4D;

  forward(x: Tensor4D): Tensor4D {
    const shortcut = this.downsample ? this.downsample.forward(x) : x;
    return this.residual(x, shortcut);
  }
}

class BasicBlock extends Block {
  private readonly conv1: Conv2d;
  private readonly bn1: BatchNorm2d;
  private readonly conv2: Conv2d;
  private readonly bn2: BatchNorm2d;

  constructor(args: BlockArgs) {
    super(args, 'basic');
    const { inChannels, planes, stride, zeroInitResidual, rng } = args;
    this.conv1 = this.addModule('conv1', new Conv2d(inChannels, planes, 3, { stride, rng }));
    this.bn1 = this.addModule('bn1', new BatchNorm2d(planes));
    this.conv2 = this.addModule('conv2', new Conv2d(planes, planes, 3, { rng }));
    this.bn2 = this.addModule('bn2', new BatchNorm2d(planes, { zeroInit: zeroInitResidual }));
    if (this.downsample) this.addModule('downsample', this.downsample);
  }

  protected residual(x: Tensor4D, shortcut: Tensor4D): Tensor4D {
    const h = this.bn1.forward(this.conv1.forward(x), { relu: true });
    return this.bn2.forward(this.conv2.forward(h), { residual: shortcut, relu: true });
  }
}

class Bottleneck extends Block {
  private readonly conv1: Conv2d;
  private readonly bn1: BatchNorm2d;
  private readonly conv2: Conv2d;
  private readonly bn2: BatchNorm2d;
  private readonly conv3: Conv2d;
  private readonly bn3: BatchNorm2d;

  constructor(args: BlockArgs) {
    super(args, 'bottleneck');
    const { inChannels, planes, stride, zeroInitResidual, rng } = args;
    this.conv1 = this.addModule('conv1', new Conv2d(inChannels, planes, 1, { rng }));
    this.bn1 = this.addModule('bn1', new BatchNorm2d(planes));
    this.conv2 = this.addModule('conv2', new Conv2d(planes, planes, 3, { stride, rng }));
    this.bn2 = this.addModule('bn2', new BatchNorm2d(planes));
    this.conv3 = this.addModule('conv3', new Conv2d(planes, planes * 4, 1, { rng }));
    this.bn3 = this.addModule('bn3', new BatchNorm2d(planes * 4, { zeroInit: zeroInitResidual }));
    if (this.downsample) this.addModule('downsample', this.downsample);
  }

  protected residual(x: Tensor4D, shortcut: Tensor4D): Tensor4D {
    const h1 = this.bn1.forward(this.conv1.forward(x), { relu: true });
    const h2 = this.bn2.forward(this.conv2.forward(h1), { relu: true });
    return this.bn3.forward(this.conv3.forward(h2), { residual: shortcut, relu: true });
  }
}

/** A run of blocks, children named `0`, `1`, ... (torchvision's `layerN.i`). */
class Stage extends Module {
  private readonly blocks: Block[] = [];

  constructor(kind: BlockKind, count: number, args: BlockArgs) {
    super();
    for (let i = 0; i < count; i++) {
      const blockArgs = i === 0 ? args : { ...args, inChannels: args.planes * EXPANSION[kind], stride: 1 };
      const block = kind === 'basic' ? new BasicBlock(blockArgs) : new Bottleneck(blockArgs);
      this.blocks.push(this.addModule(String(i), block));
    }
  }

  forward(x: Tensor4D): Tensor4D {
    return this.blocks.reduce((h, block) => block.forward(h), x);
  }
}

/**
 * Mean over H and W. As one average pool, not tf.mean: Mean's gradient
 * broadcasts dy against a ones tensor and divides it (three passes over the
 * map), AvgPool's is one native kernel.
 */
export function globalAvgPool(x: Tensor4D): Tensor2D {
  const [n, h, w, c] = x.shape;
  return tf.reshape(tf.avgPool(x, [h, w], [h, w], 'valid'), [n, c]);
}

export class ResNet extends Module {
  readonly stem: 'cifar' | 'imagenet';
  /** Channels of stem, res2..res5. */
  readonly channels: Record<keyof ResNetStages, number>;
  /** Size of the pooled res5 features. */
  readonly featureDim: number;
  readonly fc: Linear | undefined;
  private readonly conv1: Conv2d;
  private readonly bn1: BatchNorm2d;
  private readonly stages: Stage[] = [];

  constructor({
    depth = 18,
    stem = 'imagenet',
    width = 64,
    inChannels = 3,
    numClasses,
    zeroInitResidual = false,
    seed = 0,
  }: ResNetOptions = {}) {
    super();
    const arch = ARCHITECTURES[depth];
    if (!arch) throw new Error(`ResNet: depth must be 18, 34 or 50, got ${depth}`);
    const rng = new Mulberry32(seed);
    this.stem = stem;
    this.conv1 = this.addModule(
      'conv1',
      stem === 'cifar' ? new Conv2d(inChannels, width, 3, { rng }) : new Conv2d(inChannels, width, 7, { stride: 2, rng }),
    );
    this.bn1 = this.addModule('bn1', new BatchNorm2d(width));
    const expansion = EXPANSION[arch.block];
    let channels = width;
    arch.blocks.forEach((count, i) => {
      const planes = width * 2 ** i;
      const args = { inChannels: channels, planes, stride: i === 0 ? 1 : 2, zeroInitResidual, rng };
      this.stages.push(this.addModule(`layer${i + 1}`, new Stage(arch.block, count, args)));
      channels = planes * expansion;
    });
    this.featureDim = channels;
    this.channels = { stem: width, res2: width * expansion, res3: 2 * width * expansion, res4: 4 * width * expansion, res5: channels };
    this.fc = numClasses ? this.addModule('fc', new Linear(channels, numClasses, { rng })) : undefined;
  }

  forward(x: Tensor4D): ResNetStages {
    let stem = this.bn1.forward(this.conv1.forward(x), { relu: true });
    if (this.stem === 'imagenet') stem = tf.maxPool(stem, 3, 2, 1);
    const [res2, res3, res4, res5] = this.stages.reduce<Tensor4D[]>(
      (outs, stage) => [...outs, stage.forward(outs.at(-1) ?? stem)],
      [],
    ) as [Tensor4D, Tensor4D, Tensor4D, Tensor4D];
    return { stem, res2, res3, res4, res5 };
  }

  /** Globally average-pooled res5: [N, featureDim]. */
  features(x: Tensor4D): Tensor2D {
    return globalAvgPool(this.forward(x).res5);
  }

  /** Class scores from `fc`; needs `numClasses`. */
  logits(x: Tensor4D): Tensor2D {
    if (!this.fc) throw new Error('ResNet.logits: built without numClasses, so it has no fc layer');
    return this.fc.forward(this.features(x));
  }
}
