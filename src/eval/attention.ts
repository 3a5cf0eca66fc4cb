// Attention maps of a frozen backbone (DetCo, Fig. 5): a stage's activation
// energy (the mean over channels of the squared activation), bilinearly
// upsampled to the image, normalised per image to [0, 1], coloured with
// viridis and blended over the image; how much of that energy falls on the
// objects of a scene; and the PNG grid the attention protocol writes.
import sharp from 'sharp';
import * as tf from '../core/tf.js';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import { writeFileAtomic } from '../core/files.js';
import { decodeRle, type CocoAnnotation } from '../data/coco.js';
import { defaultNormalization } from '../data/dataset_config.js';
import { normalize } from '../data/transforms.js';
import { noGrad } from '../nn/module.js';
import type { ResNet } from '../nn/resnet.js';
import { FEATURE_STAGES, type FeatureStage } from './features.js';

/** How the maps are upsampled: tf.image.resizeBilinear(x, size, alignCorners = false, halfPixelCenters = true), PyTorch's align_corners=False. */
export const UPSAMPLING = 'bilinear, align_corners=false, half-pixel centres (tf.image.resizeBilinear(x, size, false, true))';

export function checkStage(stage: string, who = 'attention'): FeatureStage {
  if (!(FEATURE_STAGES as readonly string[]).includes(stage)) {
    throw new Error(`${who}: unknown stage '${stage}'; expected one of ${FEATURE_STAGES.join(', ')}`);
  }
  return stage as FeatureStage;
}

/** [N, h, w, C] -> [N, h, w, 1]: the mean over channels of the squared activation. */
export function energyMap(activation: Tensor4D): Tensor4D {
  return tf.tidy(() => tf.mean(tf.square(activation), 3, true) as Tensor4D);
}

/** [N, h, w, C] -> [N, height, width, C], bilinear with half-pixel centres (see UPSAMPLING). */
export function upsampleBilinear(map: Tensor4D, height: number, width: number): Tensor4D {
  return tf.image.resizeBilinear(map, [height, width], false, true);
}

/**
 * The energy of `stage` for a prepared (normalised) input batch, upsampled to
 * the input's size: N * height * width floats, >= 0 (bilinear weights are
 * convex, so no negative values appear), and the stage map's own size. The
 * backbone runs in eval mode without a tape and gets its modes back.
 */
export async function attentionEnergy(
  backbone: ResNet,
  input: Float32Array,
  shape: [number, number, number, number],
  stage: string,
): Promise<{ energy: Float32Array; mapSize: [number, number] }> {
  const s = checkStage(stage);
  const [n, height, width, channels] = shape;
  if (input.length < n * height * width * channels) throw new Error(`attention: ${input.length} input values, [${shape}] needs ${n * height * width * channels}`);
  const expected = backbone.stateDict()['conv1.weight']?.shape[2];
  if (expected !== undefined && expected !== channels) {
    throw new Error(`attention: the backbone takes ${expected}-channel images, the input has ${channels} channels`);
  }
  const restore = backbone.saveModes();
  backbone.eval();
  let mapSize: [number, number] = [0, 0];
  try {
    const maps = tf.tidy(() =>
      noGrad(() => {
        const x = tf.tensor4d(input.subarray(0, n * height * width * channels), [n, height, width, channels]);
        const e = energyMap(backbone.forward(x)[s]);
        mapSize = [e.shape[1], e.shape[2]];
        return upsampleBilinear(e, height, width);
      }),
    );
    try {
      return { energy: Float32Array.from((await maps.data()) as Float32Array), mapSize };
    } finally {
      maps.dispose();
    }
  } finally {
    restore();
  }
}

/** Each image's map (`pixels` values) scaled to [0, 1] by its own minimum and maximum; a flat map becomes 0. */
export function normalizePerImage(maps: Float32Array, pixels: number): Float32Array {
  if (maps.length % pixels !== 0) throw new Error(`normalizePerImage: ${maps.length} values are not whole maps of ${pixels}`);
  const out = new Float32Array(maps.length);
  for (let o = 0; o < maps.length; o += pixels) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = o; i < o + pixels; i++) {
      lo = Math.min(lo, maps[i]!);
      hi = Math.max(hi, maps[i]!);
    }
    const range = hi - lo;
    if (range > 0) for (let i = o; i < o + pixels; i++) out[i] = (maps[i]! - lo) / range;
  }
  return out;
}

/** matplotlib's viridis at 0, 0.1, ..., 1 (the 11 stops d3 and matplotlib list); linear in between. */
export const VIRIDIS: ReadonlyArray<readonly [number, number, number]> = [
  [0x44, 0x01, 0x54],
  [0x48, 0x24, 0x75],
  [0x41, 0x44, 0x87],
  [0x35, 0x5f, 0x8d],
  [0x2a, 0x78, 0x8e],
  [0x21, 0x91, 0x8c],
  [0x22, 0xa8, 0x84],
  [0x44, 0xbf, 0x70],
  [0x7a, 0xd1, 0x51],
  [0xbd, 0xdf, 0x26],
  [0xfd, 0xe7, 0x25],
];

/** The viridis colour of t in [0, 1] (clamped; NaN counts as 0), as RGB floats in [0, 255]. */
export function viridis(t: number): [number, number, number] {
  const x = Number.isNaN(t) ? 0 : Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const k = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const f = x - k;
  const a = VIRIDIS[k]!;
  const b = VIRIDIS[k + 1]!;
  return [a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), a[2] + f * (b[2] - a[2])];
}

