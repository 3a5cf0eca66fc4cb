// Fused ops that tfjs does not have. Each is a kernel with its own registered
// gradient where a backend provides it, and a composite of stock tfjs ops
// (differentiated by tfjs autograd) everywhere else, so model code never asks
// which backend it runs on.
import * as tf from '../core/tf.js';
import type { GradSaveFunc, Tensor, Tensor1D } from '@tensorflow/tfjs-core';

export const BatchNormTrain = 'SelfsupBatchNormTrain';
export const ReluGrad = 'SelfsupReluGrad';
export const BatchNormTrainGrad = 'SelfsupBatchNormTrainGrad';
export const SgdMomentumUpdate = 'SelfsupSgdMomentumUpdate';
export const FirstNonFinite = 'SelfsupFirstNonFinite';
export const Axpby = 'SelfsupAxpby';

export interface BatchNormTrainResult {
  y: Tensor;
  /** Per-channel batch mean. */
  mean: Tensor1D;
  /** Per-channel biased (1/n) batch variance, the one used to normalise. */
  variance: Tensor1D;
}

/** What a training-mode batch norm may fuse after itself: y = relu(bn(x) + residual). */
export interface BatchNormEpilogue {
  /** Added to the normalised output (a ResNet block's shortcut), same shape as x. */
  residual?: Tensor;
  /** Clamp the result at 0. */
  relu?: boolean;
}

/**
 * Training-mode batch norm over every axis but the last (NHWC channels):
 * y = gamma * (x - mean) / sqrt(var + eps) + beta, with the batch statistics,
 * then the optional epilogue (residual add, ReLU) in the same pass.
 * With `groups` G > 1 each of G consecutive slices of the batch is normalised
 * with its own statistics (MoCo's shuffle-BN, see methods/parts/split_bn.ts);
 * gamma and beta are shared, and mean/variance are [G·C], group-major.
 */
export function batchNormTrain(
  x: Tensor,
  gamma: Tensor1D,
  beta: Tensor1D,
  epsilon = 1e-5,
  groups = 1,
  { residual, relu = false }: BatchNormEpilogue = {},
): BatchNormTrainResult {
  const n = x.shape[0] ?? 1;
  if (!(Number.isInteger(groups) && groups >= 1 && n % groups === 0)) {
    throw new Error(`batchNormTrain: a batch of ${n} does not split into ${groups} equal groups`);
  }
  if (residual && !tf.util.arraysEqual(residual.shape, x.shape)) {
    throw new Error(`batchNormTrain: the residual must have x's shape [${x.shape}], got [${residual.shape}]`);
  }
  if (tf.getKernel(BatchNormTrain, tf.getBackend())) {
    const inputs: tf.NamedTensorMap = residual ? { x, gamma, beta, residual } : { x, gamma, beta };
    const attrs = { epsilon, groups, relu, residual: residual !== undefined };
    const [y, mean, variance] = tf.engine().runKernel(BatchNormTrain, inputs, attrs) as Tensor[];
    return { y: y!, mean: mean as Tensor1D, variance: variance as Tensor1D };
  }
  const plain = batchNormTrainComposite(x, gamma, beta, epsilon, groups);
  if (!residual && !relu) return plain;
  const y = applyEpilogue(plain.y, { residual, relu });
  plain.y.dispose();
  return { ...plain, y };
}

/** relu(y + residual) of stock ops, where no fused kernel runs (inference mode, other backends). */
export function applyEpilogue<T extends Tensor>(y: T, { residual, relu = false }: BatchNormEpilogue): T {
  return tf.tidy(() => {
    const sum = residual ? tf.add(y, residual) : y;
    return (relu ? tf.relu(sum) : sum) as T;
  });
}

