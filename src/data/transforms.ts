// Image transforms on raw HWC buffers, 1 or 3 channels.
//
// Every function works on a region of a larger typed array (`data`, `offset`)
// so a view is written straight into its slot of the batch: no per-sample
// arrays, no per-pixel objects. Pixel values are floats in [0, 1] until
// `normalize`. Semantics follow torchvision's transforms, which is what the
// papers' recipes were tuned with; the few deliberate differences are noted.
import type { Rng } from '../core/random.js';

/** A crop rectangle in source pixels: columns [x, x + w), rows [y, y + h). */
export interface CropBox {
  x: number;
  y: number;
  w: number;
  h: number;
}

export type Range = readonly [number, number];

/**
 * torchvision's RandomResizedCrop.get_params: ten tries at an area fraction in
 * `scale` and a log-uniform aspect ratio in `ratio`, then a central crop with
 * the ratio clamped. Returns whole-pixel boxes inside the image.
 */
export function sampleResizedCropBox(rng: Rng, width: number, height: number, scale: Range, ratio: Range): CropBox {
  const area = width * height;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logLo, logHi));
    const w = Math.round(Math.sqrt(target * aspect));
    const h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      return { x: rng.int(0, width - w), y: rng.int(0, height - h), w, h };
    }
  }
  const inRatio = width / height;
  let w = width;
  let h = height;
  if (inRatio < ratio[0]) h = Math.round(w / ratio[0]);
  else if (inRatio > ratio[1]) w = Math.round(h * ratio[1]);
  return { x: Math.floor((width - w) / 2), y: Math.floor((height - h) / 2), w, h };
}

// Per-column sampling tables, grown on demand and reused: one set per thread.
let colIndex0 = new Int32Array(0);
let colIndex1 = new Int32Array(0);
let colWeight = new Float32Array(0);

function ensureColumnTables(n: number): void {
  if (colIndex0.length >= n) return;
  colIndex0 = new Int32Array(n);
  colIndex1 = new Int32Array(n);
  colWeight = new Float32Array(n);
}

/**
 * Bilinear resample of `box` of the source into an outW x outH region of
 * `out`, mirrored left-right when `flip`. Pixel centres map as in
 * align_corners=false. Byte sources are scaled to [0, 1] on the fly, so the
 * dataset stays uint8. No antialiasing: crops shrink by at most a few times
 * here, where it changes little, and it would cost a second pass.
 */
export function resizedCrop(
  src: Uint8Array | Float32Array,
  srcOffset: number,
  srcW: number,
  srcH: number,
  channels: number,
  box: CropBox,
  flip: boolean,
  out: Float32Array,
  outOffset: number,
  outW: number,
  outH: number,
): void {
  const gain = src instanceof Uint8Array ? 1 / 255 : 1;
  ensureColumnTables(outW);
  // Locals, not the module-level bindings: V8 then keeps them in registers.
  const cols0 = colIndex0;
  const cols1 = colIndex1;
  const colsW = colWeight;
  const sx = box.w / outW;
  for (let ox = 0; ox < outW; ox++) {
    const col = flip ? outW - 1 - ox : ox;
    let x = box.x + (col + 0.5) * sx - 0.5;
    if (x < 0) x = 0;
    if (x > srcW - 1) x = srcW - 1;
    const x0 = Math.floor(x);
    cols0[ox] = (x0 * channels) | 0;
    cols1[ox] = (Math.min(x0 + 1, srcW - 1) * channels) | 0;
    colsW[ox] = x - x0;
  }
  const sy = box.h / outH;
  const rowStride = srcW * channels;
  let o = outOffset;
  for (let oy = 0; oy < outH; oy++) {
    let y = box.y + (oy + 0.5) * sy - 0.5;
    if (y < 0) y = 0;
    if (y > srcH - 1) y = srcH - 1;
    const y0 = Math.floor(y);
    const fy = y - y0;
    const r0 = srcOffset + y0 * rowStride;
    const r1 = srcOffset + Math.min(y0 + 1, srcH - 1) * rowStride;
    const w0 = (1 - fy) * gain;
    const w1 = fy * gain;
    // Grey and RGB get their own loops: a variable-length channel loop in the
    // innermost position costs V8 about half the speed.
    if (channels === 1) {
      for (let ox = 0; ox < outW; ox++) {
        const c0 = cols0[ox]!;
        const c1 = cols1[ox]!;
        const fx = colsW[ox]!;
        const a = src[r0 + c0]!;
        const b = src[r1 + c0]!;
        out[o++] = (a + fx * (src[r0 + c1]! - a)) * w0 + (b + fx * (src[r1 + c1]! - b)) * w1;
      }
    } else {
      for (let ox = 0; ox < outW; ox++) {
        const c0 = cols0[ox]!;
        const c1 = cols1[ox]!;
        const fx = colsW[ox]!;
        for (let c = 0; c < channels; c++) {
          const a = src[r0 + c0 + c]!;
          const b = src[r1 + c0 + c]!;
          out[o++] = (a + fx * (src[r0 + c1 + c]! - a)) * w0 + (b + fx * (src[r1 + c1 + c]! - b)) * w1;
        }
      }
    }
  }
}

