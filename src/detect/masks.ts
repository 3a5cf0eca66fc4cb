// Mask R-CNN's two host-side mask conversions, detectron2 semantics:
// - pasteMasks: the predicted M x M mask of each detection, bilinearly
//   resampled into its box on the full image and thresholded
//   (layers/mask_ops.py: paste_masks_in_image, _do_paste_mask);
// - maskTargets: the training target of each foreground RoI, RoIAlign of its
//   GT bitmask over the RoI, thresholded at 0.5
//   (structures/masks.py: BitMasks.crop_and_resize).
// Both are detached from autograd in detectron2 as here. Arithmetic is
// float64 where PyTorch uses float32; a value can only land on the other side
// of a threshold when it is within a float32 rounding error of it.

interface SampleAxis {
  /** Lower and upper source index per sample, and their weights (0 where PyTorch reads zero padding). */
  lo: Int32Array;
  hi: Int32Array;
  wLo: Float64Array;
  wHi: Float64Array;
}

function newAxis(n: number): SampleAxis {
  return { lo: new Int32Array(n), hi: new Int32Array(n), wLo: new Float64Array(n), wHi: new Float64Array(n) };
}

/**
 * grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False)
 * along one axis of length `size`: source coordinate s, corners floor(s) and
 * floor(s) + 1, a corner outside [0, size) reads 0.
 */
function gridSampleAxis(axis: SampleAxis, k: number, s: number, size: number): void {
  const lo = Math.floor(s);
  const f = s - lo;
  const loIn = lo >= 0 && lo < size;
  const hiIn = lo + 1 >= 0 && lo + 1 < size;
  axis.lo[k] = loIn ? lo : 0;
  axis.hi[k] = hiIn ? lo + 1 : 0;
  axis.wLo[k] = loIn ? 1 - f : 0;
  axis.wHi[k] = hiIn ? f : 0;
}

/**
 * One full-image H x W bitmask (row-major, 0/1) per detection.
 *
 * masks: R x M x M mask probabilities (class already selected), boxes: R*4.
 * Image pixel (px, py) has centre (px + 0.5, py + 0.5); its position in the
 * box, scaled to [-1, 1], is read from the M x M mask by grid_sample with
 * align_corners=False, so mask cell j covers [j, j + 1) / M of the box.
 * For a mask of all ones, each axis gives a pixel a weight that is 1 when
 * its centre is more than half a mask cell (side / 2M px) inside the box,
 * 0.5 on the box edge and 0 half a cell beyond it; at threshold 0.5 the
 * pixel is set when the product of the two weights is >= 0.5. So no pixel
 * whose centre is outside the box is set, and every pixel whose centre is
 * inside is set except near corners where both weights are partial: with
 * integer coordinates and sides up to M px the paste is exactly the box's
 * pixels, while a box wider and higher than about 2.4 M loses its corner
 * pixels (as in detectron2). Following detectron2 on the CPU
 * (skip_empty), only pixels in [floor(x0) - 1, ceil(x1) + 1) x
 * [floor(y0) - 1, ceil(y1) + 1) are sampled; the rest are 0. A box of zero
 * width or height pastes nothing (detectron2 would divide by zero).
 */
export function pasteMasks(masks: Float32Array, M: number, boxes: Float32Array, height: number, width: number, threshold = 0.5): Uint8Array[] {
  const r = boxes.length / 4;
  if (!Number.isInteger(r)) throw new Error(`pasteMasks: ${boxes.length} box values is not a whole number of boxes`);
  if (masks.length !== r * M * M) throw new Error(`pasteMasks: ${r} boxes need ${r} x ${M} x ${M} = ${r * M * M} mask values, got ${masks.length}`);
  const out: Uint8Array[] = [];
  const xs = newAxis(width);
  const ys = newAxis(height);
  for (let i = 0; i < r; i++) {
    const bitmask = new Uint8Array(height * width);
    out.push(bitmask);
    const x0 = boxes[4 * i]!;
    const y0 = boxes[4 * i + 1]!;
    const x1 = boxes[4 * i + 2]!;
    const y1 = boxes[4 * i + 3]!;
    if (!(x1 - x0 > 0 && y1 - y0 > 0)) continue;
    const cx0 = Math.min(Math.max(Math.floor(x0) - 1, 0), width);
    const cy0 = Math.min(Math.max(Math.floor(y0) - 1, 0), height);
    const cx1 = Math.max(Math.min(Math.ceil(x1) + 1, width), cx0);
    const cy1 = Math.max(Math.min(Math.ceil(y1) + 1, height), cy0);
    // Normalised g = (p + 0.5 - x0) / (x1 - x0) * 2 - 1, then align_corners=False
    // unnormalisation s = ((g + 1) M - 1) / 2.
    for (let px = cx0; px < cx1; px++) {
      const g = ((px + 0.5 - x0) / (x1 - x0)) * 2 - 1;
      gridSampleAxis(xs, px, ((g + 1) * M - 1) / 2, M);
    }
    for (let py = cy0; py < cy1; py++) {
      const g = ((py + 0.5 - y0) / (y1 - y0)) * 2 - 1;
      gridSampleAxis(ys, py, ((g + 1) * M - 1) / 2, M);
    }
    const base = i * M * M;
    for (let py = cy0; py < cy1; py++) {
      const rowLo = base + ys.lo[py]! * M;
      const rowHi = base + ys.hi[py]! * M;
      const wyLo = ys.wLo[py]!;
      const wyHi = ys.wHi[py]!;
      for (let px = cx0; px < cx1; px++) {
        const xl = xs.lo[px]!;
        const xh = xs.hi[px]!;
        const wxLo = xs.wLo[px]!;
        const wxHi = xs.wHi[px]!;
        const v =
          wyLo * (wxLo * masks[rowLo + xl]! + wxHi * masks[rowLo + xh]!) + wyHi * (wxLo * masks[rowHi + xl]! + wxHi * masks[rowHi + xh]!);
        if (v >= threshold) bitmask[py * width + px] = 1;
      }
    }
  }
  return out;
}

