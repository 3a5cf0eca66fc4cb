// The layers ResNets, ConvNets and SSL heads are built from. Inputs are NHWC
// (channels last) throughout; conv weights are HWIO and Linear weights [in, out].
import { Mulberry32 } from '../core/random.js';
import * as tf from '../core/tf.js';
import type { Tensor, Tensor1D, Tensor2D, Tensor4D, Variable } from '@tensorflow/tfjs-core';
import { applyEpilogue, batchNormTrain, type BatchNormEpilogue } from '../backend/ops.js';
import { Module, noGrad } from './module.js';
import { fanInUniform, kaimingNormalFanOut } from './init.js';

/** Used when a layer is built without an `rng`; models take a `seed` instead. */
const sharedRng = new Mulberry32(0);

export const relu = <T extends Tensor>(x: T): T => tf.relu(x);

export class Identity extends Module {
  forward<T extends Tensor>(x: T): T {
    return x;
  }
}

export interface Conv2dOptions {
  stride?: number;
  /** Zero padding on every side (PyTorch `padding`); default kernelSize // 2. */
  padding?: number;
  /** Default false: our convs feed a BN, which has its own shift. */
  bias?: boolean;
  rng?: Mulberry32;
}

/**
 * 2-D convolution, square kernel. Padding is explicit and symmetric as in
 * PyTorch; tfjs 'same' would pad only bottom/right for stride 2 and shift the
 * sampling grid.
 */
export class Conv2d extends Module {
  readonly weight: Variable;
  readonly bias: Variable | undefined;
  readonly stride: number;
  readonly padding: number;

  constructor(
    readonly inChannels: number,
    readonly outChannels: number,
    readonly kernelSize: number,
    { stride = 1, padding = Math.floor(kernelSize / 2), bias = false, rng = sharedRng }: Conv2dOptions = {},
  ) {
    super();
    this.stride = stride;
    this.padding = padding;
    this.weight = this.addParameter('weight', kaimingNormalFanOut([kernelSize, kernelSize, inChannels, outChannels], rng));
    const fanIn = inChannels * kernelSize * kernelSize;
    this.bias = bias ? this.addParameter('bias', fanInUniform([outChannels], fanIn, rng), { decay: false }) : undefined;
  }

  forward(x: Tensor4D): Tensor4D {
    const p = this.padding;
    const y = tf.conv2d(x, this.weight as Tensor4D, this.stride, [[0, 0], [p, p], [p, p], [0, 0]]);
    return this.bias ? tf.add<Tensor4D>(y, this.bias) : y;
  }
}

/**
 * Transposed convolution with kernel = stride (no overlap), as the mask head's
 * 2x upsampling; weights [k, k, out, in], the tfjs conv2dTranspose layout.
 */
export class ConvTranspose2d extends Module {
  readonly weight: Variable;
  readonly bias: Variable;

  constructor(readonly inChannels: number, readonly outChannels: number, readonly kernelSize: number, { rng = sharedRng }: { rng?: Mulberry32 } = {}) {
    super();
    // PyTorch computes fan_in of a transposed conv's [in, out, k, k] weight as out * k * k.
    const fanIn = outChannels * kernelSize * kernelSize;
    this.weight = this.addParameter('weight', kaimingNormalFanOut([kernelSize, kernelSize, outChannels, inChannels], rng));
    this.bias = this.addParameter('bias', fanInUniform([outChannels], fanIn, rng), { decay: false });
  }

  forward(x: Tensor4D): Tensor4D {
    const [n, h, w] = x.shape;
    const k = this.kernelSize;
    const y = tf.conv2dTranspose(x, this.weight as Tensor4D, [n, h * k, w * k, this.outChannels], k, 'valid');
    return tf.add<Tensor4D>(y, this.bias);
  }
}

export interface BatchNormOptions {
  eps?: number;
  /** Running-stat update weight of the new batch, PyTorch's convention. */
  momentum?: number;
  /** Start gamma at 0, so a residual branch starts as the identity (Goyal et al. 2017). */
  zeroInit?: boolean;
}

/**
 * Batch norm over every axis but the last, so it serves NHWC maps and [N, C]
 * features alike. Training mode normalises with batch statistics and updates
 * the running ones; eval mode uses the running ones.
 */
export class BatchNorm2d extends Module {
  readonly weight: Variable;
  readonly bias: Variable;
  readonly runningMean: Variable;
  readonly runningVar: Variable;
  readonly eps: number;
  /** Weight of each batch in the running statistics (estimateRunningStats varies it). */
  momentum: number;
  /** False while a pass should leave the running statistics alone (withRunningStatsFrozen). */
  tracksRunningStats = true;

  constructor(readonly numFeatures: number, { eps = 1e-5, momentum = 0.1, zeroInit = false }: BatchNormOptions = {}) {
    super();
    this.eps = eps;
    this.momentum = momentum;
    this.weight = this.addParameter('weight', zeroInit ? tf.zeros([numFeatures]) : tf.ones([numFeatures]), { decay: false });
    this.bias = this.addParameter('bias', tf.zeros([numFeatures]), { decay: false });
    this.runningMean = this.addBuffer('running_mean', tf.zeros([numFeatures]));
    this.runningVar = this.addBuffer('running_var', tf.ones([numFeatures]));
  }

  /** With an epilogue, relu(bn(x) + residual): fused into the batch norm's own pass in training mode. */
  forward<T extends Tensor>(x: T, epilogue: BatchNormEpilogue = {}): T {
    if (!this.training) {
      return tf.tidy(() => applyEpilogue(tf.batchNorm(x, this.runningMean, this.runningVar, this.bias, this.weight, this.eps) as T, epilogue));
    }
    const { y, mean, variance } = batchNormTrain(x, this.weight as Tensor1D, this.bias as Tensor1D, this.eps, 1, epilogue);
    this.updateRunningStats(mean, variance, x.size / this.numFeatures);
    return y as T;
  }

