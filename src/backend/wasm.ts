// The `wasm` fallback backend: tfjs-backend-wasm (XNNPACK) plus the training
// kernels it lacks, composed from its own fast kernels.
//
// tfjs-backend-wasm 4.22 has no Conv2DBackpropFilter, no depthwise backprop and
// no UnsortedSegmentSum, and its Conv2DBackpropInput is a naive C++ loop. Here:
// - Conv2DBackpropFilter is itself a convolution (the classic trick): x as
//   [C_in, H, W, N] convolved with dy as a [OH, OW, N, C_out] filter, dilated
//   by the forward stride, gives [C_in, KH, KW, C_out] (then cropped and
//   transposed). One XNNPACK call instead of a JS loop.
// - Conv2DBackpropInput (replacing the wasm one, a naive loop) is the
//   convolution of dy with the spatially flipped filter with in/out channels
//   swapped; for stride s, as s*s phase convolutions with sub-filters,
//   interleaved, so no zeros are multiplied. At batch 64 it measured 3-13x
//   faster than the original.
// - DepthwiseConv2dNativeBackpropInput is the depthwise convolution of dy
//   (zero-inserted when the stride is above 1) with the flipped filter.
// - DepthwiseConv2dNativeBackpropFilter is one strided slice, multiply and sum
//   per filter tap.
// - UnsortedSegmentSum is a single pass over the wasm heap (memory bound).
//
// It runs one thread. tfjs-backend-wasm loads its threaded build in Node only
// when WASM_HAS_MULTITHREAD_SUPPORT is forced, and then its Emscripten glue
// starts workers from a blob: URL, which Node's worker_threads refuses
// (ERR_WORKER_PATH); that needs a browser-like Worker shim, not done here.
import { createRequire } from 'node:module';
import * as path from 'node:path';
import * as tf from '../core/tf.js';
import type { KernelBackend, KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs-core';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

const { backend_util, util } = tf;
type Conv2DInfo = ReturnType<typeof backend_util.computeConv2DInfo>;
type Pad = Parameters<typeof backend_util.computeConv2DInfo>[4];
type Rounding = Parameters<typeof backend_util.computeConv2DInfo>[5];

let registration: Promise<boolean> | undefined;
let loadError: Error | undefined;

/** Why the wasm backend could not be registered, if it could not. */
export function wasmLoadError(): Error | undefined {
  return loadError;
}

/**
 * Registers tfjs-backend-wasm and our gradient kernels for it. Resolves false
 * (and records why, see wasmLoadError) when the wasm module cannot load.
 * Leaves the active backend as it was, when one was set.
 */
export function registerWasmBackend(): Promise<boolean> {
  registration ??= doRegister().catch((e: unknown) => {
    loadError = e instanceof Error ? e : new Error(String(e));
    return false;
  });
  return registration;
}

async function doRegister(): Promise<boolean> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  // The .wasm binaries sit next to the package's main file; say so explicitly
  // (a file-system prefix, read with fs in Node) rather than rely on __dirname
  // guessing inside the bundle.
  const main = createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm');
  try {
    wasm.setWasmPaths(path.dirname(main) + path.sep);
  } catch {
    // Already initialised by someone else: it found its binaries then.
  }
  const previous = tf.engine().backendName as string | undefined;
  let ok = false;
  try {
    ok = await tf.setBackend('wasm');
  } finally {
    if (previous && previous !== 'wasm') await tf.setBackend(previous);
  }
  if (!ok) {
    tf.removeBackend('wasm'); // so that no later default pick tries it again
    throw new Error('tfjs-backend-wasm failed to initialise (its .wasm binary did not load)');
  }
  registerGradientKernels();
  return true;
}

// ---------------------------------------------------------------------------
// Composition helpers.

const kernelCache = new Map<string, KernelFunc>();

function wasmKernel(name: string): KernelFunc {
  let k = kernelCache.get(name);
  if (!k) {
    const config = tf.getKernel(name, 'wasm');
    if (!config) throw new Error(`wasm backend: kernel ${name} is missing`);
    k = config.kernelFunc;
    kernelCache.set(name, k);
  }
  return k;
}

