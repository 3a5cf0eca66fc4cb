// Anchors for every level of the feature pyramid, in detectron2's
// DefaultAnchorGenerator order (modeling/anchor_generator.py): cells
// row-major (y outer, x inner), and within a cell one anchor per
// (size, aspect ratio), ratios innermost. The RPN head's outputs are
// flattened in the same order, so anchor k lines up with prediction k.

export interface AnchorLevel {
  /** Feature stride in input pixels. */
  stride: number;
  /** Anchor side for aspect ratio 1 (the anchor's area is size^2). */
  size: number;
  /** Feature map height and width. */
  height: number;
  width: number;
}

/**
 * Cell anchors centred at 0: area size^2 and h / w = ratio, so
 * w = sqrt(area / ratio), h = ratio w (detectron2 generate_cell_anchors).
 */
export function cellAnchors(size: number, aspectRatios: readonly number[]): Float32Array {
  const out = new Float32Array(4 * aspectRatios.length);
  aspectRatios.forEach((ratio, k) => {
    const w = Math.sqrt((size * size) / ratio);
    const h = ratio * w;
    // detectron2 keeps cell anchors as float32, then adds float32 shifts.
    out.set([-w / 2, -h / 2, w / 2, h / 2].map(Math.fround), 4 * k);
  });
  return out;
}

/**
 * One N*4 Float32Array of (x0, y0, x1, y1) anchors per level, with
 * N = height * width * aspectRatios.length. Cell (x, y) is shifted by
 * ((x + offset) stride, (y + offset) stride): offset 0 (detectron2's default)
 * puts the anchor centres on the cells' top-left corners.
 */
export function generateAnchors(levels: readonly AnchorLevel[], aspectRatios: readonly number[] = [0.5, 1, 2], offset = 0): Float32Array[] {
  if (aspectRatios.length === 0 || aspectRatios.some((r) => !(r > 0))) {
    throw new Error(`generateAnchors: aspect ratios must be positive, got [${aspectRatios.join(', ')}]`);
  }
  if (!(offset >= 0 && offset < 1)) throw new Error(`generateAnchors: offset must be in [0, 1), got ${offset}`);
  return levels.map(({ stride, size, height, width }, l) => {
    if (!(stride > 0) || !(size > 0) || !Number.isInteger(height) || !Number.isInteger(width) || height < 0 || width < 0) {
      throw new Error(`generateAnchors: level ${l} needs positive stride and size and whole height and width, got ${JSON.stringify(levels[l])}`);
    }
    const cell = cellAnchors(size, aspectRatios);
    const a = aspectRatios.length;
    const out = new Float32Array(height * width * a * 4);
    let o = 0;
    for (let y = 0; y < height; y++) {
      const sy = Math.fround(y * stride + offset * stride);
      for (let x = 0; x < width; x++) {
        const sx = Math.fround(x * stride + offset * stride);
        for (let k = 0; k < 4 * a; k += 4) {
          out[o++] = sx + cell[k]!;
          out[o++] = sy + cell[k + 1]!;
          out[o++] = sx + cell[k + 2]!;
          out[o++] = sy + cell[k + 3]!;
        }
      }
    }
    return out;
  });
}
