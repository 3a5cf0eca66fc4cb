// The `native` tfjs backend: the tfjs CPU backend's storage and every one of its
// kernels, with the kernels that cost time replaced by oneDNN/C++ ones.
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import * as tf from '../tf.js';
import type { KernelConfig, KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';
import { loadNativeAddon, type NativeAddon } from './native_addon.js';

export const NATIVE = 'native';

export class NativeBackend extends MathBackendCPU {
  constructor(readonly addon: NativeAddon) {
    super();
    // MathBackendCPU advertises tfjs-node on first write; we are the fast path.
    (this as unknown as { firstUse: boolean }).firstUse = false;
  }

  /** The Float32Array behind a tensor, or null when it is not plain float32 data. */
  floats(t: TensorInfo): Float32Array | null {
    if (t.dtype !== 'float32') return null;
    const values = this.data.get(t.dataId).values;
    return values instanceof Float32Array ? values : null;
  }

  /** An output tensor of `shape` whose storage the caller fills (not zeroed). */
  output(shape: number[]): { info: TensorInfo; values: Float32Array } {
    const values = uninitializedFloats(sizeOf(shape));
    return { info: this.makeTensorInfo(shape, 'float32', values), values };
  }

  /** A zero-filled output tensor, for kernels that accumulate into it. */
  zeros(shape: number[]): { info: TensorInfo; values: Float32Array } {
    const values = new Float32Array(sizeOf(shape));
    return { info: this.makeTensorInfo(shape, 'float32', values), values };
  }
}

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// Zero-filling a fresh buffer costs a full memory pass the kernel is about to
// overwrite anyway; allocUnsafeSlow gives an unshared, unfilled ArrayBuffer.
export function uninitializedFloats(n: number): Float32Array {
  if (n === 0) return new Float32Array(0);
  return new Float32Array(Buffer.allocUnsafeSlow(n * 4).buffer, 0, n);
}

export interface NativeKernelArgs {
  inputs: NamedTensorInfoMap;
  attrs: NamedAttrMap;
  backend: NativeBackend;
}

/**
 * A kernel that runs natively when it can and otherwise defers to the tfjs CPU
 * kernel of the same name (other dtypes, unusual attributes). `impl` returns
 * null to decline.
 */
export function nativeKernel(
  kernelName: string,
  impl: (args: NativeKernelArgs) => TensorInfo | TensorInfo[] | null,
): KernelConfig {
  const cpu = tf.getKernel(kernelName, 'cpu');
  const fallback: KernelFunc | undefined = cpu?.kernelFunc;
  return {
    kernelName,
    backendName: NATIVE,
    kernelFunc: (args) => {
      const out = impl(args as unknown as NativeKernelArgs);
      if (out !== null) return out;
      if (!fallback) throw new Error(`native kernel ${kernelName} declined these inputs and tfjs-cpu has no fallback`);
      return fallback(args);
    },
  };
}

/** Kernel configs contributed by each source file under ./kernels. */
const kernelModules: Array<() => Promise<{ kernels: KernelConfig[] }>> = [
  () => import('./kernels/conv.js'),
  () => import('./kernels/matmul.js'),
  () => import('./kernels/batchnorm.js'),
  () => import('./kernels/pool.js'),
  () => import('./kernels/eltwise.js'),
  () => import('./kernels/reduce.js'),
  () => import('./kernels/layout.js'),
];

let registered: Promise<boolean> | undefined;

/**
 * Registers the `native` backend: every tfjs-cpu kernel under the new name,
 * then the native replacements on top. Resolves false (and leaves tfjs as it
 * was) when the addon cannot load; `nativeLoadError()` says why.
 */
export function registerNativeBackend(priority = 3): Promise<boolean> {
  registered ??= (async () => {
    const addon = loadNativeAddon();
    if (addon instanceof Error) return false;
    for (const k of tf.getKernelsForBackend('cpu')) tf.registerKernel({ ...k, backendName: NATIVE });
    for (const load of kernelModules) {
      const { kernels } = await load();
      for (const k of kernels) {
        if (tf.getKernel(k.kernelName, NATIVE)) tf.unregisterKernel(k.kernelName, NATIVE);
        tf.registerKernel(k);
      }
    }
    tf.registerBackend(NATIVE, () => new NativeBackend(addon), priority);
    return true;
  })();
  return registered;
}

export function nativeLoadError(): Error | undefined {
  const a = loadNativeAddon();
  return a instanceof Error ? a : undefined;
}
