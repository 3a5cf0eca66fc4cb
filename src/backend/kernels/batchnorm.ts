// Batch norm: the fused training-mode op (forward returns batch statistics,
// backward gives dx, dgamma, dbeta at once) and tfjs's inference FusedBatchNorm.
// A grouped (shuffle-BN) call runs the kernel on each group's slice of the
// buffers in place: the groups are consecutive samples, so nothing is copied.
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { nativeKernel, sizeOf } from '../native_backend.js';
import { BatchNormTrain, BatchNormTrainGrad } from '../ops.js';

function rowsAndChannels(x: TensorInfo): number[] {
  const c = x.shape[x.shape.length - 1] ?? 1;
  return [sizeOf(x.shape) / c, c];
}

const train: KernelConfig = nativeKernel(BatchNormTrain, ({ inputs, backend, attrs }) => {
  const x = backend.floats(inputs.x!);
  const gamma = backend.floats(inputs.gamma!);
  const beta = backend.floats(inputs.beta!);
  if (!x || !gamma || !beta) throw new Error('batchNormTrain: x, gamma and beta must be float32');
  const residual = inputs.residual ? backend.floats(inputs.residual) : null;
  if (inputs.residual && !residual) throw new Error('batchNormTrain: the residual must be float32');
  const groups = (attrs.groups as number | undefined) ?? 1;
  const [rows, c] = rowsAndChannels(inputs.x!) as [number, number];
  const y = backend.output(inputs.x!.shape);
  const mean = backend.output([groups * c]);
  const variance = backend.output([groups * c]);
  const span = (rows / groups) * c;
  for (let g = 0; g < groups; g++) {
    const part = (v: Float32Array, size: number) => v.subarray(g * size, (g + 1) * size);
    backend.addon.batchNormTrain(part(x, span), gamma, beta, part(y.values, span), part(mean.values, c), part(variance.values, c),
      [rows / groups, c], attrs.epsilon as number, residual && part(residual, span), Boolean(attrs.relu));
  }
  return [y.info, mean.info, variance.info];
});

const trainGrad: KernelConfig = nativeKernel(BatchNormTrainGrad, ({ inputs, backend, attrs }) => {
  const [x, dy, gamma, mean, variance] = ['x', 'dy', 'gamma', 'mean', 'variance'].map((k) => backend.floats(inputs[k]!));
  if (!x || !dy || !gamma || !mean || !variance) throw new Error('batchNormTrain gradient: inputs must be float32');
  const y = inputs.y ? backend.floats(inputs.y) : null;
  if (inputs.y && !y) throw new Error('batchNormTrain gradient: y must be float32');
  // With a fused ReLU and residual, the masked dy is also the residual's gradient.
  const dresidual = y && attrs.residual ? backend.output(inputs.x!.shape) : null;
  const groups = (attrs.groups as number | undefined) ?? 1;
  const [rows, c] = rowsAndChannels(inputs.x!) as [number, number];
  const dx = backend.output(inputs.x!.shape);
  const dgamma = backend.output([c]);
  const dbeta = backend.output([c]);
  const span = (rows / groups) * c;
  // gamma and beta are shared by the groups: their gradients add up.
  const groupDgamma = groups > 1 ? new Float32Array(c) : dgamma.values;
  const groupDbeta = groups > 1 ? new Float32Array(c) : dbeta.values;
  if (groups > 1) {
    dgamma.values.fill(0);
    dbeta.values.fill(0);
  }
  for (let g = 0; g < groups; g++) {
    const part = (v: Float32Array, size: number) => v.subarray(g * size, (g + 1) * size);
    backend.addon.batchNormTrainBackward(part(x, span), part(dy, span), gamma, part(mean, c), part(variance, c), part(dx.values, span),
      groupDgamma, groupDbeta, [rows / groups, c], attrs.epsilon as number, y && part(y, span), dresidual && part(dresidual.values, span));
    if (groups > 1) {
      for (let i = 0; i < c; i++) {
        dgamma.values[i]! += groupDgamma[i]!;
        dbeta.values[i]! += groupDbeta[i]!;
      }
    }
  }
  return dresidual ? [dx.info, dgamma.info, dbeta.info, dresidual.info] : [dx.info, dgamma.info, dbeta.info];
});

const inference = nativeKernel('FusedBatchNorm', ({ inputs, backend, attrs }) => {
  const x = backend.floats(inputs.x!);
  const dims = rowsAndChannels(inputs.x!);
  const perChannel = (t: TensorInfo | undefined) => {
    if (!t) return undefined;
    const v = backend.floats(t);
    return v && v.length === dims[1] ? v : null;
  };
  const mean = perChannel(inputs.mean);
  const variance = perChannel(inputs.variance);
  const scale = perChannel(inputs.scale);
  const offset = perChannel(inputs.offset);
  if (!x || !mean || !variance || scale === null || offset === null) return null;
  const y = backend.output(inputs.x!.shape);
  backend.addon.batchNormInference(x, mean, variance, scale ?? null, offset ?? null, y.values, dims,
    (attrs.varianceEpsilon as number | undefined) ?? 0.001);
  return y.info;
});

export const kernels: KernelConfig[] = [train, trainGrad, inference];
