// Fused ops that tfjs does not have. Each is a kernel with its own registered
// gradient where a backend provides it, and a composite of stock tfjs ops
// (differentiated by tfjs autograd) everywhere else, so model code never asks
// which backend it runs on.
import * as tf from '../tf.js';
import type { Tensor, Tensor1D } from '@tensorflow/tfjs-core';

export const BatchNormTrain = 'SelfsupBatchNormTrain';
export const ReluGrad = 'SelfsupReluGrad';
export const BatchNormTrainGrad = 'SelfsupBatchNormTrainGrad';

export interface BatchNormTrainResult {
  y: Tensor;
  /** Per-channel batch mean. */
  mean: Tensor1D;
  /** Per-channel biased (1/n) batch variance, the one used to normalise. */
  variance: Tensor1D;
}

/**
 * Training-mode batch norm over every axis but the last (NHWC channels):
 * y = gamma * (x - mean) / sqrt(var + eps) + beta, with the batch statistics.
 */
export function batchNormTrain(x: Tensor, gamma: Tensor1D, beta: Tensor1D, epsilon = 1e-5): BatchNormTrainResult {
  if (tf.getKernel(BatchNormTrain, tf.getBackend())) {
    const [y, mean, variance] = tf.engine().runKernel(BatchNormTrain, { x, gamma, beta }, { epsilon }) as Tensor[];
    return { y: y!, mean: mean as Tensor1D, variance: variance as Tensor1D };
  }
  return tf.tidy(() => {
    const axes = x.shape.slice(0, -1).map((_, i) => i);
    const { mean, variance } = tf.moments(x, axes);
    const y = tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, epsilon))), gamma), beta);
    return { y, mean: mean as Tensor1D, variance: variance as Tensor1D };
  });
}

tf.registerGradient({
  kernelName: BatchNormTrain,
  inputsToSave: ['x', 'gamma'],
  outputsToSave: [false, true, true],
  gradFunc: (dy, saved, attrs) => {
    const [x, gamma, mean, variance] = saved as Tensor[];
    const dyY = Array.isArray(dy) ? dy[0]! : dy;
    // One backward kernel yields all three gradients. It runs here, not in the
    // closures: tfjs runs each closure in its own tidy scope, which would
    // dispose the two outputs a closure does not return.
    const [dx, dgamma, dbeta] = tf.engine().runKernel(
      BatchNormTrainGrad,
      { x: x!, dy: dyY, gamma: gamma!, mean: mean!, variance: variance! },
      attrs as unknown as tf.NamedAttrMap,
    ) as Tensor[];
    return { x: () => dx!, gamma: () => dgamma!, beta: () => dbeta! };
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
