// Max and average pooling, forward and backward, in NHWC.
import * as tf from '../../core/tf.js';
import type { KernelConfig, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import { nativeKernel, type NativeBackend } from '../native_backend.js';

type PoolFn = 'maxPool' | 'avgPool';

function poolInfo(x: TensorInfo, attrs: NamedAttrMap): tf.backend_util.Conv2DInfo | null {
  const info = tf.backend_util.computePool2DInfo(
    x.shape as [number, number, number, number],
    attrs.filterSize as [number, number] | number,
    attrs.strides as [number, number] | number,
    1,
    attrs.pad as 'valid' | 'same' | number,
    attrs.dimRoundingMode as 'floor' | 'round' | 'ceil' | undefined,
  );
  return info.dilationHeight === 1 && info.dilationWidth === 1 ? info : null;
}

function poolDims(c: tf.backend_util.Conv2DInfo): number[] {
  return [
    c.batchSize, c.inHeight, c.inWidth, c.inChannels, c.filterHeight, c.filterWidth, c.outHeight, c.outWidth,
    c.strideHeight, c.strideWidth, c.padInfo.top, c.padInfo.left, c.padInfo.bottom, c.padInfo.right,
  ];
}

function pool(fn: PoolFn, backend: NativeBackend, x: TensorInfo, attrs: NamedAttrMap): TensorInfo | null {
  const xv = backend.floats(x);
  const c = poolInfo(x, attrs);
  if (!xv || !c) return null;
  const y = backend.output(c.outShape);
  backend.addon[fn](xv, y.values, poolDims(c));
  return y.info;
}

export const kernels: KernelConfig[] = [
  nativeKernel('MaxPool', ({ inputs, backend, attrs }) => pool('maxPool', backend, inputs.x!, attrs)),
  nativeKernel('AvgPool', ({ inputs, backend, attrs }) => pool('avgPool', backend, inputs.x!, attrs)),
  nativeKernel('MaxPoolGrad', ({ inputs, backend, attrs }) => {
    const xv = backend.floats(inputs.input!);
    const dyv = backend.floats(inputs.dy!);
    const c = poolInfo(inputs.input!, attrs);
    if (!xv || !dyv || !c) return null;
    const dx = backend.zeros(inputs.input!.shape);
    backend.addon.maxPoolBackward(xv, dyv, dx.values, poolDims(c));
    return dx.info;
  }),
  // Divides by the in-bounds window size, matching the forward pass (tfjs-cpu
  // divides by the full filter area, which is wrong next to padding).
  nativeKernel('AvgPoolGrad', ({ inputs, backend, attrs }) => {
    const dyv = backend.floats(inputs.dy!);
    const c = poolInfo(inputs.input!, attrs);
    if (!dyv || !c) return null;
    const dx = backend.zeros(inputs.input!.shape);
    backend.addon.avgPoolBackward(dyv, dx.values, poolDims(c));
    return dx.info;
  }),
];
