// Non-maximum suppression with torchvision's semantics
// (csrc/ops/cpu/nms_kernel.cpp, which detectron2's layers/nms.py calls):
// boxes are visited in descending score order, a stable sort, so equal
// scores keep their input order; a box suppresses a later one when their IoU
// is strictly greater than the threshold. tfjs's NonMaxSuppressionV3 differs
// (it suppresses at IoU >= threshold), hence this host version
// (docs: research/detection_transfer.md sec. 3.3).
//
// IoU here is computed in float64 from the float32 inputs, where torchvision
// works in float32; the two can only disagree on an IoU within a rounding
// error of the threshold.

/** Indices 0..n-1 sorted by descending score, ties by ascending index. */
function sortByScore(scores: Float32Array): Int32Array {
  const order = new Int32Array(scores.length);
  for (let i = 0; i < order.length; i++) order[i] = i;
  // TypedArray sort is not guaranteed stable for a comparator; the index tie-break makes it so.
  order.sort((a, b) => scores[b]! - scores[a]! || a - b);
  return order;
}

function checkInputs(name: string, boxes: Float32Array, scores: Float32Array): number {
  const n = scores.length;
  if (boxes.length !== 4 * n) throw new Error(`${name}: ${n} scores but ${boxes.length} box values (want ${4 * n})`);
  return n;
}

/**
 * Suppresses over `order[from..to)` (descending-score indices of one group),
 * writing 1 to `suppressed[i]` for each suppressed box i.
 */
function suppress(boxes: Float32Array, areas: Float64Array, order: Int32Array, from: number, to: number, iouThreshold: number, suppressed: Uint8Array): void {
  for (let a = from; a < to; a++) {
    const i = order[a]!;
    if (suppressed[i]) continue;
    const ix0 = boxes[4 * i]!;
    const iy0 = boxes[4 * i + 1]!;
    const ix1 = boxes[4 * i + 2]!;
    const iy1 = boxes[4 * i + 3]!;
    const iArea = areas[i]!;
    for (let b = a + 1; b < to; b++) {
      const j = order[b]!;
      if (suppressed[j]) continue;
      const w = Math.min(ix1, boxes[4 * j + 2]!) - Math.max(ix0, boxes[4 * j]!);
      if (w <= 0) continue;
      const h = Math.min(iy1, boxes[4 * j + 3]!) - Math.max(iy0, boxes[4 * j + 1]!);
      if (h <= 0) continue;
      const inter = w * h;
      if (inter / (iArea + areas[j]! - inter) > iouThreshold) suppressed[j] = 1;
    }
  }
}

function boxAreas(boxes: Float32Array, n: number): Float64Array {
  const areas = new Float64Array(n);
  for (let i = 0; i < n; i++) areas[i] = (boxes[4 * i + 2]! - boxes[4 * i]!) * (boxes[4 * i + 3]! - boxes[4 * i + 1]!);
  return areas;
}

/** Kept indices, in descending score order (ties in input order). */
export function nms(boxes: Float32Array, scores: Float32Array, iouThreshold: number): Int32Array {
  const n = checkInputs('nms', boxes, scores);
  const order = sortByScore(scores);
  const suppressed = new Uint8Array(n);
  suppress(boxes, boxAreas(boxes, n), order, 0, n, iouThreshold, suppressed);
  return order.filter((i) => !suppressed[i]);
}

/**
 * NMS within each group (class or pyramid level): boxes of different groups
 * never suppress each other. Kept indices of all groups together, in
 * descending score order, ties in input order, as torchvision's batched_nms.
 */
export function batchedNms(boxes: Float32Array, scores: Float32Array, groups: Int32Array, iouThreshold: number): Int32Array {
  const n = checkInputs('batchedNms', boxes, scores);
  if (groups.length !== n) throw new Error(`batchedNms: ${n} scores but ${groups.length} group ids`);
  const order = sortByScore(scores);
  // Regroup the sorted order by group, keeping score order inside each group
  // (a counting sort on the group id), then suppress group by group.
  const ids = new Map<number, number>();
  for (let i = 0; i < n; i++) if (!ids.has(groups[i]!)) ids.set(groups[i]!, ids.size);
  const starts = new Int32Array(ids.size + 1);
  for (let i = 0; i < n; i++) starts[ids.get(groups[i]!)! + 1]!++;
  for (let g = 0; g < ids.size; g++) starts[g + 1]! += starts[g]!;
  const fill = starts.slice(0, ids.size);
  const grouped = new Int32Array(n);
  for (let a = 0; a < n; a++) {
    const i = order[a]!;
    grouped[fill[ids.get(groups[i]!)!]!++] = i;
  }
  const areas = boxAreas(boxes, n);
  const suppressed = new Uint8Array(n);
  for (let g = 0; g < ids.size; g++) suppress(boxes, areas, grouped, starts[g]!, starts[g + 1]!, iouThreshold, suppressed);
  return order.filter((i) => !suppressed[i]);
}