/** Mirrors an image left-right in place. */
export function flipHorizontal(data: Float32Array, offset: number, width: number, height: number, channels: number): void {
  for (let y = 0; y < height; y++) {
    const row = offset + y * width * channels;
    for (let a = 0, b = width - 1; a < b; a++, b--) {
      for (let c = 0; c < channels; c++) {
        const i = row + a * channels + c;
        const j = row + b * channels + c;
        const t = data[i]!;
        data[i] = data[j]!;
        data[j] = t;
      }
    }
  }
}

/**
 * Rotates a square size x size image by k quarter turns counter-clockwise
 * (numpy's rot90), from `src` into `out` (which must not overlap it).
 */
export function rotate90(
  src: Float32Array,
  srcOffset: number,
  out: Float32Array,
  outOffset: number,
  size: number,
  channels: number,
  k: number,
): void {
  const turns = ((k % 4) + 4) % 4;
  const n = size - 1;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      // Output (y, x) reads the source pixel that lands there after `turns` CCW turns.
      let sy: number;
      let sx: number;
      if (turns === 0) { sy = y; sx = x; }
      else if (turns === 1) { sy = x; sx = n - y; }
      else if (turns === 2) { sy = n - y; sx = n - x; }
      else { sy = n - x; sx = y; }
      const o = outOffset + (y * size + x) * channels;
      const s = srcOffset + (sy * size + sx) * channels;
      for (let c = 0; c < channels; c++) out[o + c] = src[s + c]!;
    }
  }
}