/** Runs wasm kernels and frees every intermediate except the ones kept. */
class Scope {
  private readonly temps: TensorInfo[] = [];
  constructor(readonly backend: BackendWasm) {}

  run(name: string, inputs: Record<string, TensorInfo>, attrs: object = {}): TensorInfo {
    const out = wasmKernel(name)({
      inputs,
      attrs: attrs as unknown as NamedAttrMap,
      backend: this.backend as unknown as KernelBackend,
    }) as TensorInfo;
    this.temps.push(out);
    return out;
  }

  reshape(x: TensorInfo, shape: number[]): TensorInfo {
    return util.arraysEqual(x.shape, shape) ? x : this.run('Reshape', { x }, { shape });
  }

  transpose(x: TensorInfo, perm: number[]): TensorInfo {
    return this.run('Transpose', { x }, { perm });
  }

  keep(t: TensorInfo): TensorInfo {
    const i = this.temps.indexOf(t);
    if (i >= 0) this.temps.splice(i, 1);
    return t;
  }

  dispose(): void {
    for (const t of this.temps) this.backend.disposeData(t.dataId);
    this.temps.length = 0;
  }
}

function withScope(backend: unknown, fn: (s: Scope) => TensorInfo, inputs: TensorInfo[]): TensorInfo {
  const s = new Scope(backend as unknown as BackendWasm);
  try {
    const out = fn(s);
    if (inputs.some((i) => i.dataId === out.dataId)) {
      // Never hand back an input's storage without a reference of our own.
      (backend as unknown as BackendWasm).incRef(out.dataId);
    }
    return s.keep(out);
  } finally {
    s.dispose();
  }
}

/**
 * Convolution of `x` with explicit (possibly negative) paddings: negative ones
 * crop `x` first, the wasm conv kernels accept only non-negative ones.
 */
function convWithPads(
  s: Scope,
  x: TensorInfo,
  filter: TensorInfo,
  pads: { top: number; bottom: number; left: number; right: number },
  strides: [number, number],
  dilations: [number, number],
  depthwise: boolean,
): TensorInfo {
  let { top, bottom, left, right } = pads;
  if (top < 0 || bottom < 0 || left < 0 || right < 0) {
    const [n, h, w, c] = x.shape as [number, number, number, number];
    const ct = Math.max(0, -top), cb = Math.max(0, -bottom), cl = Math.max(0, -left), cr = Math.max(0, -right);
    x = s.run('Slice', { x }, { begin: [0, ct, cl, 0], size: [n, h - ct - cb, w - cl - cr, c] });
    top = Math.max(0, top); bottom = Math.max(0, bottom); left = Math.max(0, left); right = Math.max(0, right);
  }
  const attrs = {
    strides,
    dilations,
    pad: [[0, 0], [top, bottom], [left, right], [0, 0]],
    dataFormat: 'NHWC',
    dimRoundingMode: undefined,
  };
  return s.run(depthwise ? 'DepthwiseConv2dNative' : 'Conv2D', { x, filter }, attrs);
}

/** Inserts stride-1 zeros between the rows and columns of NHWC `dy` (plus stride-1 trailing ones). */
function zeroInsert(s: Scope, dy: TensorInfo, sh: number, sw: number): TensorInfo {
  if (sh === 1 && sw === 1) return dy;
  const [n, oh, ow, c] = dy.shape as [number, number, number, number];
  const six = s.reshape(dy, [n, oh, 1, ow, 1, c]);
  const padded = s.run('PadV2', { x: six }, {
    paddings: [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]],
    constantValue: 0,
  });
  return s.reshape(padded, [n, oh * sh, ow * sw, c]);
}

/**
 * Gradient of a (depthwise) convolution with respect to its input: a stride-1
 * convolution of the zero-inserted dy with the flipped filter. `flipped` is the
 * filter already reversed in space, laid out for that convolution.
 */
function inputGradient(s: Scope, dy: TensorInfo, flipped: TensorInfo, info: Conv2DInfo, depthwise: boolean): TensorInfo {
  const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = info;
  const khe = info.effectiveFilterHeight;
  const kwe = info.effectiveFilterWidth;
  const z = zeroInsert(s, dy, sh, sw);
  const top = khe - 1 - info.padInfo.top;
  const left = kwe - 1 - info.padInfo.left;
  // Rows of z (with its trailing zeros) are outHeight*stride; the output must have inHeight rows.
  const bottom = info.inHeight - (z.shape[1]! + top - khe + 1);
  const right = info.inWidth - (z.shape[2]! + left - kwe + 1);
  return convWithPads(s, z, flipped, { top, bottom, left, right }, [1, 1], [dh, dw], depthwise);
}

