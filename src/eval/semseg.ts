// Semantic segmentation scores as detectron2's SemSegEvaluator computes them:
// a confusion matrix over every pixel, per class IoU = tp / (gt + pred - tp)
// and accuracy = tp / gt, averaged over the classes that occur in the ground
// truth (mIoU, mACC), frequency-weighted IoU and pixel accuracy.

export interface SemSegScores {
  /** Percent, over classes with ground-truth pixels. */
  mIoU: number;
  fwIoU: number;
  mACC: number;
  pACC: number;
  /** Per class IoU in percent; null where the class has no ground-truth pixels. */
  perClass: Array<number | null>;
}

export class ConfusionMatrix {
  /** counts[gt * classes + pred] */
  readonly counts: Float64Array;

  constructor(readonly classes: number) {
    this.counts = new Float64Array(classes * classes);
  }

  /** Adds a map of predicted and true class ids (same length); `ignore` labels in the truth are skipped. */
  add(pred: ArrayLike<number>, truth: ArrayLike<number>, ignore = 255): void {
    if (pred.length !== truth.length) throw new Error(`ConfusionMatrix.add: ${pred.length} predictions for ${truth.length} labels`);
    const k = this.classes;
    for (let i = 0; i < truth.length; i++) {
      const t = truth[i]!;
      if (t === ignore) continue;
      const p = pred[i]!;
      if (t < 0 || t >= k || p < 0 || p >= k) throw new Error(`ConfusionMatrix.add: class ${t < 0 || t >= k ? t : p} at pixel ${i} is outside 0..${k - 1}`);
      this.counts[t * k + p]!++;
    }
  }

  scores(): SemSegScores {
    const k = this.classes;
    let total = 0;
    let correct = 0;
    const perClass: Array<number | null> = [];
    let iouSum = 0;
    let accSum = 0;
    let fw = 0;
    let valid = 0;
    for (let c = 0; c < k; c++) {
      const tp = this.counts[c * k + c]!;
      let gt = 0;
      let pred = 0;
      for (let j = 0; j < k; j++) {
        gt += this.counts[c * k + j]!;
        pred += this.counts[j * k + c]!;
      }
      total += gt;
      correct += tp;
      if (gt === 0) {
        perClass.push(null);
        continue;
      }
      const iou = tp / (gt + pred - tp);
      perClass.push(100 * iou);
      iouSum += iou;
      accSum += tp / gt;
      fw += gt * iou;
      valid++;
    }
    if (total === 0) throw new Error('ConfusionMatrix.scores: no labelled pixels');
    return { mIoU: (100 * iouSum) / valid, fwIoU: (100 * fw) / total, mACC: (100 * accSum) / valid, pACC: (100 * correct) / total, perClass };
  }
}
