// BatchMatMul and _FusedMatMul (bias + ReLU) on oneDNN's matmul primitive.
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs-core';
import { nativeKernel, sizeOf, type NativeBackend } from '../native_backend.js';

function matmul(
  backend: NativeBackend,
  a: TensorInfo,
  b: TensorInfo,
  bias: TensorInfo | undefined,
  transposeA: boolean,
  transposeB: boolean,
  activation: string,
): TensorInfo | null {
  if (activation !== 'linear' && activation !== 'relu') return null;
  const av = backend.floats(a);
  const bv = backend.floats(b);
  const biasv = bias ? backend.floats(bias) : undefined;
  if (!av || !bv || biasv === null || a.shape.length < 2 || b.shape.length < 2) return null;
  const ra = a.shape.length;
  const rb = b.shape.length;
  const m = transposeA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
  const k = transposeA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
  const n = transposeB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
  const batchA = sizeOf(a.shape.slice(0, -2));
  const batchB = sizeOf(b.shape.slice(0, -2));
  // Only whole-batch broadcasting (one side has a single matrix) maps onto one primitive.
  if (batchA !== batchB && batchA !== 1 && batchB !== 1) return null;
  if (biasv && biasv.length !== n) return null;
  const outBatchShape = (batchA >= batchB ? a : b).shape.slice(0, -2);
  const c = backend.output([...outBatchShape, m, n]);
  backend.addon.matmul(av, bv, biasv ?? null, c.values, [
    batchA, batchB, m, k, n, transposeA ? 1 : 0, transposeB ? 1 : 0, activation === 'relu' ? 1 : 0,
  ]);
  return c.info;
}

export const kernels: KernelConfig[] = [
  nativeKernel('BatchMatMul', ({ inputs, backend, attrs }) =>
    matmul(backend, inputs.a!, inputs.b!, undefined, !!attrs.transposeA, !!attrs.transposeB, 'linear')),
  nativeKernel('_FusedMatMul', ({ inputs, backend, attrs }) => {
    if (inputs.preluActivationWeights) return null;
    return matmul(backend, inputs.a!, inputs.b!, inputs.bias, !!attrs.transposeA, !!attrs.transposeB,
      String(attrs.activation ?? 'linear'));
  }),
];
