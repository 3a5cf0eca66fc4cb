// Box geometry on the host, detectron2 conventions (structures/boxes.py,
// modeling/box_regression.py): boxes are N*4 Float32Arrays of (x0, y0, x1, y1)
// in pixels, where a pixel k covers [k, k + 1), so a box's width is x1 - x0
// with no "+ 1" (detectron2 dropped the legacy +1 of Detectron 1).
// Everything here is off the autograd tape, as detectron2 detaches boxes.

/** (x1 - x0) * (y1 - y0) of box i; negative for an inverted box, as detectron2's Boxes.area. */
export function boxArea(b: Float32Array, i: number): number {
  const o = 4 * i;
  return (b[o + 2]! - b[o]!) * (b[o + 3]! - b[o + 1]!);
}

function checkBoxes(name: string, b: Float32Array): number {
  if (b.length % 4 !== 0) throw new Error(`${name}: ${b.length} numbers is not a whole number of boxes (4 each)`);
  return b.length / 4;
}

/**
 * IoU of every box of `a` with every box of `b`: [Na x Nb] row-major
 * (detectron2 pairwise_iou). The intersection's sides are clamped at 0; the
 * IoU is 0 wherever the intersection is 0, which also covers an empty union
 * (two zero-area boxes), so the result is never NaN.
 */
export function pairwiseIou(a: Float32Array, b: Float32Array): Float32Array {
  const na = checkBoxes('pairwiseIou a', a);
  const nb = checkBoxes('pairwiseIou b', b);
  const out = new Float32Array(na * nb);
  const areaB = new Float64Array(nb);
  for (let j = 0; j < nb; j++) areaB[j] = boxArea(b, j);
  for (let i = 0; i < na; i++) {
    const ax0 = a[4 * i]!;
    const ay0 = a[4 * i + 1]!;
    const ax1 = a[4 * i + 2]!;
    const ay1 = a[4 * i + 3]!;
    const areaA = (ax1 - ax0) * (ay1 - ay0);
    const row = i * nb;
    for (let j = 0; j < nb; j++) {
      const w = Math.min(ax1, b[4 * j + 2]!) - Math.max(ax0, b[4 * j]!);
      if (w <= 0) continue;
      const h = Math.min(ay1, b[4 * j + 3]!) - Math.max(ay0, b[4 * j + 1]!);
      if (h <= 0) continue;
      const inter = w * h;
      out[row + j] = inter / (areaA + areaB[j]! - inter);
    }
  }
  return out;
}

/** Clamps x to [0, width] and y to [0, height], in place (detectron2 Boxes.clip). Returns `b`. */
export function clipBoxes(b: Float32Array, height: number, width: number): Float32Array {
  checkBoxes('clipBoxes', b);
  for (let o = 0; o < b.length; o += 4) {
    b[o] = Math.min(Math.max(b[o]!, 0), width);
    b[o + 1] = Math.min(Math.max(b[o + 1]!, 0), height);
    b[o + 2] = Math.min(Math.max(b[o + 2]!, 0), width);
    b[o + 3] = Math.min(Math.max(b[o + 3]!, 0), height);
  }
  return b;
}

/**
 * 1 for boxes whose width and height are both strictly greater than
 * `minSize` (detectron2 Boxes.nonempty(threshold)), else 0.
 */
export function nonEmpty(b: Float32Array, minSize = 0): Uint8Array {
  const n = checkBoxes('nonEmpty', b);
  const keep = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const o = 4 * i;
    keep[i] = b[o + 2]! - b[o]! > minSize && b[o + 3]! - b[o + 1]! > minSize ? 1 : 0;
  }
  return keep;
}

/** The indices where `nonEmpty` is 1, ascending. */
export function nonEmptyIndices(b: Float32Array, minSize = 0): Int32Array {
  const keep = nonEmpty(b, minSize);
  const out: number[] = [];
  for (let i = 0; i < keep.length; i++) if (keep[i]) out.push(i);
  return Int32Array.from(out);
}

/** Rows `indices` of an N*k array (boxes with k = 4, deltas, scores with k = 1). */
export function selectRows(values: Float32Array, k: number, indices: ArrayLike<number>): Float32Array {
  const out = new Float32Array(indices.length * k);
  for (let r = 0; r < indices.length; r++) out.set(values.subarray(indices[r]! * k, indices[r]! * k + k), r * k);
  return out;
}

