// The `native` tfjs backend: the tfjs CPU backend's storage and every one of its
// kernels, with the kernels that cost time replaced by oneDNN/C++ ones.
import { totalmem } from 'node:os';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import * as tf from '../core/tf.js';
import type { KernelConfig, KernelFunc, NamedAttrMap, NamedTensorInfoMap, TensorInfo } from '@tensorflow/tfjs-core';
import { loadNativeAddon, type NativeAddon } from './native_addon.js';

export const NATIVE = 'native';

export class NativeBackend extends MathBackendCPU {
  /** Recycles kernel output storage, so a training step stops paying page faults and GC for fresh buffers. */
  readonly pool = new BufferPool(poolBytes());
  /** Storage this backend allocated and nobody outside it has seen: only these may be recycled. */
  private readonly recyclable = new WeakSet<Float32Array>();

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
    const values = this.pool.take(sizeOf(shape)) ?? uninitializedFloats(sizeOf(shape));
    this.recyclable.add(values);
    return { info: this.makeTensorInfo(shape, 'float32', values), values };
  }

  /** A zero-filled output tensor, for kernels that accumulate into it. */
  zeros(shape: number[]): { info: TensorInfo; values: Float32Array } {
    const out = this.output(shape);
    out.values.fill(0);
    return out;
  }

  /** Marks a tensor's storage as seen outside the backend, so it is never recycled. */
  escape(t: TensorInfo): void {
    const values = this.data.get(t.dataId)?.values;
    if (values instanceof Float32Array) this.recyclable.delete(values);
  }

  override readSync(dataId: object): tf.backend_util.BackendValues {
    const values = super.readSync(dataId);
    if (values instanceof Float32Array) this.recyclable.delete(values);
    return values;
  }

  override disposeData(dataId: object, force?: boolean): boolean {
    const values = this.data.get(dataId)?.values;
    const released = super.disposeData(dataId, force);
    if (released && values instanceof Float32Array && this.recyclable.has(values) && !this.data.has(dataId)) {
      this.recyclable.delete(values);
      this.pool.give(values);
    }
    return released;
  }

  override dispose(): void {
    this.pool.clear();
    super.dispose();
  }
}

/**
 * The pool's byte budget: SELFSUP_POOL_MB, else a quarter of the machine's
 * memory. It must hold a whole step's activations: every buffer it turns
 * away is garbage V8 counts as external memory, and each ~64 MB of that
 * starts a major GC that preempts the compute threads
 * (docs/experiments.md#native-backend).
 */
export function poolBytes(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.SELFSUP_POOL_MB;
  if (raw === undefined || raw === '') return Math.floor(totalmem() / 4);
  const mb = Number(raw);
  if (!(Number.isFinite(mb) && mb >= 0)) throw new Error(`SELFSUP_POOL_MB must be a number of megabytes >= 0, got '${raw}'`);
  return mb * 2 ** 20;
}

/**
 * Free Float32Arrays by length, up to a byte budget. Small arrays are left to
 * V8; large ones are what cost page faults and garbage collection.
 */
export class BufferPool {
  static readonly minLength = 1 << 14;
  private readonly free = new Map<number, Float32Array[]>();
  private bytes = 0;

  constructor(readonly capacityBytes: number) {}

  take(length: number): Float32Array | undefined {
    if (length < BufferPool.minLength) return undefined;
    const list = this.free.get(length);
    const values = list?.pop();
    if (values) {
      this.bytes -= values.byteLength;
      this.touch(length, list!);
    }
    return values;
  }

  /**
   * Keeps `values` for a later take of the same length. When the budget is
   * spent, the lengths used least recently go first: a detector's RoI heads
   * make new lengths every step, and a pool full of lengths that never come
   * back would turn away the ones that do.
   */
  give(values: Float32Array): void {
    if (values.length < BufferPool.minLength || values.byteLength > this.capacityBytes) return;
    for (const [length, stale] of this.free) {
      if (this.bytes + values.byteLength <= this.capacityBytes) break;
      while (stale.length > 0 && this.bytes + values.byteLength > this.capacityBytes) this.bytes -= stale.pop()!.byteLength;
      if (stale.length === 0) this.free.delete(length);
    }
    const list = this.free.get(values.length) ?? [];
    list.push(values);
    this.bytes += values.byteLength;
    this.touch(values.length, list);
  }

  /** Moves a length to the most recently used end (a Map iterates in insertion order). */
  private touch(length: number, list: Float32Array[]): void {
    this.free.delete(length);
    if (list.length > 0) this.free.set(length, list);
  }

  get pooledBytes(): number {
    return this.bytes;
  }

  clear(): void {
    this.free.clear();
    this.bytes = 0;
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
      return escapingInputs(fallback)(args);
    },
  };
}

/** tfjs-cpu kernels that hand out their input's storage only through refcounted dataIds. */
const SHARE_STORAGE_BY_REFCOUNT = new Set(['Reshape', 'Identity', 'Cast']);

/**
 * A tfjs-cpu kernel may return views of its inputs' storage (Slice does), so
 * storage that reaches one can no longer be recycled safely.
 */
function escapingInputs(kernelFunc: KernelFunc): KernelFunc {
  return (args) => {
    const backend = args.backend as NativeBackend;
    for (const input of Object.values(args.inputs)) if (input) backend.escape(input);
    return kernelFunc(args);
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
  () => import('./kernels/roi_align.js'),
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
    for (const k of tf.getKernelsForBackend('cpu')) {
      const kernelFunc = SHARE_STORAGE_BY_REFCOUNT.has(k.kernelName) ? k.kernelFunc : escapingInputs(k.kernelFunc);
      tf.registerKernel({ ...k, backendName: NATIVE, kernelFunc });
    }
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
