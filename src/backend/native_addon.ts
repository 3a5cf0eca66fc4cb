// Loads the C++ addon built by node-gyp from native/. The addon knows nothing
// of tfjs: every function takes raw Float32Arrays and integer dimension lists.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

type F32 = Float32Array;
type Dims = number[];

export interface NativeAddon {
  setThreads(n: number): number;
  /** bf16: whether oneDNN runs native bf16 kernels here; precision: the one in force. */
  info(): { onednn: string; threads: number; isa: number; bf16: boolean; precision: 'f32' | 'bf16' };
  /**
   * Precision of convolutions and matmuls from now on, process-wide: bf16
   * converts their inputs to bfloat16 inside the kernel and accumulates and
   * writes f32 (buffers stay Float32Arrays). Throws for bf16 without AVX512-BF16.
   */
  setPrecision(precision: 'f32' | 'bf16'): string;

  /** dims: [N,H,W,C, KH,KW,OC, OH,OW, strideH,strideW, dilH,dilW, padTop,padLeft,padBottom,padRight, groups, relu] */
  conv2d(x: F32, w: F32, bias: F32 | null, y: F32, dims: Dims): void;
  /**
   * The oneDNN implementation this shape runs in `direction` (default forward)
   * at the current precision, then its input data type: e.g. `jit_wino_4x3:avx512_core f32`.
   */
  conv2dImplementation(dims: Dims, direction?: 'forward' | 'backwardData' | 'backwardWeights'): string;
  /** dx from dy; same dims as conv2d (relu ignored). */
  conv2dBackwardData(dy: F32, w: F32, dx: F32, dims: Dims): void;
  /** dw (and optionally dbias) from x and dy; same dims as conv2d. */
  conv2dBackwardWeights(x: F32, dy: F32, dw: F32, dbias: F32 | null, dims: Dims): void;

  /** dims: [batchA, batchB, M, K, N, transposeA, transposeB, activation(0 none,1 relu)]; batch of A or B may be 1 (broadcast). */
  matmul(a: F32, b: F32, bias: F32 | null, c: F32, dims: Dims): void;
  /** The oneDNN implementation and input data type of this matmul at the current precision, e.g. `brg:avx512_core_bf16 bf16`. */
  matmulImplementation(dims: Dims): string;

  /** Training-mode batch norm over [rows, C] (NHWC flattened). Writes y, batch mean and biased variance. */
  batchNormTrain(x: F32, gamma: F32, beta: F32, y: F32, mean: F32, variance: F32, dims: Dims, epsilon: number, residual: F32 | null, relu: boolean): void;
  /** Backward of batchNormTrain: dx, dgamma, dbeta; with the forward's ReLU output y, dy is masked first and written to dresidual. */
  batchNormTrainBackward(x: F32, dy: F32, gamma: F32, mean: F32, variance: F32, dx: F32, dgamma: F32, dbeta: F32, dims: Dims, epsilon: number,
    y: F32 | null, dresidual: F32 | null): void;
  /** Inference batch norm with given statistics; scale/offset may be null. */
  batchNormInference(x: F32, mean: F32, variance: F32, scale: F32 | null, offset: F32 | null, y: F32, dims: Dims, epsilon: number): void;

  /** dims: [N,H,W,C, KH,KW, OH,OW, strideH,strideW, padTop,padLeft,padBottom,padRight] */
  maxPool(x: F32, y: F32, dims: Dims): void;
  maxPoolBackward(x: F32, dy: F32, dx: F32, dims: Dims): void;
  avgPool(x: F32, y: F32, dims: Dims): void;
  avgPoolBackward(dy: F32, dx: F32, dims: Dims): void;

  /** Op names of unary/binary/reduce; an op's code is its index here. */
  unaryOps: string[];
  binaryOps: string[];
  reduceOps: string[];
  /** y = op(x) element-wise; alpha is Step's and LeakyRelu's attribute (ignored by the rest). */
  unary(op: number, x: F32, y: F32, alpha: number): void;
  /** y = op(a, b) with a and b broadcast (numpy rules) to yShape. */
  binary(op: number, a: F32, aShape: Dims, b: F32, bShape: Dims, y: F32, yShape: Dims): void;
  /** y = xs[0] + xs[1] + ... (all the same length). */
  addN(xs: F32[], y: F32): void;
  /** Softmax (or log-softmax) of each row of x viewed as [rows, cols]. */
  softmax(x: F32, y: F32, rows: number, cols: number, log: boolean): void;
  /** One momentum-SGD step of one parameter (PyTorch's formula), into pOut and bufOut. */
  sgdMomentum(p: F32, g: F32, buf: F32, pOut: F32, bufOut: F32, lr: number, momentum: number, weightDecay: number, nesterov: boolean): void;
  /** The index of the first array holding a NaN or an infinity, or -1. */
  firstNonFinite(xs: F32[]): number;
  /** outs[k] = a xs[k] + b ys[k] for every k. */
  axpby(xs: F32[], ys: F32[], outs: F32[], a: number, b: number): void;
  /** y[o, i] = op over r of x[o, r, i], x viewed as [outer, n, inner]. */
  reduce(op: number, x: F32, y: F32, outer: number, n: number, inner: number): void;
  /** y's dimension i is x's dimension perm[i]. */
  transpose(x: F32, shape: Dims, perm: Dims, y: F32): void;
  slice(x: F32, shape: Dims, begin: Dims, size: Dims, y: F32): void;
  /** Constant padding: y's shape is before + shape + after. */
  pad(x: F32, shape: Dims, before: Dims, after: Dims, value: number, y: F32): void;
  tile(x: F32, shape: Dims, reps: Dims, y: F32): void;
  /** xs[k] viewed as [outer, inners[k]], concatenated along the second axis. */
  concat(xs: F32[], outer: number, inners: Dims, y: F32): void;
  /** y's row j is x's row indices[j], both viewed as rows of rowLength; throws on an index out of range. */
  gatherRows(x: F32, rowLength: number, indices: Int32Array, y: F32): void;

  [name: string]: unknown;
}

// SELFSUP_NATIVE_ADDON points at another build (tests use it to check the missing-addon error).
const addonPath =
  process.env.SELFSUP_NATIVE_ADDON ?? fileURLToPath(new URL('../../../native/build/Release/selfsup_native.node', import.meta.url));

let cached: NativeAddon | undefined;
let loadError: Error | undefined;

/** The addon, or an Error that says what is missing and how to fix it. */
export function loadNativeAddon(): NativeAddon | Error {
  if (cached) return cached;
  if (loadError) return loadError;
  if (!existsSync(addonPath)) {
    loadError = new Error(
      `the native oneDNN addon is not built (${addonPath} is missing). ` +
        'Run `npm run setup` (it installs libdnnl-dev and builds it), or by hand: ' +
        'sudo apt-get install libdnnl-dev g++ make && npm run build:native',
    );
    return loadError;
  }
  try {
    cached = createRequire(import.meta.url)(addonPath) as NativeAddon;
    return cached;
  } catch (e) {
    const msg = (e as Error).message;
    const hint = /libdnnl/.test(msg)
      ? 'libdnnl (oneDNN) is not installed: sudo apt-get install libdnnl-dev, then npm run build:native'
      : 'rebuild it with: npm run build:native';
    loadError = new Error(`the native oneDNN addon failed to load (${msg}); ${hint}`);
    return loadError;
  }
}

export function nativeAddon(): NativeAddon {
  const a = loadNativeAddon();
  if (a instanceof Error) throw a;
  return a;
}
