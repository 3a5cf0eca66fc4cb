// Batch norm: the fused training-mode op (forward returns batch statistics,
// backward gives dx, dgamma, dbeta at once) and tfjs's inference FusedBatchNorm.
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
  const dims = rowsAndChannels(inputs.x!);
  const y = backend.output(inputs.x!.shape);
  const mean = backend.output([dims[1]!]);
  const variance = backend.output([dims[1]!]);
  backend.addon.batchNormTrain(x, gamma, beta, y.values, mean.values, variance.values, dims, attrs.epsilon as number);
  return [y.info, mean.info, variance.info];
});

const trainGrad: KernelConfig = nativeKernel(BatchNormTrainGrad, ({ inputs, backend, attrs }) => {
  const [x, dy, gamma, mean, variance] = ['x', 'dy', 'gamma', 'mean', 'variance'].map((k) => backend.floats(inputs[k]!));
  if (!x || !dy || !gamma || !mean || !variance) throw new Error('batchNormTrain gradient: inputs must be float32');
  const dims = rowsAndChannels(inputs.x!);
  const dx = backend.output(inputs.x!.shape);
  const dgamma = backend.output([dims[1]!]);
  const dbeta = backend.output([dims[1]!]);
  backend.addon.batchNormTrainBackward(x, dy, gamma, mean, variance, dx.values, dgamma.values, dbeta.values, dims,
    attrs.epsilon as number);
  return [dx.info, dgamma.info, dbeta.info];
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