/**
 * detectron2's Box2BoxTransform (Faster R-CNN eq. 2, divided by the weights'
 * inverse): for a reference box of width w, height h and centre (cx, cy),
 *   dx = wx (tx - cx) / w,  dy = wy (ty - cy) / h,
 *   dw = ww log(tw / w),    dh = wh log(th / h).
 * Centres are x0 + 0.5 w. `decode` clamps dw and dh at `scaleClamp`
 * (log(1000 / 16) by default) so exp() cannot overflow on a wild prediction.
 */
export class BoxCoder {
  readonly weights: readonly [number, number, number, number];
  readonly scaleClamp: number;

  constructor(weights: [number, number, number, number], scaleClamp = Math.log(1000 / 16)) {
    if (weights.length !== 4 || weights.some((w) => !(w > 0))) {
      throw new Error(`BoxCoder: weights must be four positive numbers, got [${weights.join(', ')}]`);
    }
    if (!(scaleClamp > 0)) throw new Error(`BoxCoder: scaleClamp must be positive, got ${scaleClamp}`);
    this.weights = [...weights];
    this.scaleClamp = scaleClamp;
  }

  /** Deltas (N*4) that take each `ref` box (positive width and height) to the `target` box of the same row. */
  encode(ref: Float32Array, target: Float32Array): Float32Array {
    const n = checkBoxes('BoxCoder.encode ref', ref);
    if (checkBoxes('BoxCoder.encode target', target) !== n) {
      throw new Error(`BoxCoder.encode: ${n} reference boxes but ${target.length / 4} targets`);
    }
    const [wx, wy, ww, wh] = this.weights;
    const out = new Float32Array(4 * n);
    for (let o = 0; o < 4 * n; o += 4) {
      const w = ref[o + 2]! - ref[o]!;
      const h = ref[o + 3]! - ref[o + 1]!;
      // detectron2 asserts this too: a zero-width reference gives infinite deltas.
      if (!(w > 0 && h > 0)) throw new Error(`BoxCoder.encode: reference box ${o / 4} has width ${w} and height ${h}; both must be positive`);
      const cx = ref[o]! + 0.5 * w;
      const cy = ref[o + 1]! + 0.5 * h;
      const tw = target[o + 2]! - target[o]!;
      const th = target[o + 3]! - target[o + 1]!;
      const tcx = target[o]! + 0.5 * tw;
      const tcy = target[o + 1]! + 0.5 * th;
      out[o] = (wx * (tcx - cx)) / w;
      out[o + 1] = (wy * (tcy - cy)) / h;
      out[o + 2] = ww * Math.log(tw / w);
      out[o + 3] = wh * Math.log(th / h);
    }
    return out;
  }

  /** Boxes (N*4) from `ref` boxes moved by `deltas`; the inverse of `encode` up to the clamp. */
  decode(ref: Float32Array, deltas: Float32Array): Float32Array {
    const n = checkBoxes('BoxCoder.decode ref', ref);
    if (deltas.length !== 4 * n) throw new Error(`BoxCoder.decode: ${n} reference boxes but ${deltas.length} delta values (want ${4 * n})`);
    const [wx, wy, ww, wh] = this.weights;
    const clamp = this.scaleClamp;
    const out = new Float32Array(4 * n);
    for (let o = 0; o < 4 * n; o += 4) {
      const w = ref[o + 2]! - ref[o]!;
      const h = ref[o + 3]! - ref[o + 1]!;
      const cx = ref[o]! + 0.5 * w;
      const cy = ref[o + 1]! + 0.5 * h;
      const dx = deltas[o]! / wx;
      const dy = deltas[o + 1]! / wy;
      const dw = Math.min(deltas[o + 2]! / ww, clamp);
      const dh = Math.min(deltas[o + 3]! / wh, clamp);
      const pcx = dx * w + cx;
      const pcy = dy * h + cy;
      const pw = Math.exp(dw) * w;
      const ph = Math.exp(dh) * h;
      out[o] = pcx - 0.5 * pw;
      out[o + 1] = pcy - 0.5 * ph;
      out[o + 2] = pcx + 0.5 * pw;
      out[o + 3] = pcy + 0.5 * ph;
    }
    return out;
  }
}