function clamp01(v: number): number {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

// ITU-R 601 luma, as torchvision's rgb_to_grayscale.
const LUMA_R = 0.299;
const LUMA_G = 0.587;
const LUMA_B = 0.114;

/** Multiplies by `factor` (torchvision adjust_brightness). */
export function adjustBrightness(data: Float32Array, offset: number, length: number, factor: number): void {
  for (let i = offset, end = offset + length; i < end; i++) data[i] = clamp01(data[i]! * factor);
}

/** Blends with the mean grey level (torchvision adjust_contrast). */
export function adjustContrast(data: Float32Array, offset: number, pixels: number, channels: number, factor: number): void {
  let sum = 0;
  const end = offset + pixels * channels;
  if (channels === 1) {
    for (let i = offset; i < end; i++) sum += data[i]!;
  } else {
    for (let i = offset; i < end; i += 3) sum += LUMA_R * data[i]! + LUMA_G * data[i + 1]! + LUMA_B * data[i + 2]!;
  }
  const mean = (sum / pixels) * (1 - factor);
  for (let i = offset; i < end; i++) data[i] = clamp01(data[i]! * factor + mean);
}

/** Blends each pixel with its own grey level (torchvision adjust_saturation). RGB only. */
export function adjustSaturation(data: Float32Array, offset: number, pixels: number, factor: number): void {
  const end = offset + pixels * 3;
  for (let i = offset; i < end; i += 3) {
    const grey = (LUMA_R * data[i]! + LUMA_G * data[i + 1]! + LUMA_B * data[i + 2]!) * (1 - factor);
    data[i] = clamp01(data[i]! * factor + grey);
    data[i + 1] = clamp01(data[i + 1]! * factor + grey);
    data[i + 2] = clamp01(data[i + 2]! * factor + grey);
  }
}

/**
 * Shifts hue by `shift` turns (in [-0.5, 0.5]). Differs from torchvision on
 * purpose: a rotation of the chroma plane in YIQ, one 3x3 matrix per image,
 * instead of an HSV round trip per pixel. It keeps luma and differs from the
 * HSV shift by a few percent in saturation, which no recipe is sensitive to.
 */
export function adjustHue(data: Float32Array, offset: number, pixels: number, shift: number): void {
  const cos = Math.cos(shift * 2 * Math.PI);
  const sin = Math.sin(shift * 2 * Math.PI);
  // T_yiq->rgb * R(theta) * T_rgb->yiq, written out.
  const toI = [0.596, -0.274, -0.322];
  const toQ = [0.211, -0.523, 0.312];
  const fromI = [0.956, -0.272, -1.106];
  const fromQ = [0.621, -0.647, 1.703];
  const m = new Float64Array(9);
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < 3; c++) {
      const luma = c === 0 ? LUMA_R : c === 1 ? LUMA_G : LUMA_B;
      const i = cos * toI[c]! - sin * toQ[c]!;
      const q = sin * toI[c]! + cos * toQ[c]!;
      m[r * 3 + c] = luma + fromI[r]! * i + fromQ[r]! * q;
    }
  }
  const end = offset + pixels * 3;
  for (let p = offset; p < end; p += 3) {
    const r = data[p]!;
    const g = data[p + 1]!;
    const b = data[p + 2]!;
    data[p] = clamp01(m[0]! * r + m[1]! * g + m[2]! * b);
    data[p + 1] = clamp01(m[3]! * r + m[4]! * g + m[5]! * b);
    data[p + 2] = clamp01(m[6]! * r + m[7]! * g + m[8]! * b);
  }
}

export interface ColorJitterSpec {
  brightness: number;
  contrast: number;
  saturation: number;
  hue: number;
  /** Probability of applying the jitter at all (RandomApply). */
  p: number;
}

/**
 * torchvision ColorJitter inside RandomApply(p): the four adjustments in a
 * random order, each factor drawn from [max(0, 1 - s), 1 + s] (hue from
 * [-h, h]). Saturation and hue do nothing to grey images.
 */
export function colorJitter(
  data: Float32Array,
  offset: number,
  pixels: number,
  channels: number,
  spec: ColorJitterSpec,
  rng: Rng,
): void {
  if (!rng.chance(spec.p)) return;
  const order = rng.permutation(4);
  for (let k = 0; k < 4; k++) {
    switch (order[k]) {
      case 0:
        if (spec.brightness > 0) {
          adjustBrightness(data, offset, pixels * channels, rng.uniform(Math.max(0, 1 - spec.brightness), 1 + spec.brightness));
        }
        break;
      case 1:
        if (spec.contrast > 0) {
          adjustContrast(data, offset, pixels, channels, rng.uniform(Math.max(0, 1 - spec.contrast), 1 + spec.contrast));
        }
        break;
      case 2:
        if (spec.saturation > 0 && channels === 3) {
          adjustSaturation(data, offset, pixels, rng.uniform(Math.max(0, 1 - spec.saturation), 1 + spec.saturation));
        }
        break;
      default:
        if (spec.hue > 0 && channels === 3) adjustHue(data, offset, pixels, rng.uniform(-spec.hue, spec.hue));
    }
  }
}

/** Replaces RGB by its luma, kept as 3 channels (torchvision RandomGrayscale). */
export function toGrayscale(data: Float32Array, offset: number, pixels: number, channels: number): void {
  if (channels !== 3) return;
  const end = offset + pixels * 3;
  for (let i = offset; i < end; i += 3) {
    const grey = LUMA_R * data[i]! + LUMA_G * data[i + 1]! + LUMA_B * data[i + 2]!;
    data[i] = grey;
    data[i + 1] = grey;
    data[i + 2] = grey;
  }
}

/**
 * Colour dropping (Doersch et al. 2015): keeps one of the three
 * channels, drawn uniformly, and replaces the other two with Gaussian noise of
 * 1/100 the kept channel's standard deviation around `centre`: 0 on
 * normalised pixels (the data set's mean; the paper's patches were
 * mean-subtracted), mid-grey 0.5 on raw ones. Returns the kept channel; grey
 * images keep their one channel.
 */
