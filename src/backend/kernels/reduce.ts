// Native reductions (Sum, Mean, Prod, Max, Min). The reduced axes, ignoring
// size-1 dimensions, usually form one contiguous block; x is then viewed as
// [outer, reduced, inner] and reduced in place. Any other set of axes is first
// moved to the end by a native transpose.
import * as tf from '../../core/tf.js';
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { nativeKernel, sizeOf, uninitializedFloats, type NativeBackend } from '../native_backend.js';
import { opCode } from './eltwise.js';

/** x viewed as [outer, n, inner], when the reduced axes form one block (size-1 dims ignored). */
export function reductionBlock(shape: readonly number[], axes: readonly number[]): [number, number, number] | null {
  const reduced = new Set(axes);
  let first = -1;
  let last = -1;
  for (let d = 0; d < shape.length; d++) {
    if (shape[d] === 1) continue;
    if (reduced.has(d)) {
      if (first < 0) first = d;
      else if (last !== d - 1 && shape.slice(last + 1, d).some((s) => s !== 1)) return null;
      last = d;
    }
  }
  if (first < 0) return [sizeOf(shape), 1, 1];
  return [sizeOf(shape.slice(0, first)), sizeOf(shape.slice(first, last + 1)), sizeOf(shape.slice(last + 1))];
}

function reduceKernel(kernelName: string, op: string, axisAttr: 'axis' | 'reductionIndices'): KernelConfig {
  return nativeKernel(kernelName, ({ inputs, attrs, backend }) => {
    const x = inputs.x!;
    let xv = backend.floats(x);
    if (!xv) return null;
    const axes = tf.util.parseAxisParam(attrs[axisAttr] as number | number[], x.shape);
    const [outShape, reduceShape] = tf.backend_util.computeOutAndReduceShapes(x.shape, axes);
    const n = sizeOf(reduceShape);
    const shape = attrs.keepDims ? tf.backend_util.expandShapeToKeepDim(outShape, axes) : outShape;
    if (n === 0 || sizeOf(outShape) === 0) return null;
    const out = backend.output(shape);
    let block = reductionBlock(x.shape, axes);
    if (!block) {
      const perm = tf.backend_util.getAxesPermutation(axes, x.shape.length)!;
      xv = transposed(backend, xv, x.shape, perm);
      block = [sizeOf(outShape), n, 1];
    }
    backend.addon.reduce(opCode(backend, 'reduceOps', op), xv, out.values, ...block);
    return out.info;
  });
}

function transposed(backend: NativeBackend, xv: Float32Array, shape: number[], perm: number[]): Float32Array {
  const t = uninitializedFloats(xv.length);
  backend.addon.transpose(xv, shape, perm, t);
  return t;
}

export const kernels: KernelConfig[] = [
  reduceKernel(tf.Sum, 'sum', 'axis'),
  reduceKernel(tf.Mean, 'mean', 'axis'),
  reduceKernel(tf.Prod, 'prod', 'axis'),
  reduceKernel(tf.Max, 'max', 'reductionIndices'),
  reduceKernel(tf.Min, 'min', 'axis'),
];