/**
 * Gradient of a strided convolution (dilation 1) with respect to its input,
 * without the zeros: output rows i with (i + pad) = r (mod stride) only meet
 * filter taps r, r + stride, ..., so each of the stride^2 phases is a stride-1
 * convolution of dy with that sub-filter; the phases are then interleaved.
 * `flipped` is the filter reversed in space, [KH, KW, C_out, C_in].
 */
function phasedInputGradient(s: Scope, dy: TensorInfo, flipped: TensorInfo, info: Conv2DInfo): TensorInfo {
  const { strideHeight: sh, strideWidth: sw, filterHeight: kh, filterWidth: kw, inHeight: h, inWidth: w } = info;
  const [n, oh, ow] = dy.shape as [number, number, number, number];
  const cin = info.inChannels;
  const qh = Math.ceil(h / sh);
  const qw = Math.ceil(w / sw);
  // For one axis and one residue r of (i + pad) mod stride: taps, first q, and i0 = the first row it fills.
  const axis = (r: number, stride: number, k: number, pad: number) => {
    const taps = r < k ? Math.ceil((k - r) / stride) : 0;
    const q0 = Math.ceil((pad - r) / stride);
    return { taps, q0, i0: q0 * stride + r - pad, start: k - 1 - r - stride * (taps - 1) };
  };
  // Each phase goes to rows i0h, i0h + sh, ... and columns i0w, i0w + sw, ...:
  // zero-inserted there (one PadV2), then all phases summed (one AddN).
  // (A rank-6 Transpose or DepthToSpace would weave them too, but measured
  // 10-25x slower in tfjs-backend-wasm.)
  const placed: TensorInfo[] = [];
  for (let rh = 0; rh < sh; rh++) {
    const ah = axis(rh, sh, kh, info.padInfo.top);
    for (let rw = 0; rw < sw; rw++) {
      const aw = axis(rw, sw, kw, info.padInfo.left);
      if (ah.taps === 0 || aw.taps === 0) continue; // taps beyond a kernel smaller than the stride: zeros
      const sub = s.run('StridedSlice', { x: flipped }, {
        begin: [ah.start, aw.start, 0, 0],
        end: [ah.start + sh * (ah.taps - 1) + 1, aw.start + sw * (aw.taps - 1) + 1, flipped.shape[2]!, cin],
        strides: [sh, sw, 1, 1],
        beginMask: 0, endMask: 0, ellipsisMask: 0, newAxisMask: 0, shrinkAxisMask: 0,
      });
      const top = ah.taps - 1 - ah.q0;
      const left = aw.taps - 1 - aw.q0;
      const phase = convWithPads(s, dy, sub, {
        top, bottom: qh - oh - top + ah.taps - 1, left, right: qw - ow - left + aw.taps - 1,
      }, [1, 1], [1, 1], false); // [N, qh, qw, C_in]
      const spread = s.run('PadV2', { x: s.reshape(phase, [n, qh, 1, qw, 1, cin]) }, {
        paddings: [[0, 0], [0, 0], [ah.i0, sh - 1 - ah.i0], [0, 0], [aw.i0, sw - 1 - aw.i0], [0, 0]],
        constantValue: 0,
      });
      placed.push(s.reshape(spread, [n, qh * sh, qw * sw, cin]));
    }
  }
  const woven = placed.length === 1 ? placed[0]! : s.run('AddN', placed as unknown as Record<string, TensorInfo>);
  return qh * sh === h && qw * sw === w
    ? woven
    : s.run('Slice', { x: woven }, { begin: [0, 0, 0, 0], size: [n, h, w, cin] });
}

function toNHWC(s: Scope, t: TensorInfo, dataFormat: unknown): TensorInfo {
  return dataFormat === 'NCHW' ? s.transpose(t, [0, 2, 3, 1]) : t;
}
// ---------------------------------------------------------------------------
// Kernels.