/** Images with values in [0, 1] as RGB bytes; a grey image (1 channel) stays grey. */
export function toRgbBytes(images: Float32Array, pixels: number, channels: number): Uint8Array {
  if (channels !== 1 && channels !== 3) throw new Error(`toRgbBytes: channels must be 1 or 3, got ${channels}`);
  const count = images.length / (pixels * channels);
  const out = new Uint8Array(count * pixels * 3);
  const byte = (v: number) => Math.round(255 * Math.min(1, Math.max(0, v)));
  for (let p = 0; p < count * pixels; p++) {
    for (let k = 0; k < 3; k++) out[p * 3 + k] = byte(images[p * channels + (channels === 1 ? 0 : k)]!);
  }
  return out;
}

/** (1 - alpha) * image + alpha * viridis(map) for one image of `map.length` pixels. */
export function blendOverlay(rgb: Uint8Array, map: Float32Array, alpha: number): Uint8Array {
  if (rgb.length !== map.length * 3) throw new Error(`blendOverlay: ${rgb.length / 3} image pixels, ${map.length} map values`);
  const out = new Uint8Array(rgb.length);
  for (let p = 0; p < map.length; p++) {
    const c = viridis(map[p]!);
    for (let k = 0; k < 3; k++) out[p * 3 + k] = Math.round((1 - alpha) * rgb[p * 3 + k]! + alpha * c[k]!);
  }
  return out;
}

/**
 * The share of a map's energy inside `mask` and the mask's share of the
 * image, both in [0, 1]; energyShare is NaN for an all-zero map.
 */
export function maskEnergyShare(energy: ArrayLike<number>, mask: ArrayLike<number>): { energyShare: number; areaShare: number } {
  if (energy.length !== mask.length) throw new Error(`maskEnergyShare: ${energy.length} energy values, ${mask.length} mask pixels`);
  let total = 0;
  let inside = 0;
  let area = 0;
  for (let i = 0; i < energy.length; i++) {
    total += energy[i]!;
    if (mask[i]) {
      inside += energy[i]!;
      area++;
    }
  }
  return { energyShare: total > 0 ? inside / total : Number.NaN, areaShare: area / energy.length };
}

/** The union of the annotations' instance masks (COCO RLE), row-major 0/1. */
export function unionMask(annotations: readonly CocoAnnotation[], height: number, width: number): Uint8Array {
  const union = new Uint8Array(height * width);
  for (const a of annotations) {
    const [h, w] = a.segmentation.size;
    if (h !== height || w !== width) throw new Error(`annotation ${a.id}: its mask is ${h}x${w}, the image ${height}x${width}`);
    const m = decodeRle(a.segmentation);
    for (let i = 0; i < m.length; i++) if (m[i]) union[i] = 1;
  }
  return union;
}

/**
 * Images in [0, 1] (N * pixels * from channels) as the backbone's input:
 * normalised as evaluation normalises (defaultNormalization: Fashion-MNIST's
 * statistics for grey, none for colour); RGB for a grey backbone becomes its
 * ITU-R BT.601 luma first, as the transfer protocols do.
 */
export function networkInput(images: Float32Array, pixels: number, from: number, to: number): Float32Array {
  let out: Float32Array;
  if (from === to) out = Float32Array.from(images);
  else if (from === 3 && to === 1) {
    out = new Float32Array(images.length / 3);
    for (let p = 0; p < out.length; p++) out[p] = 0.299 * images[p * 3]! + 0.587 * images[p * 3 + 1]! + 0.114 * images[p * 3 + 2]!;
  } else throw new Error(`attention: ${from}-channel images cannot feed a backbone of ${to} input channels`);
  const stats = defaultNormalization(to);
  if (stats) normalize(out, 0, out.length / to, to, stats.mean, stats.std);
  return out;
}

/**
 * A rows x columns grid of equal height x width RGB cells (`cells[r][c]`,
 * height * width * 3 bytes each) as one RGB image.
 */
export function composeGrid(cells: Uint8Array[][], height: number, width: number): { rgb: Uint8Array; width: number; height: number } {
  const rows = cells.length;
  const cols = cells[0]?.length ?? 0;
  if (rows === 0 || cols === 0) throw new Error('composeGrid: no cells');
  const gw = cols * width;
  const rgb = new Uint8Array(rows * height * gw * 3);
  cells.forEach((row, r) => {
    if (row.length !== cols) throw new Error(`composeGrid: row ${r} has ${row.length} cells, row 0 has ${cols}`);
    row.forEach((cell, c) => {
      if (cell.length !== height * width * 3) throw new Error(`composeGrid: cell (${r}, ${c}) has ${cell.length} bytes, expected ${height * width * 3}`);
      for (let y = 0; y < height; y++) {
        rgb.set(cell.subarray(y * width * 3, (y + 1) * width * 3), ((r * height + y) * gw + c * width) * 3);
      }
    });
  });
  return { rgb, width: gw, height: rows * height };
}

/** Writes an RGB image as a PNG (atomically), enlarged `scale` times with nearest-neighbour pixels. */
export async function writePng(path: string, image: { rgb: Uint8Array; width: number; height: number }, scale = 1): Promise<void> {
  let pipeline = sharp(image.rgb, { raw: { width: image.width, height: image.height, channels: 3 } });
  if (scale !== 1) pipeline = pipeline.resize(image.width * scale, image.height * scale, { kernel: 'nearest' });
  writeFileAtomic(path, await pipeline.png().toBuffer());
}
