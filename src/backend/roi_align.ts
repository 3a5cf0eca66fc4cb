// RoIAlign (Mask R-CNN, He et al. 2017, §3) on NHWC features with
// detectron2's ROIAlignV2 semantics (torchvision's roi_align, aligned=True) and
// the legacy aligned=False variant. Like the fused ops in ops.ts it is a kernel
// with its own gradient where the backend provides one (`native`), and a
// composite of stock tfjs ops everywhere else: a gather of the four bilinear
// corners of every sample, weighted and summed, which tfjs differentiates
// through GatherV2's gradient.
//
// The gradient flows to the features only: boxes are constants, as detectron2
// detaches its proposals.
import * as tf from '../core/tf.js';
import type { Tensor, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';

export const RoiAlign = 'SelfsupRoiAlign';
export const RoiAlignGrad = 'SelfsupRoiAlignGrad';

export interface RoiAlignSettings {
  pooledHeight: number;
  pooledWidth: number;
  /** Multiplies the box coordinates: 1 / the feature map's stride. */
  spatialScale: number;
  /** Samples per bin side; 0 = adaptive, ceil(roi size / pooled size). */
  samplingRatio: number;
  /** Shift boxes by -0.5 px (ROIAlignV2); false = the original RoIAlign, boxes at least 1x1. */
  aligned: boolean;
}

/** The kernels' attributes: the settings plus the features' shape, which the gradient kernel needs. */
export interface RoiAlignAttrs extends RoiAlignSettings {
  featureShape: [number, number, number, number];
}

/**
 * features [N,H,W,C] float32; rois [R,5] = (batchIndex, x0, y0, x1, y1) in
 * input-image pixels (multiplied by spatialScale); returns [R,PH,PW,C].
 * Differentiable w.r.t. features only (boxes are constants, as detectron2
 * detaches proposals).
 */
export function roiAlign(features: Tensor4D, rois: Tensor2D, settings: RoiAlignSettings): Tensor4D {
  checkSettings(settings);
  if (features.rank !== 4 || features.dtype !== 'float32') {
    throw new Error(`roiAlign: features must be a float32 [N,H,W,C] tensor, got ${features.dtype} [${features.shape}]`);
  }
  if (rois.rank !== 2 || rois.shape[1] !== 5) throw new Error(`roiAlign: rois must be [R,5], got [${rois.shape}]`);
  const featureShape = features.shape as [number, number, number, number];
  if (tf.getKernel(RoiAlign, tf.getBackend())) {
    const boxes = rois.dtype === 'float32' ? rois : tf.cast(rois, 'float32');
    const attrs: RoiAlignAttrs = { ...pick(settings), featureShape };
    const y = tf.engine().runKernel(RoiAlign, { x: features, rois: boxes }, attrs as unknown as tf.NamedAttrMap) as Tensor4D;
    if (boxes !== rois) boxes.dispose();
    return y;
  }
  return roiAlignComposite(features, Float32Array.from(rois.dataSync()), settings);
}

/** The same on host typed arrays (reference / mask targets: RoIAlign of a GT bitmask with C=1). */
export function roiAlignHost(
  data: Float32Array,
  shape: [number, number, number, number],
  rois: Float32Array,
  settings: RoiAlignSettings,
): Float32Array {
  checkSettings(settings);
  const [n, h, w, c] = shape;
  if (data.length !== n * h * w * c) throw new Error(`roiAlignHost: data has ${data.length} values, shape [${shape}] says ${n * h * w * c}`);
  if (rois.length % 5 !== 0) throw new Error(`roiAlignHost: rois has ${rois.length} values, not a multiple of 5`);
  const taps = roiAlignTaps(shape, rois, settings);
  const out = new Float32Array((taps.start.length - 1) * c);
  for (let cell = 0; cell + 1 < taps.start.length; cell++) {
    const o = cell * c;
    for (let i = taps.start[cell]!; i < taps.start[cell + 1]!; i++) {
      const base = taps.pixel[i]! * c;
      const wt = taps.weight[i]!;
      for (let ch = 0; ch < c; ch++) out[o + ch] += wt * data[base + ch]!;
    }
  }
  return out;
}

/**
 * Every output bin's bilinear taps: bin k (RoI-major, then row, then column)
 * reads pixels pixel[start[k] .. start[k+1]) of the [N*H*W] map with the given
 * weights, already divided by the bin's sample count. Zero weights and samples
 * more than a pixel outside the map are left out. Mirrors native/src/roi_align.cc
 * operation for operation, in double, so both pick the same samples.
 */
export function roiAlignTaps(
  shape: readonly [number, number, number, number],
  rois: ArrayLike<number>,
  settings: RoiAlignSettings,
): { pixel: Int32Array; weight: Float32Array; start: Int32Array } {
  const [n, h, w] = shape;
  const { pooledHeight: ph, pooledWidth: pw } = settings;
  const r = Math.floor(rois.length / 5);
  const boxes = Array.from({ length: r }, (_, i) => roiGeometry(rois, i, settings));
  const capacity = boxes.reduce((sum, g) => sum + ph * pw * g.gridH * g.gridW * 4, 0);
  const pixel = new Int32Array(capacity);
  const weight = new Float32Array(capacity);
  const start = new Int32Array(r * ph * pw + 1);
  let taps = 0;
  let cell = 0;
  const emit = (p: number, product: number, count: number) => {
    const wk = Math.fround(product / count);
    if (wk !== 0) {
      pixel[taps] = p;
      weight[taps++] = wk;
    }
  };
  for (let i = 0; i < r; i++) {
    const g = boxes[i]!;
    const base = batchIndexOf(rois[i * 5]!, n) * h * w;
    // Bilinear sampling is separable: each sample row and column once, a sample's taps are their products.
    const rows = sampleCoordinates(g.y0, g.binH, ph, g.gridH, h);
    const cols = sampleCoordinates(g.x0, g.binW, pw, g.gridW, w);
    const count = Math.max(g.gridH * g.gridW, 1);
    for (let py = 0; py < ph; py++) {
      for (let px = 0; px < pw; px++) {
        for (let iy = 0; iy < g.gridH; iy++) {
          const ty = rows[py * g.gridH + iy]!;
          if (!ty.inside) continue;
          for (let ix = 0; ix < g.gridW; ix++) {
            const tx = cols[px * g.gridW + ix]!;
            if (!tx.inside) continue;
            emit(base + ty.lo * w + tx.lo, ty.wlo * tx.wlo, count);
            emit(base + ty.lo * w + tx.hi, ty.wlo * tx.whi, count);
            emit(base + ty.hi * w + tx.lo, ty.whi * tx.wlo, count);
            emit(base + ty.hi * w + tx.hi, ty.whi * tx.whi, count);
          }
        }
        start[++cell] = taps;
      }
    }
  }
  return { pixel: pixel.subarray(0, taps), weight: weight.subarray(0, taps), start };
}

/** The box in feature-map pixels and its sampling grid (the adaptive grid is ceil(roi size / pooled size) per side). */
function roiGeometry(rois: ArrayLike<number>, i: number, s: RoiAlignSettings) {
  const offset = s.aligned ? 0.5 : 0;
  const x0 = rois[i * 5 + 1]! * s.spatialScale - offset;
  const y0 = rois[i * 5 + 2]! * s.spatialScale - offset;
  let roiW = rois[i * 5 + 3]! * s.spatialScale - offset - x0;
  let roiH = rois[i * 5 + 4]! * s.spatialScale - offset - y0;
  // The legacy (unaligned) RoIAlign forces boxes to at least 1x1.
  if (!s.aligned) {
    roiW = Math.max(roiW, 1);
    roiH = Math.max(roiH, 1);
  }
  return {
    x0,
    y0,
    binW: roiW / s.pooledWidth,
    binH: roiH / s.pooledHeight,
    gridW: Math.max(s.samplingRatio > 0 ? s.samplingRatio : Math.ceil(roiW / s.pooledWidth), 0),
    gridH: Math.max(s.samplingRatio > 0 ? s.samplingRatio : Math.ceil(roiH / s.pooledHeight), 0),
  };
}

interface AxisTap {
  lo: number;
  hi: number;
  wlo: number;
  whi: number;
  inside: boolean;
}

/**
 * Bin p's sample i along one axis of length `size` sits at start + p bin + (i + 1/2) bin / grid.
 * A sample more than a pixel outside the map contributes nothing; coordinates in
 * [-1, 0] clamp to the first pixel, those past the last pixel centre to the last.
 */
function sampleCoordinates(start: number, bin: number, pooled: number, grid: number, size: number): AxisTap[] {
  const out: AxisTap[] = [];
  for (let p = 0; p < pooled; p++) {
    for (let i = 0; i < grid; i++) {
      let v = start + p * bin + ((i + 0.5) * bin) / grid;
      const inside = !(v < -1 || v > size);
      if (v <= 0) v = 0;
      let lo = Math.trunc(v);
      let hi: number;
      if (lo >= size - 1) {
        lo = hi = size - 1;
        v = lo;
      } else hi = lo + 1;
      const whi = v - lo;
      out.push({ lo, hi, wlo: 1 - whi, whi, inside });
    }
  }
  return out;
}

/**
 * Backends without the kernel: gather each bin's distinct pixels from the
 * features viewed as [N*H*W, C], weight, and sum. Bins are padded to the
 * largest bin's pixel count with zero-weight reads of pixel 0. The backward is
 * the transpose, a ScatterNd that sums duplicate indices: GatherV2's stock
 * gradient goes through UnsortedSegmentSum, which tfjs-cpu computes with one
 * masked pass over all the rows per segment (per feature pixel here).
 */
function roiAlignComposite(features: Tensor4D, rois: Float32Array, settings: RoiAlignSettings): Tensor4D {
  const [n, h, w, c] = features.shape;
  const { index, weight, cells, k } = paddedBins(roiAlignTaps([n, h, w, c], rois, settings), n * h * w);
  const outShape = [rois.length / 5, settings.pooledHeight, settings.pooledWidth, c];
  const pool = tf.customGrad((f) => {
    const value = tf.tidy(() => {
      const rows = tf.gather(tf.reshape(f as Tensor, [n * h * w, c]), tf.tensor1d(index, 'int32'));
      const weighted = tf.mul(rows, tf.tensor2d(weight, [cells * k, 1]));
      return tf.reshape(tf.sum(tf.reshape(weighted, [cells, k, c]), 1), outShape);
    });
    const gradFunc = (dy: Tensor) =>
      tf.tidy(() => {
        const spread = tf.mul(tf.reshape(dy, [cells, 1, c]), tf.tensor3d(weight, [cells, k, 1]));
        const dx = tf.scatterND(tf.tensor2d(index, [cells * k, 1], 'int32'), tf.reshape(spread, [cells * k, c]), [n * h * w, c]);
        return tf.reshape(dx, [n, h, w, c]);
      });
    return { value, gradFunc };
  });
  return pool(features) as Tensor4D;
}

/** The taps merged per bin (one entry per distinct pixel) and padded to a common count k >= 1. */
function paddedBins(taps: ReturnType<typeof roiAlignTaps>, pixels: number) {
  const cells = taps.start.length - 1;
  const seenIn = new Int32Array(pixels).fill(-1);
  const slotOf = new Int32Array(pixels);
  const binPixels: number[][] = [];
  const binWeights: number[][] = [];
  let k = 1;
  for (let cell = 0; cell < cells; cell++) {
    const ids: number[] = [];
    const weights: number[] = [];
    for (let i = taps.start[cell]!; i < taps.start[cell + 1]!; i++) {
      const p = taps.pixel[i]!;
      if (seenIn[p] !== cell) {
        seenIn[p] = cell;
        slotOf[p] = ids.length;
        ids.push(p);
        weights.push(taps.weight[i]!);
      } else weights[slotOf[p]!] += taps.weight[i]!;
    }
    binPixels.push(ids);
    binWeights.push(weights);
    k = Math.max(k, ids.length);
  }
  const index = new Int32Array(cells * k);
  const weight = new Float32Array(cells * k);
  for (let cell = 0; cell < cells; cell++) {
    index.set(binPixels[cell]!, cell * k);
    weight.set(binWeights[cell]!, cell * k);
  }
  return { index, weight, cells, k };
}

tf.registerGradient({
  kernelName: RoiAlign,
  inputsToSave: ['rois'],
  gradFunc: (dy, saved, attrs) => {
    const [rois] = saved as Tensor[];
    const dyY = Array.isArray(dy) ? dy[0]! : dy;
    return {
      x: () => tf.engine().runKernel(RoiAlignGrad, { dy: dyY, rois: rois! }, attrs) as Tensor,
      rois: () => tf.zerosLike(rois!),
    };
  },
});

function batchIndexOf(value: number, n: number): number {
  // As the C++ kernel: the float index truncates; outside the batch is an error, not a foreign read.
  if (!(value >= 0 && value < n)) throw new Error(`roiAlign: batch index ${value} is outside the batch of ${n}`);
  return Math.trunc(value);
}

function pick(s: RoiAlignSettings): RoiAlignSettings {
  return { pooledHeight: s.pooledHeight, pooledWidth: s.pooledWidth, spatialScale: s.spatialScale, samplingRatio: s.samplingRatio, aligned: s.aligned };
}

function checkSettings(s: RoiAlignSettings): void {
  const positiveInt = (v: number) => Number.isInteger(v) && v >= 1;
  if (!positiveInt(s.pooledHeight) || !positiveInt(s.pooledWidth)) {
    throw new Error(`roiAlign: pooled size must be positive integers, got ${s.pooledHeight}x${s.pooledWidth}`);
  }
  if (!(Number.isInteger(s.samplingRatio) && s.samplingRatio >= 0)) {
    throw new Error(`roiAlign: samplingRatio must be an integer >= 0 (0 = adaptive), got ${s.samplingRatio}`);
  }
  if (!(Number.isFinite(s.spatialScale) && s.spatialScale > 0)) throw new Error(`roiAlign: spatialScale must be > 0, got ${s.spatialScale}`);
}