/** dW[kh,kw,ci,co] = sum x[n, oh*s+kh-pt, ow*s+kw-pl, ci] dy[n,oh,ow,co], as one convolution. */
const conv2DBackpropFilter: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as {
    strides: number | [number, number];
    pad: Pad;
    dataFormat: 'NHWC' | 'NCHW';
    dimRoundingMode?: Rounding;
    filterShape: [number, number, number, number];
  };
  return withScope(backend, (s) => {
    const xn = toNHWC(s, x, dataFormat);
    const dyn = toNHWC(s, dy, dataFormat);
    const info = backend_util.computeConv2DInfo(
      xn.shape as [number, number, number, number], filterShape, strides, 1, pad, dimRoundingMode, false, 'channelsLast');
    const { filterHeight: kh, filterWidth: kw, strideHeight: sh, strideWidth: sw, inHeight, inWidth, outHeight, outWidth } = info;
    const { top, left } = info.padInfo;
    const xt = s.transpose(xn, [3, 1, 2, 0]); // [C_in, H, W, N]
    const dyt = s.transpose(dyn, [1, 2, 0, 3]); // [OH, OW, N, C_out]: a filter
    // The output is [C_in, KH, KW, C_out] when the bottom/right pads are chosen so;
    // a negative one crops rows the forward pass never read.
    const bottom = kh - 1 + (outHeight - 1) * sh - inHeight - top + 1;
    const right = kw - 1 + (outWidth - 1) * sw - inWidth - left + 1;
    const g = convWithPads(s, xt, dyt, { top, bottom, left, right }, [1, 1], [sh, sw], false);
    return s.transpose(g, [1, 2, 0, 3]);
  }, [x, dy]);
};

/**
 * dx is the stride-1 convolution of dy, zero-inserted when the stride is above
 * 1, with the spatially flipped filter whose in/out channels are swapped.
 */
const conv2DBackpropInput: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
  const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs as unknown as {
    strides: number | [number, number];
    pad: Pad;
    dataFormat: 'NHWC' | 'NCHW';
    dimRoundingMode?: Rounding;
    inputShape: [number, number, number, number];
  };
  return withScope(backend, (s) => {
    const [a, b, c, d] = inputShape;
    const xShape: [number, number, number, number] = dataFormat === 'NCHW' ? [a, c, d, b] : [a, b, c, d];
    const info = backend_util.computeConv2DInfo(
      xShape, filter.shape as [number, number, number, number], strides, 1, pad, dimRoundingMode, false, 'channelsLast');
    const flipped = s.transpose(s.run('Reverse', { x: filter }, { dims: [0, 1] }), [0, 1, 3, 2]);
    const dyn = toNHWC(s, dy, dataFormat);
    const dx = info.strideHeight > 1 || info.strideWidth > 1
      ? phasedInputGradient(s, dyn, flipped, info)
      : inputGradient(s, dyn, flipped, info, false);
    return dataFormat === 'NCHW' ? s.transpose(dx, [0, 3, 1, 2]) : dx;
  }, [dy, filter]);
};

const depthwiseBackpropInput: KernelFunc = ({ inputs, backend, attrs }) => {
  const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
  const { strides, dilations, pad, dimRoundingMode, inputShape } = attrs as unknown as {
    strides: number | [number, number];
    dilations?: number | [number, number];
    pad: Pad;
    dimRoundingMode?: Rounding;
    inputShape: [number, number, number, number];
  };
  return withScope(backend, (s) => {
    const [kh, kw, c, m] = filter.shape as [number, number, number, number];
    const info = backend_util.computeConv2DInfo(
      inputShape, [kh, kw, c, m], strides, dilations ?? 1, pad, dimRoundingMode, true);
    // Each of the C*M channels of dy is convolved with its own flipped tap set.
    const flipped = s.reshape(s.run('Reverse', { x: filter }, { dims: [0, 1] }), [kh, kw, c * m, 1]);
    const g = inputGradient(s, dy, flipped, info, true); // [N, H, W, C*M]
    if (m === 1) return g;
    const [n, h, w] = inputShape;
    return s.run('Sum', { x: s.reshape(g, [n, h, w, c, m]) }, { axis: [4], keepDims: false });
  }, [dy, filter]);
};

