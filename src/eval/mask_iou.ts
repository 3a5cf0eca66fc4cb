// Area, bounding box and IoU of COCO run-length masks, with the semantics of
// cocoapi's common/maskApi.c (rleArea, rleToBbox, rleIou), computed on the run
// lengths themselves: the counts are integers, so the IoU is the same double
// pycocotools computes, without decoding to bitmaps.
//
// Runs are column-major and start with a run of zeros (src/data/coco.ts), so
// runs at odd positions are the mask's pixels.
import { stringToRuns } from '../data/coco.js';

/** A decoded run-length mask: [height, width], its run lengths, and (computed once) its area and box. */
export interface Rle {
  height: number;
  width: number;
  runs: readonly number[];
  area: number;
  box: [number, number, number, number];
}

/** COCO's uncompressed RLE (what pycocotools' frPyObjects accepts for iscrowd annotations). */
export interface UncompressedRle {
  size: [number, number];
  counts: number[];
}

/**
 * Reads a COCO RLE, compressed (`counts` a string) or not (`counts` numbers),
 * checking that its runs cover exactly height x width pixels. `what` names
 * the mask in the error message. Polygons are refused: rasterising them the
 * way maskApi.c's rleFrPoly does is not ported.
 */
export function parseRle(segmentation: unknown, what: string): Rle {
  if (Array.isArray(segmentation)) {
    throw new Error(`${what} is a polygon list; only RLE masks ({size, counts}) are supported`);
  }
  if (typeof segmentation !== 'object' || segmentation === null) {
    throw new Error(`${what} must be an RLE object {size: [height, width], counts}, got ${shortJson(segmentation)}`);
  }
  const { size, counts } = segmentation as { size?: unknown; counts?: unknown };
  if (!Array.isArray(size) || size.length !== 2 || !size.every((v) => Number.isInteger(v) && v >= 0)) {
    throw new Error(`${what}: 'size' must be [height, width] (non-negative integers), got ${shortJson(size)}`);
  }
  const [height, width] = size as [number, number];
  let runs: number[];
  if (typeof counts === 'string') {
    try {
      runs = stringToRuns(counts);
    } catch (err) {
      throw new Error(`${what}: ${(err as Error).message}`);
    }
  } else if (Array.isArray(counts) && counts.every((v) => Number.isInteger(v) && v >= 0)) {
    runs = counts as number[];
  } else {
    throw new Error(`${what}: 'counts' must be an RLE string or non-negative integers, got ${shortJson(counts)}`);
  }
  let total = 0;
  for (const r of runs) {
    if (r < 0) throw new Error(`${what}: 'counts' decodes to a negative run (${r})`);
    total += r;
  }
  if (total !== height * width) {
    throw new Error(`${what}: 'counts' covers ${total} pixels, its size ${height}x${width} has ${height * width}`);
  }
  return { height, width, runs, area: rleArea(runs), box: rleBox(runs, height) };
}

/** Number of mask pixels (maskApi.c rleArea). */
export function rleArea(runs: readonly number[]): number {
  let area = 0;
  for (let j = 1; j < runs.length; j += 2) area += runs[j]!;
  return area;
}

/**
 * Tight [x, y, w, h] around the mask, [0, 0, 0, 0] when it is empty
 * (maskApi.c rleToBbox). A run of pixels that wraps from one column into the
 * next covers the last row of the first and the first row of the second, so
 * the box then spans every row.
 */
export function rleBox(runs: readonly number[], h: number): [number, number, number, number] {
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -1;
  let y1 = -1;
  let pos = 0;
  for (let j = 0; j < runs.length; j++) {
    const run = runs[j]!;
    if (j % 2 === 1 && run > 0) {
      const first = pos;
      const last = pos + run - 1;
      const xs = Math.floor(first / h);
      const xe = Math.floor(last / h);
      x0 = Math.min(x0, xs);
      x1 = Math.max(x1, xe);
      if (xs < xe) {
        y0 = 0;
        y1 = h - 1;
      } else {
        y0 = Math.min(y0, first % h);
        y1 = Math.max(y1, last % h);
      }
    }
    pos += run;
  }
  return x1 < 0 ? [0, 0, 0, 0] : [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
}

/**
 * IoU of two [x, y, w, h] boxes (maskApi.c bbIou): no "+1" pixel convention;
 * against a crowd region the union is the detection's own area, so a
 * detection inside a crowd scores 1 however large the crowd is.
 */
export function boxIou(dt: readonly number[], gt: readonly number[], crowd: boolean): number {
  const w = Math.min(dt[2]! + dt[0]!, gt[2]! + gt[0]!) - Math.max(dt[0]!, gt[0]!);
  if (w <= 0) return 0;
  const h = Math.min(dt[3]! + dt[1]!, gt[3]! + gt[1]!) - Math.max(dt[1]!, gt[1]!);
  if (h <= 0) return 0;
  const i = w * h;
  const dtArea = dt[2]! * dt[3]!;
  return i / (crowd ? dtArea : dtArea + gt[2]! * gt[3]! - i);
}

/** Pixels in both masks, and in either, from one merge of the two run lists. */
function overlap(a: Rle, b: Rle): { inter: number; union: number } {
  let ia = 0;
  let ib = 0;
  let la = a.runs[0] ?? 0; // pixels left in the current run of each
  let lb = b.runs[0] ?? 0;
  let inter = 0;
  let union = 0;
  for (;;) {
    // skip exhausted (and zero-length) runs; each skip flips that mask's value
    while (la === 0 && ia + 1 < a.runs.length) la = a.runs[++ia]!;
    while (lb === 0 && ib + 1 < b.runs.length) lb = b.runs[++ib]!;
    if (la === 0 && lb === 0) break;
    const c = Math.min(la, lb);
    if (c === 0) break; // one mask ran out early; parseRle makes this unreachable
    const va = ia % 2 === 1;
    const vb = ib % 2 === 1;
    if (va || vb) union += c;
    if (va && vb) inter += c;
    la -= c;
    lb -= c;
  }
  return { inter, union };
}

/**
 * Mask IoU (maskApi.c rleIou): intersection over union, or over the
 * detection's area when the ground truth is a crowd region. Masks of
 * different sizes are an error here (maskApi returns -1, which silently
 * never matches); callers check sizes against the image first.
 */
export function rleIou(dt: Rle, gt: Rle, crowd: boolean): number {
  if (dt.height !== gt.height || dt.width !== gt.width) {
    throw new Error(`mask IoU of a ${dt.height}x${dt.width} mask with a ${gt.height}x${gt.width} one`);
  }
  // maskApi first compares the masks' boxes and skips disjoint pairs: the
  // same answer (0), only cheaper.
  if (boxIou(dt.box, gt.box, crowd) <= 0) return 0;
  const { inter, union } = overlap(dt, gt);
  if (inter === 0) return 0;
  return inter / (crowd ? dt.area : union);
}

/** A value as short JSON, for error messages. */
export function shortJson(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
