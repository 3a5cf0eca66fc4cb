// RoIAlign forward and backward (native/src/roi_align.cc) for backend/roi_align.ts.
import type { KernelConfig, NamedAttrMap } from '@tensorflow/tfjs-core';
import { nativeKernel, type NativeBackend } from '../native_backend.js';
import { RoiAlign, RoiAlignGrad, type RoiAlignAttrs } from '../roi_align.js';

type F32 = Float32Array;

interface RoiAlignAddon {
  /** dims: [N,H,W,C, R,PH,PW, samplingRatio, aligned]; y is [R,PH,PW,C]. */
  roiAlign(x: F32, rois: F32, y: F32, dims: number[], spatialScale: number): void;
  /** dx (zeroed) += the transpose of roiAlign applied to dy; same dims. */
  roiAlignBackward(dy: F32, rois: F32, dx: F32, dims: number[], spatialScale: number): void;
}

function dimsOf(attrs: NamedAttrMap, r: number): { dims: number[]; a: RoiAlignAttrs } {
  const a = attrs as unknown as RoiAlignAttrs;
  return { a, dims: [...a.featureShape, r, a.pooledHeight, a.pooledWidth, a.samplingRatio, a.aligned ? 1 : 0] };
}

function addonOf(backend: NativeBackend): RoiAlignAddon {
  return backend.addon as unknown as RoiAlignAddon;
}

const forward = nativeKernel(RoiAlign, ({ inputs, backend, attrs }) => {
  const x = backend.floats(inputs.x!);
  const rois = backend.floats(inputs.rois!);
  if (!x || !rois) throw new Error('roiAlign: features and rois must be float32');
  const r = inputs.rois!.shape[0]!;
  const { a, dims } = dimsOf(attrs, r);
  const y = backend.output([r, a.pooledHeight, a.pooledWidth, a.featureShape[3]]);
  addonOf(backend).roiAlign(x, rois, y.values, dims, a.spatialScale);
  return y.info;
});

const backward = nativeKernel(RoiAlignGrad, ({ inputs, backend, attrs }) => {
  const dy = backend.floats(inputs.dy!);
  const rois = backend.floats(inputs.rois!);
  if (!dy || !rois) throw new Error('roiAlign gradient: dy and rois must be float32');
  const { a, dims } = dimsOf(attrs, inputs.rois!.shape[0]!);
  const dx = backend.zeros(a.featureShape);
  addonOf(backend).roiAlignBackward(dy, rois, dx.values, dims, a.spatialScale);
  return dx.info;
});

export const kernels: KernelConfig[] = [forward, backward];