  /** running = (1 - m) running + m batch, with the unbiased (n - 1) batch variance, as PyTorch. */
  private updateRunningStats(mean: Tensor1D, variance: Tensor1D, n: number): void {
    if (this.tracksRunningStats) noGrad(() =>
      tf.tidy(() => {
        const m = this.momentum;
        const unbiased = tf.mul(variance, n / Math.max(n - 1, 1));
        this.runningMean.assign(tf.add(tf.mul(this.runningMean, 1 - m), tf.mul(mean, m)));
        this.runningVar.assign(tf.add(tf.mul(this.runningVar, 1 - m), tf.mul(unbiased, m)));
      }),
    );
    mean.dispose();
    variance.dispose();
  }
}

/** Same layer for [N, C] features. */
export class BatchNorm1d extends BatchNorm2d {}

/** Every BatchNorm in `module`, itself included. */
function batchNormLayers(module: Module): BatchNorm2d[] {
  return module.namedModules().map(([, m]) => m).filter((m): m is BatchNorm2d => m instanceof BatchNorm2d);
}

/**
 * Runs `fn` with every BatchNorm in `module` normalising by batch statistics as
 * usual while its running statistics, the ones evaluation uses, stay as they
 * are. For passes over inputs unlike the images the features are judged on:
 * PIRL's and DetCo's 16 px jigsaw patches would otherwise make up half of the
 * running estimates that a 32 px test image is normalised with.
 */
export function withRunningStatsFrozen<T>(module: Module, fn: () => T): T {
  const layers = batchNormLayers(module).filter((bn) => bn.tracksRunningStats);
  for (const bn of layers) bn.tracksRunningStats = false;
  try {
    return fn();
  } finally {
    for (const bn of layers) bn.tracksRunningStats = true;
  }
}

/**
 * Replaces the running statistics of every BatchNorm in `module` with the
 * plain average of the batch statistics of `batches` training-mode passes,
 * `forward(0)` .. `forward(batches - 1)` (momentum 1/(b+1) at pass b): the
 * "precise BN" of Wu & Johnson 2021 and pycls. Modes and momenta are restored.
 */
export function estimateRunningStats(module: Module, batches: number, forward: (batch: number) => void): void {
  const layers = batchNormLayers(module);
  const restoreModes = module.saveModes();
  const momenta = layers.map((bn) => bn.momentum);
  module.train();
  try {
    for (let b = 0; b < batches; b++) {
      for (const bn of layers) bn.momentum = 1 / (b + 1);
      forward(b);
    }
  } finally {
    layers.forEach((bn, i) => (bn.momentum = momenta[i]!));
    restoreModes();
  }
}

/** y = x W + b with W [in, out]; PyTorch's default init U(+-1/sqrt(in)) for both. */
export class Linear extends Module {
  readonly weight: Variable;
  readonly bias: Variable | undefined;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    { bias = true, rng = sharedRng }: { bias?: boolean; rng?: Mulberry32 } = {},
  ) {
    super();
    this.weight = this.addParameter('weight', fanInUniform([inFeatures, outFeatures], inFeatures, rng));
    this.bias = bias ? this.addParameter('bias', fanInUniform([outFeatures], inFeatures, rng), { decay: false }) : undefined;
  }

  forward(x: Tensor2D): Tensor2D {
    const y: Tensor2D = tf.matMul(x, this.weight as Tensor2D);
    return this.bias ? tf.add<Tensor2D>(y, this.bias) : y;
  }
}

export interface MlpOptions {
  /** BN after every hidden Linear (SimCLR, BYOL heads); those Linears drop their bias. */
  batchNorm?: boolean;
  /** BN after the last Linear too (SimCLR v2, SimSiam projector). */
  lastBatchNorm?: boolean;
  /** ReLU after the last Linear [and BN] too (a pretext head's per-image fc6), fused into the BN when there is one. */
  lastRelu?: boolean;
  rng?: Mulberry32;
}

/** Linear -> [BN] -> ReLU, repeated, then a last Linear [-> BN] [-> ReLU]. dims = [in, hidden..., out]. */
export class MLP extends Module {
  private readonly linears: Linear[] = [];
  private readonly norms: Array<BatchNorm1d | undefined> = [];

  private readonly lastRelu: boolean;

  constructor(readonly dims: number[], { batchNorm = false, lastBatchNorm = false, lastRelu = false, rng = sharedRng }: MlpOptions = {}) {
    super();
    this.lastRelu = lastRelu;
    if (dims.length < 2) throw new Error(`MLP: need at least input and output sizes, got [${dims}]`);
    for (let i = 0; i + 1 < dims.length; i++) {
      const withBn = i + 2 < dims.length ? batchNorm : lastBatchNorm;
      this.linears.push(this.addModule(`fc${i}`, new Linear(dims[i]!, dims[i + 1]!, { bias: !withBn, rng })));
      this.norms.push(withBn ? this.addModule(`bn${i}`, new BatchNorm1d(dims[i + 1]!)) : undefined);
    }
  }

  forward(x: Tensor2D): Tensor2D {
    let h = x;
    this.linears.forEach((linear, i) => {
      const withRelu = i + 1 < this.linears.length || this.lastRelu;
      const norm = this.norms[i];
      h = linear.forward(h);
      if (norm) h = norm.forward(h, { relu: withRelu });
      else if (withRelu) h = relu(h);
    });
    return h;
  }
}