/**
 * torchvision's RoIAlign sample (roi_align_common.h bilinear_interpolate)
 * along one axis of length `size`: out of range beyond -1 or size reads 0,
 * coordinates in [-1, 0] clamp to 0, the last row repeats.
 */
function roiAlignAxis(axis: SampleAxis, k: number, s: number, size: number): void {
  if (s < -1 || s > size) {
    axis.lo[k] = 0;
    axis.hi[k] = 0;
    axis.wLo[k] = 0;
    axis.wHi[k] = 0;
    return;
  }
  if (s <= 0) s = 0;
  let lo = Math.floor(s);
  let hi: number;
  if (lo >= size - 1) {
    lo = hi = size - 1;
    s = lo;
  } else {
    hi = lo + 1;
  }
  const f = s - lo;
  axis.lo[k] = lo;
  axis.hi[k] = hi;
  axis.wLo[k] = 1 - f;
  axis.wHi[k] = f;
}

/**
 * RoIAlign of one H x W single-channel map over box (x0, y0, x1, y1), with
 * torchvision's aligned=True, spatial scale 1 and adaptive sampling
 * (sampling ratio 0: ceil(side / M) samples per bin and axis), into
 * out[offset .. offset + M*M).
 */
export function roiAlignSingle(
  data: ArrayLike<number>,
  height: number,
  width: number,
  box: ArrayLike<number>,
  M: number,
  out: Float32Array,
  offset: number,
): void {
  // aligned=True: pixel centres sit at +0.5, so shift the box by -0.5 and
  // keep its size as is (no minimum of 1).
  const startX = box[0]! - 0.5;
  const startY = box[1]! - 0.5;
  const roiW = box[2]! - box[0]!;
  const roiH = box[3]! - box[1]!;
  const binW = roiW / M;
  const binH = roiH / M;
  const gridW = Math.max(Math.ceil(roiW / M), 0);
  const gridH = Math.max(Math.ceil(roiH / M), 0);
  const count = Math.max(gridW * gridH, 1);
  const xs = newAxis(M * gridW);
  const ys = newAxis(M * gridH);
  for (let p = 0; p < M; p++) {
    for (let k = 0; k < gridW; k++) roiAlignAxis(xs, p * gridW + k, startX + p * binW + ((k + 0.5) * binW) / gridW, width);
    for (let k = 0; k < gridH; k++) roiAlignAxis(ys, p * gridH + k, startY + p * binH + ((k + 0.5) * binH) / gridH, height);
  }
  for (let ph = 0; ph < M; ph++) {
    for (let pw = 0; pw < M; pw++) {
      let sum = 0;
      for (let iy = ph * gridH; iy < (ph + 1) * gridH; iy++) {
        const rowLo = ys.lo[iy]! * width;
        const rowHi = ys.hi[iy]! * width;
        const wyLo = ys.wLo[iy]!;
        const wyHi = ys.wHi[iy]!;
        for (let ix = pw * gridW; ix < (pw + 1) * gridW; ix++) {
          const xl = xs.lo[ix]!;
          const xh = xs.hi[ix]!;
          const wxLo = xs.wLo[ix]!;
          const wxHi = xs.wHi[ix]!;
          sum += wyLo * (wxLo * data[rowLo + xl]! + wxHi * data[rowLo + xh]!) + wyHi * (wxLo * data[rowHi + xl]! + wxHi * data[rowHi + xh]!);
        }
      }
      out[offset + ph * M + pw] = sum / count;
    }
  }
}

/**
 * Mask targets, R x M x M of 0/1 floats: for RoI i, RoIAlign (aligned, as
 * detectron2's ROIAlign((M, M), 1.0, 0, aligned=True)) of the full-image GT
 * bitmask gtMasks[gtIndex[i]] over boxes[i], then >= 0.5.
 */
export function maskTargets(gtMasks: Uint8Array[], height: number, width: number, boxes: Float32Array, gtIndex: Int32Array, M: number): Float32Array {
  const r = gtIndex.length;
  if (boxes.length !== 4 * r) throw new Error(`maskTargets: ${r} GT indices but ${boxes.length} box values (want ${4 * r})`);
  const out = new Float32Array(r * M * M);
  for (let i = 0; i < r; i++) {
    const g = gtIndex[i]!;
    const mask = gtMasks[g];
    if (!mask) throw new Error(`maskTargets: RoI ${i} is matched to GT ${g}, but there are ${gtMasks.length} GT masks`);
    if (mask.length !== height * width) throw new Error(`maskTargets: GT mask ${g} has ${mask.length} pixels, want ${height} x ${width}`);
    roiAlignSingle(mask, height, width, boxes.subarray(4 * i, 4 * i + 4), M, out, i * M * M);
  }
  for (let k = 0; k < out.length; k++) out[k] = out[k]! >= 0.5 ? 1 : 0;
  return out;
}
