// Assigns each prediction (anchor or proposal) to a ground-truth box,
// detectron2's Matcher (modeling/matcher.py).
//
// Orientation: `iou` is [numGt x numPred] row-major, row g holding GT g's IoU
// with every prediction, which is pairwiseIou(gtBoxes, predBoxes).

export interface MatchResult {
  /** Per prediction: the index of the GT with the highest IoU (the first on ties; 0 when there is no GT). */
  matches: Int32Array;
  /** Per prediction: the label of the interval its best IoU falls in (1 positive, 0 negative, -1 ignore). */
  labels: Int8Array;
}

/**
 * thresholds [t1, ..., tk] split the best IoU into intervals
 * [-inf, t1), [t1, t2), ..., [tk, inf), low end included, and labels gives
 * one label per interval: thresholds [0.3, 0.7] with labels [0, -1, 1] make
 * 0.3 exactly an ignore and 0.7 exactly a positive.
 *
 * allowLowQualityMatches (Faster R-CNN sec. 3.1.2, case (i)): for each GT,
 * every prediction whose IoU equals that GT's highest IoU, ties included, is
 * labelled 1 whatever its interval; its `matches` entry stays its own best GT.
 * As in detectron2 there is no "max > 0" guard: a GT that overlaps no
 * prediction at all (highest IoU 0) makes every prediction with IoU 0 to it
 * positive. Callers must drop empty GT boxes first (detectron2 does, in
 * filter_empty_instances); the scene data has none.
 *
 * numGt = 0 or numPred = 0: every prediction gets labels[0] (background) and match 0.
 */
export function matchBoxes(
  iou: Float32Array,
  numGt: number,
  numPred: number,
  thresholds: readonly number[],
  labels: readonly number[],
  allowLowQualityMatches: boolean,
): MatchResult {
  if (iou.length !== numGt * numPred) {
    throw new Error(`matchBoxes: IoU matrix has ${iou.length} entries, want numGt x numPred = ${numGt} x ${numPred}`);
  }
  if (thresholds.length === 0 || !(thresholds[0]! > 0)) throw new Error(`matchBoxes: thresholds must start above 0, got [${thresholds.join(', ')}]`);
  for (let k = 1; k < thresholds.length; k++) {
    if (thresholds[k]! < thresholds[k - 1]!) throw new Error(`matchBoxes: thresholds must be ascending, got [${thresholds.join(', ')}]`);
  }
  if (labels.length !== thresholds.length + 1 || labels.some((l) => l !== -1 && l !== 0 && l !== 1)) {
    throw new Error(`matchBoxes: want ${thresholds.length + 1} labels from {-1, 0, 1} for ${thresholds.length} thresholds, got [${labels.join(', ')}]`);
  }
  const matches = new Int32Array(numPred);
  const out = new Int8Array(numPred);
  if (numGt === 0 || numPred === 0) {
    out.fill(labels[0]!);
    return { matches, labels: out };
  }
  // Best GT per prediction, the first GT on ties (torch.max's CPU behaviour).
  const best = new Float32Array(numPred).fill(-Infinity);
  for (let g = 0; g < numGt; g++) {
    const row = g * numPred;
    for (let p = 0; p < numPred; p++) {
      const v = iou[row + p]!;
      if (v > best[p]!) {
        best[p] = v;
        matches[p] = g;
      }
    }
  }
  // PyTorch compares a float32 tensor with a Python float in float32, so an
  // IoU stored as float32(0.7) counts as reaching the threshold 0.7.
  const bounds = thresholds.map(Math.fround);
  for (let p = 0; p < numPred; p++) {
    const v = best[p]!;
    let k = 0;
    while (k < bounds.length && v >= bounds[k]!) k++;
    out[p] = labels[k]!;
  }
  if (allowLowQualityMatches) {
    for (let g = 0; g < numGt; g++) {
      const row = g * numPred;
      let highest = -Infinity;
      for (let p = 0; p < numPred; p++) if (iou[row + p]! > highest) highest = iou[row + p]!;
      for (let p = 0; p < numPred; p++) if (iou[row + p] === highest) out[p] = 1;
    }
  }
  return { matches, labels: out };
}
