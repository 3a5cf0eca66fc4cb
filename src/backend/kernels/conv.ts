// Convolutions (plain, fused bias+ReLU, depthwise) and their gradients on oneDNN.
import * as tf from '../../core/tf.js';
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { nativeKernel, type NativeBackend } from '../native_backend.js';

type ConvInfo = tf.backend_util.Conv2DInfo;

const { computeConv2DInfo } = tf.backend_util;

/** The dims list of the addon's conv functions. */
function convDims(c: ConvInfo, groups: number, relu: boolean): number[] {
  return [
    c.batchSize, c.inHeight, c.inWidth, c.inChannels,
    c.filterHeight, c.filterWidth, c.outChannels, c.outHeight, c.outWidth,
    c.strideHeight, c.strideWidth, c.dilationHeight, c.dilationWidth,
    c.padInfo.top, c.padInfo.left, c.padInfo.bottom, c.padInfo.right,
    groups, relu ? 1 : 0,
  ];
}

function convInfo(xShape: number[], filterShape: number[], attrs: ConvAttrs, depthwise: boolean): ConvInfo {
  return computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides, attrs.dilations ?? 1, attrs.pad, attrs.dimRoundingMode, depthwise,
  );
}

function channelsLast(dataFormat: unknown): boolean {
  return dataFormat === undefined || dataFormat === 'NHWC' || dataFormat === 'channelsLast';
}

interface ConvAttrs {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dilations?: number | [number, number];
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  dataFormat?: 'NHWC' | 'NCHW';
}

function forward(
  backend: NativeBackend,
  x: TensorInfo,
  filter: TensorInfo,
  bias: TensorInfo | undefined,
  attrs: ConvAttrs,
  depthwise: boolean,
  activation: string,
): TensorInfo | null {
  if (!channelsLast(attrs.dataFormat) || (activation !== 'linear' && activation !== 'relu')) return null;
  const xv = backend.floats(x);
  const wv = backend.floats(filter);
  const bv = bias ? backend.floats(bias) : undefined;
  if (!xv || !wv || bv === null) return null;
  const c = convInfo(x.shape, filter.shape, attrs, depthwise);
  if (bv && bv.length !== c.outChannels) return null;
  const y = backend.output(c.outShape);
  backend.addon.conv2d(xv, wv, bv ?? null, y.values, convDims(c, depthwise ? c.inChannels : 1, activation === 'relu'));
  return y.info;
}

function backwardData(
  backend: NativeBackend, dy: TensorInfo, filter: TensorInfo, inputShape: number[], attrs: ConvAttrs, depthwise: boolean,
): TensorInfo | null {
  const dyv = backend.floats(dy);
  const wv = backend.floats(filter);
  if (!dyv || !wv || !channelsLast(attrs.dataFormat)) return null;
  const c = convInfo(inputShape, filter.shape, attrs, depthwise);
  const dx = backend.output(c.inShape);
  backend.addon.conv2dBackwardData(dyv, wv, dx.values, convDims(c, depthwise ? c.inChannels : 1, false));
  return dx.info;
}

function backwardFilter(
  backend: NativeBackend, x: TensorInfo, dy: TensorInfo, filterShape: number[], attrs: ConvAttrs, depthwise: boolean,
): TensorInfo | null {
  const xv = backend.floats(x);
  const dyv = backend.floats(dy);
  if (!xv || !dyv || !channelsLast(attrs.dataFormat)) return null;
  const c = convInfo(x.shape, filterShape, attrs, depthwise);
  const dw = backend.output(filterShape);
  backend.addon.conv2dBackwardWeights(xv, dyv, dw.values, null, convDims(c, depthwise ? c.inChannels : 1, false));
  return dw.info;
}

const attrsOf = (a: unknown) => a as unknown as ConvAttrs & Record<string, unknown>;

export const kernels: KernelConfig[] = [
  nativeKernel('Conv2D', ({ inputs, backend, attrs }) =>
    forward(backend, inputs.x!, inputs.filter!, undefined, attrsOf(attrs), false, 'linear')),
  nativeKernel('FusedConv2D', ({ inputs, backend, attrs }) => {
    const a = attrsOf(attrs);
    if (inputs.preluActivationWeights) return null;
    return forward(backend, inputs.x!, inputs.filter!, inputs.bias, a, false, String(a.activation ?? 'linear'));
  }),
  nativeKernel('DepthwiseConv2dNative', ({ inputs, backend, attrs }) =>
    forward(backend, inputs.x!, inputs.filter!, undefined, attrsOf(attrs), true, 'linear')),
  nativeKernel('FusedDepthwiseConv2D', ({ inputs, backend, attrs }) => {
    const a = attrsOf(attrs);
    if (inputs.preluActivationWeights) return null;
    return forward(backend, inputs.x!, inputs.filter!, inputs.bias, a, true, String(a.activation ?? 'linear'));
  }),
  nativeKernel('Conv2DBackpropInput', ({ inputs, backend, attrs }) =>
    backwardData(backend, inputs.dy!, inputs.filter!, attrs.inputShape as number[], attrsOf(attrs), false)),
  nativeKernel('DepthwiseConv2dNativeBackpropInput', ({ inputs, backend, attrs }) =>
    backwardData(backend, inputs.dy!, inputs.filter!, attrs.inputShape as number[], attrsOf(attrs), true)),
  nativeKernel('Conv2DBackpropFilter', ({ inputs, backend, attrs }) =>
    backwardFilter(backend, inputs.x!, inputs.dy!, attrs.filterShape as number[], attrsOf(attrs), false)),
  nativeKernel('DepthwiseConv2dNativeBackpropFilter', ({ inputs, backend, attrs }) =>
    backwardFilter(backend, inputs.x!, inputs.dy!, attrs.filterShape as number[], attrsOf(attrs), true)),
];