export function dropColors(data: Float32Array, offset: number, pixels: number, channels: number, rng: Rng, centre = 0): number {
  if (channels !== 3) return 0;
  const kept = rng.int(0, 2);
  const end = offset + pixels * 3;
  let sum = 0;
  let sumSq = 0;
  for (let i = offset + kept; i < end; i += 3) {
    sum += data[i]!;
    sumSq += data[i]! * data[i]!;
  }
  const mean = sum / pixels;
  const sigma = Math.sqrt(Math.max(0, sumSq / pixels - mean * mean)) / 100;
  for (let i = offset; i < end; i += 3) {
    for (let c = 0; c < 3; c++) if (c !== kept) data[i + c] = centre + sigma * rng.normal();
  }
  return kept;
}

let blurScratch = new Float32Array(0);
let blurKernel = new Float32Array(0);

/**
 * Separable Gaussian blur in place, radius ceil(3 sigma) capped by the image
 * size, with edge-replicate borders (torchvision reflects; at the sigmas the
 * recipes use the difference is at most a pixel's worth of blur at the rim).
 */
export function gaussianBlur(
  data: Float32Array,
  offset: number,
  width: number,
  height: number,
  channels: number,
  sigma: number,
): void {
  if (sigma <= 0) return;
  const radius = Math.min(Math.ceil(3 * sigma), Math.max(width, height) - 1);
  if (radius < 1) return;
  const taps = 2 * radius + 1;
  if (blurKernel.length < taps) blurKernel = new Float32Array(taps);
  let norm = 0;
  for (let k = -radius; k <= radius; k++) {
    const v = Math.exp((-k * k) / (2 * sigma * sigma));
    blurKernel[k + radius] = v;
    norm += v;
  }
  for (let k = 0; k < taps; k++) blurKernel[k] = blurKernel[k]! / norm;
  const n = width * height * channels;
  if (blurScratch.length < n) blurScratch = new Float32Array(n);
  const tmp = blurScratch;
  const kern = blurKernel;
  const row = width * channels;
  // Horizontal pass: data -> tmp.
  for (let y = 0; y < height; y++) {
    const base = offset + y * row;
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) {
        let acc = 0;
        for (let k = -radius; k <= radius; k++) {
          let xx = x + k;
          xx = xx < 0 ? 0 : xx >= width ? width - 1 : xx;
          acc += kern[k + radius]! * data[base + xx * channels + c]!;
        }
        tmp[y * row + x * channels + c] = acc;
      }
    }
  }
  // Vertical pass: tmp -> data.
  for (let y = 0; y < height; y++) {
    for (let k = -radius; k <= radius; k++) {
      let yy = y + k;
      yy = yy < 0 ? 0 : yy >= height ? height - 1 : yy;
      const w = kern[k + radius]!;
      const src = yy * row;
      const dst = offset + y * row;
      if (k === -radius) {
        for (let i = 0; i < row; i++) data[dst + i] = w * tmp[src + i]!;
      } else {
        for (let i = 0; i < row; i++) data[dst + i] = data[dst + i]! + w * tmp[src + i]!;
      }
    }
  }
}

/** Inverts values at or above `threshold` (PIL's solarize at 128/255 = 0.5). */
export function solarize(data: Float32Array, offset: number, length: number, threshold = 0.5): void {
  for (let i = offset, end = offset + length; i < end; i++) {
    const v = data[i]!;
    if (v >= threshold) data[i] = 1 - v;
  }
}

/** (x - mean[c]) / std[c] per channel. */
export function normalize(
  data: Float32Array,
  offset: number,
  pixels: number,
  channels: number,
  mean: readonly number[],
  std: readonly number[],
): void {
  if (mean.length !== channels || std.length !== channels) {
    throw new Error(`normalize: ${channels} channels but mean has ${mean.length} and std ${std.length} entries`);
  }
  const end = offset + pixels * channels;
  for (let c = 0; c < channels; c++) {
    const m = mean[c]!;
    const inv = 1 / std[c]!;
    for (let i = offset + c; i < end; i += channels) data[i] = (data[i]! - m) * inv;
  }
}
