// One augmented view: a random resized crop, an optional flip, then the
// photometric chain of the MoCo v2 / SimCLR / BYOL recipes. The recipes
// themselves (which numbers) live in recipes.ts.
import type { Rng } from '../core/random.js';
import {
  colorJitter,
  gaussianBlur,
  normalize,
  resizedCrop,
  sampleResizedCropBox,
  solarize,
  toGrayscale,
  type ColorJitterSpec,
  type CropBox,
  type Range,
} from './transforms.js';

/** Colour and blur steps, applied in the order torchvision recipes list them. */
export interface PhotometricSpec {
  jitter: ColorJitterSpec | null;
  grayscaleP: number;
  /** RandomApply(GaussianBlur) with sigma in output pixels. */
  blur: { p: number; sigma: Range } | null;
  solarizeP: number;
  normalize: { mean: number[]; std: number[] } | null;
}

export interface ViewSpec extends PhotometricSpec {
  /** Output side in pixels (views are square). */
  size: number;
  /** RandomResizedCrop area fraction and aspect ratio ranges. */
  scale: Range;
  ratio: Range;
  flipP: number;
}

/** A source image: `channels`-channel HWC pixels at `offset` in `data`. */
export interface SourceImage {
  data: Uint8Array | Float32Array;
  offset: number;
  width: number;
  height: number;
  channels: number;
}

/** Applies the photometric chain to a width x height region of `out`. */
export function applyPhotometric(
  out: Float32Array,
  offset: number,
  width: number,
  height: number,
  channels: number,
  spec: PhotometricSpec,
  rng: Rng,
): void {
  const pixels = width * height;
  // Draw every decision whatever the spec, so two specs that differ in one
  // probability keep the rest of their random stream aligned.
  if (spec.jitter) colorJitter(out, offset, pixels, channels, spec.jitter, rng);
  if (rng.chance(spec.grayscaleP)) toGrayscale(out, offset, pixels, channels);
  if (spec.blur) {
    const apply = rng.chance(spec.blur.p);
    const sigma = rng.uniform(spec.blur.sigma[0], spec.blur.sigma[1]);
    if (apply) gaussianBlur(out, offset, width, height, channels, sigma);
  }
  if (rng.chance(spec.solarizeP)) solarize(out, offset, pixels * channels);
  if (spec.normalize) normalize(out, offset, pixels, channels, spec.normalize.mean, spec.normalize.std);
}

/** Where a view came from: its crop in source pixels and whether it was mirrored. */
export interface ViewPlacement {
  box: CropBox;
  flipped: boolean;
}

/** Renders one view of `src` into `out` at `offset` (size x size x channels floats). */
export function renderView(src: SourceImage, spec: ViewSpec, rng: Rng, out: Float32Array, offset: number): ViewPlacement {
  const box = sampleResizedCropBox(rng, src.width, src.height, spec.scale, spec.ratio);
  const flipped = rng.chance(spec.flipP);
  resizedCrop(src.data, src.offset, src.width, src.height, src.channels, box, flipped, out, offset, spec.size, spec.size);
  applyPhotometric(out, offset, spec.size, spec.size, src.channels, spec, rng);
  return { box, flipped };
}

/** Writes a box as [x0, y0, x1, y1] in [0, 1] image coordinates. */
export function writeNormalizedBox(box: CropBox, src: SourceImage, out: Float32Array, offset: number): void {
  out[offset] = box.x / src.width;
  out[offset + 1] = box.y / src.height;
  out[offset + 2] = (box.x + box.w) / src.width;
  out[offset + 3] = (box.y + box.h) / src.height;
}