function batchNormTrainComposite(x: Tensor, gamma: Tensor1D, beta: Tensor1D, epsilon: number, groups: number): BatchNormTrainResult {
  const n = x.shape[0] ?? 1;
  return tf.tidy(() => {
    if (groups > 1) {
      // [G·m, ..., C] -> [m, ..., G·C]: the groups become channels of one plain BN.
      const [, ...rest] = x.shape;
      const inner = rest.slice(0, -1);
      const C = rest[rest.length - 1]!;
      const toChannels = [1, ...inner.map((_, i) => i + 2), 0, inner.length + 2];
      const grouped = tf.reshape(tf.transpose(tf.reshape(x, [groups, n / groups, ...rest]), toChannels), [n / groups, ...inner, groups * C]);
      const r = batchNormTrainComposite(grouped, tf.tile(gamma, [groups]) as Tensor1D, tf.tile(beta, [groups]) as Tensor1D, epsilon, 1);
      const back = [inner.length + 1, 0, ...inner.map((_, i) => i + 1), inner.length + 2];
      return { ...r, y: tf.reshape(tf.transpose(tf.reshape(r.y, [n / groups, ...inner, groups, C]), back), x.shape) };
    }
    const axes = x.shape.slice(0, -1).map((_, i) => i);
    const { mean, variance } = tf.moments(x, axes);
    const y = tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, epsilon))), gamma), beta);
    return { y, mean: mean as Tensor1D, variance: variance as Tensor1D };
  });
}

tf.registerGradient({
  kernelName: BatchNormTrain,
  inputsToSave: ['x', 'gamma'],
  outputsToSave: [true, true, true],
  gradFunc: (dy, saved, attrs) => {
    const [x, gamma, y, mean, variance] = saved as Tensor[];
    const dyY = Array.isArray(dy) ? dy[0]! : dy;
    const { relu, residual } = attrs as unknown as { relu: boolean; residual: boolean };
    // One backward kernel yields all the gradients. It runs here, not in the
    // closures: tfjs runs each closure in its own tidy scope, which would
    // dispose the outputs a closure does not return.
    const inputs: tf.NamedTensorMap = { x: x!, dy: dyY, gamma: gamma!, mean: mean!, variance: variance!, ...(relu ? { y: y! } : {}) };
    const [dx, dgamma, dbeta, dresidual] = tf.engine().runKernel(BatchNormTrainGrad, inputs, attrs as unknown as tf.NamedAttrMap) as Tensor[];
    const grads: Record<string, () => Tensor> = { x: () => dx!, gamma: () => dgamma!, beta: () => dbeta! };
    if (residual) grads.residual = () => (relu ? dresidual! : dyY);
    return grads;
  },
});

// tfjs differentiates ReLU as dy * cast(step(x)): three passes and two
// temporaries. A backend with a fused ReluGrad kernel does it in one.
const stockReluGradient = tf.getGradient(tf.Relu);
tf.registerGradient({
  kernelName: tf.Relu,
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    if (!stockReluGradient || tf.getKernel(ReluGrad, tf.getBackend())) {
      const [x] = saved as Tensor[];
      return { x: () => tf.engine().runKernel(ReluGrad, { dy: dy as Tensor, x: x! }, {}) as Tensor };
    }
    return stockReluGradient.gradFunc(dy, saved, attrs);
  },
});

export interface SgdMomentumSettings {
  lr: number;
  momentum: number;
  weightDecay: number;
  nesterov: boolean;
}

/**
 * PyTorch's momentum-SGD step for one parameter:
 *   g' = g + wd p;  b = mu buf + g';  p' = p - lr (nesterov ? g' + mu b : b).
 * Returns [p', b] as new tensors (the caller assigns them). A backend with the
 * fused kernel makes one pass over the four arrays instead of six ops' worth.
 */
