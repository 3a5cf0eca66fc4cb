// COCO annotation format (Lin et al. 2014; the cocodataset.org "data format"
// page): types, and the run-length mask encoding pycocotools reads.
//
// COCO RLE runs over the mask in column-major order, starting with a run of
// zeros. The compressed string form (what `counts` holds when it is a string)
// is maskApi.c's rleToString: each count, minus the count two before it from
// the third on, as 5-bit groups with a continuation bit, offset by 48.

export interface CocoRle {
  size: [number, number];
  counts: string;
}

export interface CocoImage {
  id: number;
  file_name: string;
  width: number;
  height: number;
  /** Our addition: the per-pixel semantic mask PNG, same name in the masks folder. */
  semantic_mask?: string;
}

export interface CocoAnnotation {
  id: number;
  image_id: number;
  category_id: number;
  /** [x, y, width, height] in pixels, of the visible mask. */
  bbox: [number, number, number, number];
  area: number;
  iscrowd: 0 | 1;
  segmentation: CocoRle;
}

export interface CocoCategory {
  id: number;
  name: string;
  supercategory: string;
}

export interface CocoDataset {
  info: Record<string, unknown>;
  licenses: unknown[];
  images: CocoImage[];
  annotations: CocoAnnotation[];
  categories: CocoCategory[];
}

/** Run lengths of a row-major 0/1 mask, read column by column. */
export function maskToRuns(mask: Uint8Array, height: number, width: number): number[] {
  const runs: number[] = [];
  let current = 0;
  let run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const v = mask[y * width + x] ? 1 : 0;
      if (v !== current) {
        runs.push(run);
        run = 0;
        current = v;
      }
      run++;
    }
  }
  runs.push(run);
  return runs;
}

export function runsToString(runs: readonly number[]): string {
  let s = '';
  for (let i = 0; i < runs.length; i++) {
    let x = runs[i]!;
    if (i > 2) x -= runs[i - 2]!;
    let more = true;
    while (more) {
      let c = x & 0x1f;
      x >>= 5;
      more = c & 0x10 ? x !== -1 : x !== 0;
      if (more) c |= 0x20;
      s += String.fromCharCode(c + 48);
    }
  }
  return s;
}

export function stringToRuns(s: string): number[] {
  const runs: number[] = [];
  let p = 0;
  while (p < s.length) {
    let x = 0;
    let k = 0;
    let more = true;
    while (more) {
      if (p >= s.length) throw new Error('COCO RLE string ends inside a count');
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && c & 0x10) x |= -1 << (5 * k);
    }
    if (runs.length > 2) x += runs[runs.length - 2]!;
    runs.push(x);
  }
  return runs;
}

export function encodeRle(mask: Uint8Array, height: number, width: number): CocoRle {
  return { size: [height, width], counts: runsToString(maskToRuns(mask, height, width)) };
}

/** Back to a row-major 0/1 mask. */
export function decodeRle(rle: CocoRle): Uint8Array {
  const [height, width] = rle.size;
  const runs = stringToRuns(rle.counts);
  const mask = new Uint8Array(height * width);
  let pos = 0;
  runs.forEach((run, i) => {
    if (i % 2 === 1) {
      for (let k = pos; k < pos + run; k++) mask[(k % height) * width + Math.floor(k / height)] = 1;
    }
    pos += run;
  });
  if (pos !== height * width) throw new Error(`COCO RLE covers ${pos} pixels, its size says ${height}x${width}`);
  return mask;
}

/** Tight [x, y, w, h] around the set pixels, or null for an empty mask. */
export function maskBox(mask: Uint8Array, height: number, width: number): [number, number, number, number] | null {
  let x0 = width;
  let y0 = height;
  let x1 = -1;
  let y1 = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (!mask[y * width + x]) continue;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
  }
  return x1 < 0 ? null : [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
}