/** dW[kh,kw,c,m] = sum over n,oh,ow of (strided slice of padded x at tap kh,kw) * dy. */
const depthwiseBackpropFilter: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const { strides, dilations, pad, dimRoundingMode, filterShape } = attrs as unknown as {
    strides: number | [number, number];
    dilations?: number | [number, number];
    pad: Pad;
    dimRoundingMode?: Rounding;
    filterShape: [number, number, number, number];
  };
  return withScope(backend, (s) => {
    const info = backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number], filterShape, strides, dilations ?? 1, pad, dimRoundingMode, true);
    const [kh, kw, c, m] = filterShape;
    const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw, outHeight: oh, outWidth: ow } = info;
    const { top, left } = info.padInfo;
    const [n, h, w] = x.shape as [number, number, number, number];
    // Pad x so every tap's window lies inside it.
    const needH = (oh - 1) * sh + (kh - 1) * dh + 1;
    const needW = (ow - 1) * sw + (kw - 1) * dw + 1;
    const padB = Math.max(0, needH - h - top);
    const padR = Math.max(0, needW - w - left);
    const xp = top > 0 || left > 0 || padB > 0 || padR > 0
      ? s.run('PadV2', { x }, { paddings: [[0, 0], [top, padB], [left, padR], [0, 0]], constantValue: 0 })
      : x;
    const dy5 = s.reshape(dy, [n, oh, ow, c, m]);
    const taps: TensorInfo[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const patch = s.run('StridedSlice', { x: xp }, {
          begin: [0, i * dh, j * dw, 0],
          end: [n, i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1, c],
          strides: [1, sh, sw, 1],
          beginMask: 0, endMask: 0, ellipsisMask: 0, newAxisMask: 0, shrinkAxisMask: 0,
        });
        const prod = s.run('Multiply', { a: s.reshape(patch, [n, oh, ow, c, 1]), b: dy5 });
        taps.push(s.run('Sum', { x: prod }, { axis: [0, 1, 2], keepDims: false }));
      }
    }
    const stacked = taps.length === 1 ? taps[0]! : s.run('Pack', taps as unknown as Record<string, TensorInfo>, { axis: 0 });
    return s.reshape(stacked, [kh, kw, c, m]);
  }, [x, dy]);
};

const unsortedSegmentSum: KernelFunc = ({ inputs, backend, attrs }) => {
  const { x, segmentIds } = inputs as { x: TensorInfo; segmentIds: TensorInfo };
  const { numSegments } = attrs as unknown as { numSegments: number };
  const b = backend as unknown as BackendWasm;
  const outer = util.sizeFromShape(segmentIds.shape);
  const inner = util.sizeFromShape(x.shape.slice(segmentIds.shape.length));
  const out = b.makeOutput([numSegments, ...x.shape.slice(segmentIds.shape.length)], x.dtype);
  // Views after makeOutput: allocating may grow (and detach) the wasm heap.
  const xv = b.typedArrayFromHeap(x);
  const ids = b.typedArrayFromHeap(segmentIds);
  const ov = b.typedArrayFromHeap(out);
  ov.fill(0);
  for (let i = 0; i < outer; i++) {
    const seg = ids[i]!;
    if (seg < 0 || seg >= numSegments) continue; // as tfjs-cpu: out-of-range ids are dropped
    const src = i * inner;
    const dst = seg * inner;
    for (let j = 0; j < inner; j++) ov[dst + j]! += xv[src + j]!;
  }
  return out;
};

function registerGradientKernels(): void {
  const replace = (kernelName: string, kernelFunc: KernelFunc) => {
    if (tf.getKernel(kernelName, 'wasm')) tf.unregisterKernel(kernelName, 'wasm');
    tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc } as KernelConfig);
  };
  replace('Conv2DBackpropFilter', conv2DBackpropFilter);
  replace('Conv2DBackpropInput', conv2DBackpropInput);
  replace('DepthwiseConv2dNativeBackpropFilter', depthwiseBackpropFilter);
  replace('DepthwiseConv2dNativeBackpropInput', depthwiseBackpropInput);
  replace('UnsortedSegmentSum', unsortedSegmentSum);
}