export function sgdMomentumUpdate(p: Tensor, g: Tensor, buf: Tensor, settings: SgdMomentumSettings): [Tensor, Tensor] {
  if (tf.getKernel(SgdMomentumUpdate, tf.getBackend())) {
    return tf.engine().runKernel(SgdMomentumUpdate, { p, g, buf }, { ...settings }) as [Tensor, Tensor];
  }
  const { lr, momentum, weightDecay, nesterov } = settings;
  return tf.tidy(() => {
    const decayed = weightDecay > 0 ? tf.add(g, tf.mul(p, weightDecay)) : g;
    const b = tf.add(tf.mul(buf, momentum), decayed);
    const direction = nesterov ? tf.add(decayed, tf.mul(b, momentum)) : b;
    return [tf.sub(p, tf.mul(direction, lr)), b];
  });
}

/** Tensors as a kernel's inputs x0, x1, ... (and y0, y1, ... for `prefix` y). */
function numberedInputs(tensors: Tensor[], prefix: string): tf.NamedTensorMap {
  return Object.fromEntries(tensors.map((t, i) => [`${prefix}${i}`, t]));
}

/**
 * The index of the first of `tensors` (float32) that holds a NaN or an
 * infinity, or -1. One kernel call where the backend has it; else x - x
 * (0 for finite x, NaN otherwise) summed over all of them, one scalar read,
 * and a per-tensor search only once something is wrong.
 */
export function firstNonFiniteIndex(tensors: Tensor[]): number {
  if (tensors.length === 0) return -1;
  if (tf.getKernel(FirstNonFinite, tf.getBackend())) {
    const index = tf.engine().runKernel(FirstNonFinite, numberedInputs(tensors, 'x'), { count: tensors.length }) as Tensor;
    const value = index.dataSync()[0]!;
    index.dispose();
    return value;
  }
  const probe = (ts: Tensor[]) => tf.tidy(() => ts.map((t) => tf.sum(tf.sub(t, t))).reduce((a, b) => tf.add(a, b)).dataSync()[0]!);
  if (Number.isFinite(probe(tensors))) return -1;
  return tensors.findIndex((t) => !Number.isFinite(probe([t])));
}

/** a xs[k] + b ys[k] for every k (pairs of one shape): an EMA update of a whole network in one kernel call where the backend has it. */
export function axpbyAll(xs: Tensor[], ys: Tensor[], a: number, b: number): Tensor[] {
  if (ys.length !== xs.length) throw new Error(`axpbyAll: ${xs.length} xs but ${ys.length} ys`);
  xs.forEach((x, i) => {
    if (!tf.util.arraysEqual(x.shape, ys[i]!.shape)) throw new Error(`axpbyAll: pair ${i} has shapes [${x.shape}] and [${ys[i]!.shape}]`);
  });
  if (xs.length === 0) return [];
  if (tf.getKernel(Axpby, tf.getBackend())) {
    return tf.engine().runKernel(Axpby, { ...numberedInputs(xs, 'x'), ...numberedInputs(ys, 'y') }, { a, b, count: xs.length }) as Tensor[];
  }
  return xs.map((x, i) => tf.tidy(() => tf.add(tf.mul(x, a), tf.mul(ys[i]!, b))));
}

/**
 * x[indices] along the first axis, with a gradient that scatter-adds dy
 * back in one pass. tfjs's own GatherV2 gradient goes through the cpu
 * UnsortedSegmentSum, which loops over the whole of dy once per row of x:
 * ~500 s per detector step for the RoI reorder, against milliseconds here.
 */
export function gatherRows<T extends Tensor>(x: T, indices: Int32Array): T {
  const rows = x.shape[0]!;
  for (const i of indices) if (!(i >= 0 && i < rows)) throw new Error(`gatherRows: index ${i} is outside 0..${rows - 1}`);
  const gather = tf.customGrad((...args: unknown[]) => {
    const save = args.pop() as GradSaveFunc;
    const input = args[0] as Tensor;
    const index = tf.tensor2d(indices, [indices.length, 1], 'int32');
    save([index]);
    return {
      value: tf.gather(input, tf.reshape(index, [indices.length])),
      gradFunc: (dy: Tensor, saved: Tensor[]) => tf.scatterND(saved[0]!, dy, input.shape),
    };
  });
  return gather(x) as T;
}
