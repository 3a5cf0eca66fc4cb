// src/eval/coco_eval.ts against pycocotools: the 24 hand-made cases of
// docs/research detection_transfer.md §4.4 with pycocotools' own numbers
// (1e-6), then properties (order invariance, mask AP = box AP for box-shaped
// masks, area ranges at 128 px, per-category AP), the exact constants, mask
// IoU on runs against bitmaps, loadResults' errors, and the CLI.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeRle, maskBox, type CocoRle } from '../src/data/coco.js';
import { Mulberry32 } from '../src/core/random.js';
import {
  defaultParams,
  evaluateCoco,
  formatCocoSummary,
  keypointOks,
  loadResults,
  type Box,
  type CocoEvalOptions,
  type CocoGroundTruth,
  type CocoResult,
} from '../src/eval/coco_eval.js';
import { parseRle, rleIou } from '../src/eval/mask_iou.js';

const SIZE = 128;

interface Obj {
  box: Box;
  image?: number;
  cat?: number;
  area?: number;
  crowd?: boolean;
  mask?: CocoRle;
  keypoints?: number[];
}

function dataset(objs: Obj[], images = [1], cats = [1, 2]): CocoGroundTruth {
  return {
    images: images.map((id) => ({ id, width: SIZE, height: SIZE })),
    categories: cats.map((id) => ({ id, name: `class${id}` })),
    annotations: objs.map((o, i) => ({
      id: i + 1,
      image_id: o.image ?? 1,
      category_id: o.cat ?? 1,
      bbox: o.box,
      area: o.area ?? o.box[2] * o.box[3],
      iscrowd: o.crowd ? 1 : 0,
      ...(o.mask ? { segmentation: o.mask } : {}),
      ...(o.keypoints ? { keypoints: o.keypoints, num_keypoints: o.keypoints.filter((v, k) => k % 3 === 2 && v > 0).length } : {}),
    })),
  };
}

const det = (bbox: Box, score: number, image = 1, cat = 1): CocoResult => ({ image_id: image, category_id: cat, bbox, score });

function rectMask([x, y, w, h]: Box): CocoRle {
  const m = new Uint8Array(SIZE * SIZE);
  for (let r = y; r < y + h; r++) for (let c = x; c < x + w; c++) m[r * SIZE + c] = 1;
  return encodeRle(m, SIZE, SIZE);
}

const DET_NAMES = ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100'];
const KP_NAMES = ['AP', 'AP50', 'AP75', 'APm', 'APl'];

/** The table's columns (APl is -1 in every case: nothing is larger than 96² px). */
function expectStats(stats: number[], expected: number[], names = DET_NAMES): void {
  expected.forEach((e, i) => {
    assert.ok(Math.abs(stats[i]! - e) <= 1e-6, `${names[i]} is ${stats[i]}, pycocotools gives ${e}`);
  });
}

/** Equal up to the rounding of pr = 1 / (1 + eps) and of the means. */
function assertNear(actual: number, expected: number, what = 'value'): void {
  assert.ok(Math.abs(actual - expected) < 1e-12, `${what}: ${actual}, expected ${expected}`);
}

const bboxStats = (gt: CocoGroundTruth, results: CocoResult[], options: CocoEvalOptions = {}): number[] =>
  evaluateCoco(gt, results, { iouType: 'bbox', ...options }).stats;

// 51 of the 101 recall thresholds (0, .01, ..., .50) reach recall 0.5
const HALF = 51 / 101;

const A: Box = [10, 10, 40, 40];
const FAR: Box = [70, 70, 40, 40];

describe('pycocotools parity (§4.4)', () => {
  test('T1: a detection equal to its ground truth: every number 1', () => {
    const s = evaluateCoco(dataset([{ box: A }]), [det(A, 0.9)], { iouType: 'bbox' });
    expectStats(s.stats, [1, 1, 1, -1, 1, -1, 1, 1, 1]);
    // pr = tp / (tp + fp + eps) = 1 / (1 + 2^-52), which rounds to 1 - 2^-52: pycocotools' eps, not 0 or 1e-10
    assert.equal(s.precision[0], 1 - 2 ** -52);
  });

  test('T2: IoU exactly 0.5 matches at the first threshold only (>=, not >)', () => {
    expectStats(bboxStats(dataset([{ box: A }]), [det([10, 10, 40, 20], 0.9)]), [0.1, 1, 0, -1, 0.1, -1, 0.1, 0.1, 0.1]);
  });

  test('T2b: IoU exactly 0.75 matches at the six thresholds .50-.75 (iouThrs[5] is exactly 0.75)', () => {
    expectStats(bboxStats(dataset([{ box: A }]), [det([10, 10, 40, 30], 0.9)]), [0.6, 1, 1, -1, 0.6, -1, 0.6, 0.6, 0.6]);
  });

  test('T3: a lower-scored duplicate is a false positive after the recall is reached: AP 1', () => {
    expectStats(bboxStats(dataset([{ box: A }]), [det(A, 0.9), det(A, 0.8)]), [1, 1, 1, -1, 1, -1, 1, 1, 1]);
  });

  test('T3b: a false positive ranked first halves the precision at recall 1; AR1 sees only it', () => {
    expectStats(bboxStats(dataset([{ box: A }]), [det(FAR, 0.9), det(A, 0.8)]), [0.5, 0.5, 0.5, -1, 0.5, -1, 0, 1, 1]);
  });

  test('T4: one of two ground truths found: precision 1 up to recall .5 = 51/101', () => {
    expectStats(bboxStats(dataset([{ box: A }, { box: FAR }]), [det(A, 0.9)]), [HALF, HALF, HALF, -1, HALF, -1, 0.5, 0.5, 0.5]);
  });

  test('T5: a detection inside a crowd region is ignored, neither right nor wrong', () => {
    const gt = dataset([{ box: [0, 0, 60, 128], crowd: true }, { box: FAR }]);
    // AR1 0: the one detection kept per image is the ignored one
    expectStats(bboxStats(gt, [det([5, 5, 20, 20], 0.95), det(FAR, 0.9)]), [1, 1, 1, -1, 1, -1, 0, 1, 1]);
  });

  test('T5b: the same region not crowd: IoU 400/7680, a false positive first', () => {
    const gt = dataset([{ box: [0, 0, 60, 128] }, { box: FAR }]);
    // APm 51/101: the small false positive (area 400) is outside "medium", so only the medium pair counts
    expectStats(bboxStats(gt, [det([5, 5, 20, 20], 0.95), det(FAR, 0.9)]), [HALF / 2, HALF / 2, HALF / 2, -1, HALF, -1, 0, 0.5, 0.5]);
  });

  test("T6: the annotation's area (500: small), not its box's, picks the range", () => {
    const gt = dataset([{ box: A, area: 500 }]);
    // APs 1: the false positive is 50x50, outside "small"; APm -1: no medium ground truth
    expectStats(bboxStats(gt, [det(A, 0.9), det([60, 60, 50, 50], 0.95)]), [0.5, 0.5, 0.5, 1, -1, -1, 0, 1, 1]);
  });

  test('T7: the true positive ranked 101st is cut by maxDets 100', () => {
    const fps = Array.from({ length: 100 }, (_, i) => det([80, 80, 20, 20], 0.5 + i * 0.001));
    expectStats(bboxStats(dataset([{ box: A }]), [...fps, det(A, 0.4)]), [0, 0, 0, -1, 0, -1, 0, 0, 0]);
  });

  test('T8: a category without ground truth drops out of the mean (precision -1)', () => {
    expectStats(bboxStats(dataset([{ box: A }]), [det(A, 0.9), det(FAR, 0.8, 1, 2)]), [1, 1, 1, -1, 1, -1, 1, 1, 1]);
  });

  test('T8b: a category with ground truth and no detections counts as 0', () => {
    expectStats(bboxStats(dataset([{ box: A }, { box: FAR, cat: 2 }]), [det(A, 0.9)]), [0.5, 0.5, 0.5, -1, 0.5, -1, 0.5, 0.5, 0.5]);
  });

  test('T9: equal scores in one image keep the listed order (stable sort): FP first', () => {
    expectStats(bboxStats(dataset([{ box: A }]), [det(FAR, 0.9), det(A, 0.9)]), [0.5, 0.5, 0.5, -1, 0.5, -1, 0, 1, 1]);
  });

  test('T9b: equal scores, TP listed first', () => {
    expectStats(bboxStats(dataset([{ box: A }]), [det(A, 0.9), det(FAR, 0.9)]), [1, 1, 1, -1, 1, -1, 1, 1, 1]);
  });

  test('T9c: equal scores across images keep image-id order, not the results order: FP (image 1) first', () => {
    const gt = dataset([{ box: A, image: 2 }], [1, 2]);
    // AR1 1: one detection per image, and image 2's is the TP
    expectStats(bboxStats(gt, [det(A, 0.9, 2), det(FAR, 0.9, 1)]), [0.5, 0.5, 0.5, -1, 0.5, -1, 1, 1, 1]);
  });

  test('T9d: TP in image 1, FP in image 2', () => {
    const gt = dataset([{ box: A, image: 1 }], [1, 2]);
    expectStats(bboxStats(gt, [det(FAR, 0.9, 2), det(A, 0.9, 1)]), [1, 1, 1, -1, 1, -1, 1, 1, 1]);
  });

  test('T10: equal IoU 0.6 with two ground truths: the later one wins, leaving the first for the second detection', () => {
    const gt = dataset([{ box: [0, 0, 40, 40] }, { box: [20, 0, 40, 40] }]);
    // .50-.60: both TP (1); .65-.95: FP then TP (51/202 each); AP = (3 + 7 * 51/202) / 10 = 0.4767326...
    const ap = (3 + (7 * 51) / 202) / 10;
    expectStats(bboxStats(gt, [det([10, 0, 40, 40], 0.9), det([0, 0, 40, 40], 0.8)]), [0.476733, 1, 0.252475, -1, ap, -1, 0.15, 0.65, 0.65]);
  });

  test('T10b: greedy by score: the first detection (IoU .667) takes the ground truth its better twin (IoU 1) needed', () => {
    const gt = dataset([{ box: [0, 0, 40, 40] }, { box: [80, 80, 40, 40] }]);
    // .50-.65: TP, FP (51/101); .70-.95: FP, TP (51/202); APm = (4 * 51/101 + 6 * 51/202) / 10 = 0.3534653...
    const ap = (4 * HALF + 3 * HALF) / 10;
    expectStats(bboxStats(gt, [det([8, 0, 40, 40], 0.9), det([0, 0, 40, 40], 0.8)]), [0.353465, 0.50495, 0.252475, -1, ap, -1, 0.2, 0.5, 0.5]);
  });

  test('T11: a regular match (IoU .667) wins over a crowd (IoU 1); above .667 the crowd absorbs the detection', () => {
    const gt = dataset([{ box: [0, 0, 128, 128], crowd: true }, { box: A }]);
    expectStats(bboxStats(gt, [det([18, 10, 40, 40], 0.9)]), [0.4, 1, 0, -1, 0.4, -1, 0.4, 0.4, 0.4]);
  });

  test('T12: interpolated precision over three images: TP FP TP FP TP', () => {
    const gt = dataset([1, 2, 3].map((image) => ({ box: A, image })), [1, 2, 3]);
    const results = [det(A, 0.9, 1), det(FAR, 0.8, 1), det(A, 0.7, 2), det(FAR, 0.6, 2), det(A, 0.5, 3)];
    // envelope 1 | 2/3 | 0.6 on recall thresholds 0-.33 (34), .34-.66 (33), .67-1 (34): APm = 76.4/101 = 0.7564356...
    const ap = (34 + (33 * 2) / 3 + 34 * 0.6) / 101;
    expectStats(bboxStats(gt, results), [0.756436, 0.756436, 0.756436, -1, ap, -1, 1, 1, 1]);
  });

  test('T13 (segm): mask IoU .75 and the mask area (100, small) puts the FP outside "medium"', () => {
    const gt = dataset([{ box: A, mask: rectMask(A) }]);
    const results: CocoResult[] = [
      { image_id: 1, category_id: 1, score: 0.9, segmentation: rectMask([10, 10, 40, 30]) },
      { image_id: 1, category_id: 1, score: 0.95, segmentation: rectMask([90, 90, 10, 10]) },
    ];
    // all: FP first, TP at the six thresholds <= .75 (0.5 each) = 0.3; medium: the FP is ignored = 0.6
    expectStats(evaluateCoco(gt, results, { iouType: 'segm' }).stats, [0.3, 0.5, 0.5, -1, 0.6, -1, 0, 0.6, 0.6]);
  });

  const SIGMAS = [0.05, 0.05, 0.05, 0.05];
  const KP = [20, 20, 2, 40, 20, 2, 20, 40, 2, 40, 40, 2];
  const shifted = (kp: number[], dx: number): number[] => kp.map((v, k) => (k % 3 === 0 ? v + dx : v));
  const kpRun = (gtKp: number[], dtKp: number[]): number[] =>
    evaluateCoco(dataset([{ box: A, keypoints: gtKp }]), [{ image_id: 1, category_id: 1, score: 0.9, keypoints: dtKp, bbox: A }], {
      iouType: 'keypoints',
      kptSigmas: SIGMAS,
    }).stats;

  test('T14 (keypoints): shifted 2 px, OKS exp(-4 / 0.01 / 1600 / 2) = 0.882497: matched at .50-.85', () => {
    expectStats(kpRun(KP, shifted(KP, 2)), [0.8, 1, 1, 0.8, -1], KP_NAMES);
  });

  test('T14b: shifted 4 px, OKS exp(-0.5) = 0.606531: matched at .50-.60', () => {
    expectStats(kpRun(KP, shifted(KP, 4)), [0.3, 1, 0, 0.3, -1], KP_NAMES);
  });

  test('T14c: only the labelled keypoints count (v = 0 on two): the same OKS whatever the others say', () => {
    const gtKp = [20, 20, 2, 40, 20, 2, 0, 0, 0, 0, 0, 0];
    const dtKp = [24, 20, 1, 44, 20, 1, 100, 100, 1, 5, 120, 1];
    expectStats(kpRun(gtKp, dtKp), [0.3, 1, 0, 0.3, -1], KP_NAMES);
  });
});

describe('properties', () => {
  /** A random scene set: boxes, some crowds, detections near them and false ones, distinct scores. */
  function randomScenes(seed: number, images: number) {
    const r = new Mulberry32(seed);
    const int = (lo: number, hi: number): number => lo + Math.floor(r.next() * (hi - lo));
    const objs: Obj[] = [];
    const results: CocoResult[] = [];
    for (let image = 1; image <= images; image++) {
      for (let n = int(1, 5); n > 0; n--) {
        const box: Box = [int(0, 80), int(0, 80), int(8, 48), int(8, 48)];
        const cat = int(1, 3);
        objs.push({ box, image, cat, crowd: r.next() < 0.1, mask: rectMask(box) });
        for (let d = int(0, 3); d > 0; d--) {
          const b: Box = [box[0] + int(0, 6), box[1] + int(0, 6), box[2] - int(0, 6), box[3] - int(0, 6)];
          results.push(det(b, r.next(), image, r.next() < 0.9 ? cat : 3 - cat));
        }
      }
      for (let d = int(0, 3); d > 0; d--) results.push(det([int(0, 100), int(0, 100), int(4, 28), int(4, 28)], r.next(), image, int(1, 3)));
    }
    return { objs, results };
  }

  function shuffle<T>(items: T[], seed: number): T[] {
    const r = new Mulberry32(seed);
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(r.next() * (i + 1));
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }

  test('renumbering images and shuffling images, annotations and results changes nothing (distinct scores)', () => {
    const { objs, results } = randomScenes(1, 8);
    const gt = dataset(objs, [1, 2, 3, 4, 5, 6, 7, 8]);
    const base = evaluateCoco(gt, results, { iouType: 'bbox' });
    assert.ok(base.stats[0]! > 0.1 && base.stats[0]! < 0.9, `a non-trivial scene set (AP ${base.stats[0]})`);
    const renumber = new Map([1, 2, 3, 4, 5, 6, 7, 8].map((id, i) => [id, [40, 3, 17, 5, 99, 8, 21, 2][i]!]));
    const moved: CocoGroundTruth = {
      images: shuffle(gt.images, 2).map((im) => ({ ...im, id: renumber.get(im.id)! })),
      categories: gt.categories,
      annotations: shuffle(gt.annotations, 3).map((a) => ({ ...a, image_id: renumber.get(a.image_id)! })),
    };
    const movedResults = shuffle(results, 4).map((d) => ({ ...d, image_id: renumber.get(d.image_id)! }));
    const other = evaluateCoco(moved, movedResults, { iouType: 'bbox' });
    assert.deepEqual(other.stats, base.stats);
    assert.deepEqual(other.precision, base.precision);
  });

  test('mask AP equals box AP when every mask is its full box (crowds included)', () => {
    const { objs, results } = randomScenes(5, 6);
    const gt = dataset(objs, [1, 2, 3, 4, 5, 6]);
    const boxes = evaluateCoco(gt, results, { iouType: 'bbox' });
    // no bbox in the mask results, so their area is the mask's (detectron2's convention), here the same w * h
    const masks = results.map(({ bbox, ...r }) => ({ ...r, segmentation: rectMask(bbox!) }));
    const segm = evaluateCoco(gt, masks, { iouType: 'segm' });
    assert.deepEqual(segm.stats, boxes.stats);
    assert.ok(objs.some((o) => o.crowd), 'the scene set has a crowd region');
  });

  test('APl and ARl are -1 at 128 px with COCO ranges; an explicit large range makes them numbers', () => {
    // objects up to 0.6 of the side: at most 77² = 5929 px, below 96² = 9216
    const gt = dataset([{ box: [0, 0, 77, 77] }, { box: [80, 80, 20, 20] }]);
    const results = [det([0, 0, 77, 77], 0.9), det([80, 80, 20, 20], 0.8)];
    const coco = evaluateCoco(gt, results, { iouType: 'bbox' }).named;
    assert.equal(coco.APl, -1);
    assert.equal(coco.ARl, -1);
    assertNear(coco.APm!, 1);
    const scaled = evaluateCoco(gt, results, { iouType: 'bbox', areaRanges: { small: [0, 24 ** 2], medium: [24 ** 2, 48 ** 2], large: [48 ** 2, 1e10] } }).named;
    assertNear(scaled.APl!, 1);
    assertNear(scaled.APs!, 1);
    assert.equal(scaled.APm, -1);
  });

  test('area bounds are inclusive: an object of exactly 32² px is both small and medium', () => {
    const s = evaluateCoco(dataset([{ box: [10, 10, 32, 32] }]), [det([10, 10, 32, 32], 0.9)], { iouType: 'bbox' }).named;
    assertNear(s.APs!, 1);
    assertNear(s.APm!, 1);
  });

  test('useCats false pools the categories: a detection of the wrong class still matches', () => {
    const gt = dataset([{ box: A, cat: 1 }]);
    assert.equal(evaluateCoco(gt, [det(A, 0.9, 1, 2)], { iouType: 'bbox' }).named.AP, 0);
    const pooled = evaluateCoco(gt, [det(A, 0.9, 1, 2)], { iouType: 'bbox', useCats: false });
    assertNear(pooled.named.AP!, 1);
    assert.deepEqual(pooled.perCategory, []);
  });

  test('a ground truth with id 0 is matched but read as unmatched, as in pycocotools (matches are stored as ids, 0 = none)', () => {
    const gt = dataset([{ box: A }]);
    gt.annotations[0]!.id = 0;
    // the detection takes the ground truth (no one else can) yet counts as a false positive
    assert.equal(evaluateCoco(gt, [det(A, 0.9), det(A, 0.8)], { iouType: 'bbox' }).named.AP, 0);
  });

  test('per-category AP: one perfect, one at half recall, one without ground truth (-1)', () => {
    const gt = dataset([{ box: A, cat: 1 }, { box: A, cat: 2 }, { box: FAR, cat: 2 }], [1], [1, 2, 3]);
    const s = evaluateCoco(gt, [det(A, 0.9, 1, 1), det(A, 0.8, 1, 2), det(FAR, 0.7, 1, 3)], { iouType: 'bbox' });
    assert.deepEqual(
      s.perCategory.map((c) => [c.categoryId, c.name]),
      [[1, 'class1'], [2, 'class2'], [3, 'class3']],
    );
    assertNear(s.perCategory[0]!.ap, 1);
    assertNear(s.perCategory[1]!.ap, HALF);
    assert.equal(s.perCategory[2]!.ap, -1);
    assertNear(s.stats[0]!, (1 + HALF) / 2, 'AP is the mean over the categories with ground truth');
  });

  test('catIds and maxDets overrides: AR with one detection per image', () => {
    const gt = dataset([{ box: A }, { box: FAR, cat: 2 }]);
    const results = [det(FAR, 0.95), det(A, 0.9), det(FAR, 0.9, 1, 2)];
    assertNear(evaluateCoco(gt, results, { iouType: 'bbox', catIds: [2] }).named.AP!, 1);
    const s = evaluateCoco(gt, results, { iouType: 'bbox', maxDets: [1, 2, 100] }).named;
    assert.equal(s.AR1, 0.5, 'category 1 keeps its false positive only');
    assert.throws(() => evaluateCoco(gt, results, { iouType: 'bbox', catIds: [7] }), /category ids 7 not in the ground truth/);
  });
});

describe('constants, IoU and OKS', () => {
  test("numpy's linspace values: iouThrs[8] = 0.8999999999999999, recThrs[57] = 0.5700000000000001", () => {
    const p = defaultParams('bbox');
    assert.equal(p.iouThrs[8], 0.8999999999999999);
    assert.equal(p.iouThrs[5], 0.75);
    assert.equal(p.iouThrs[9], 0.95);
    assert.equal(p.recThrs[57], 0.5700000000000001);
    assert.equal(p.recThrs.length, 101);
    const kp = defaultParams('keypoints');
    assert.deepEqual(kp.maxDets, [20]);
    assert.deepEqual(kp.areaRngLbl, ['all', 'medium', 'large']);
    assert.equal(kp.kptSigmas!.length, 17);
    assert.equal(kp.kptSigmas![0], 0.26 / 10);
  });

  test('mask IoU of T13\'s pair is 0.75, and 1 when the ground truth is a crowd', () => {
    const g = parseRle(rectMask(A), 'gt');
    const d = parseRle(rectMask([10, 10, 40, 30]), 'dt');
    assert.equal(rleIou(d, g, false), 0.75);
    assert.equal(rleIou(d, g, true), 1);
    assert.throws(() => rleIou(d, { ...g, height: 64, width: 256 }, false), /64x256/);
  });

  test('mask area, box and IoU on runs equal the bitmap ones on random blobs', () => {
    const r = new Mulberry32(9);
    const blob = (): Uint8Array => {
      const m = new Uint8Array(SIZE * SIZE);
      const [cx, cy, rx, ry] = [r.next() * SIZE, r.next() * SIZE, 3 + r.next() * 40, 3 + r.next() * 40];
      for (let y = 0; y < SIZE; y++) for (let x = 0; x < SIZE; x++) m[y * SIZE + x] = Number(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1 || r.next() < 0.01);
      return m;
    };
    for (let trial = 0; trial < 30; trial++) {
      const [a, b] = [blob(), blob()];
      let inter = 0;
      let union = 0;
      let areaA = 0;
      for (let i = 0; i < a.length; i++) (inter += a[i]! & b[i]!), (union += a[i]! | b[i]!), (areaA += a[i]!);
      const ra = parseRle(encodeRle(a, SIZE, SIZE), 'a');
      const rb = parseRle(encodeRle(b, SIZE, SIZE), 'b');
      assert.equal(ra.area, areaA);
      assert.deepEqual(ra.box, maskBox(a, SIZE, SIZE) ?? [0, 0, 0, 0]);
      assert.equal(rleIou(ra, rb, false), inter === 0 ? 0 : inter / union);
      assert.equal(rleIou(ra, rb, true), inter === 0 ? 0 : inter / areaA);
    }
  });

  test('a run wrapping from one column into the next spans every row of the box', () => {
    const m = new Uint8Array(SIZE * SIZE);
    for (let y = 120; y < SIZE; y++) m[y * SIZE] = 1;
    for (let y = 0; y < 4; y++) m[y * SIZE + 1] = 1;
    assert.deepEqual(parseRle(encodeRle(m, SIZE, SIZE), 'm').box, [0, 0, 2, 128]);
  });

  test('OKS with no labelled keypoint: distance to the ground-truth box doubled on each side', () => {
    const gt = { keypoints: [0, 0, 0, 0, 0, 0], bbox: [10, 10, 20, 20], area: 400 };
    // box [10, 10, 20, 20] doubled: x and y in [-10, 50]. (60, 20) is 10 px right of it, (0, 0) inside
    const [oks] = keypointOks([[60, 20, 1, 0, 0, 1]], [gt], [0.1, 0.1]);
    const e = 100 / 0.04 / (400 + 2.220446049250313e-16) / 2;
    assert.ok(Math.abs(oks! - (Math.exp(-e) + 1) / 2) < 1e-15, `OKS ${oks}`);
  });

  test('keypoints need sigmas for other than 17 points; their count must match', () => {
    const gt = dataset([{ box: A, keypoints: [20, 20, 2, 30, 30, 2] }]);
    const results = [{ image_id: 1, category_id: 1, score: 0.9, keypoints: [20, 20, 1, 30, 30, 1] }];
    assert.throws(() => evaluateCoco(gt, results, { iouType: 'keypoints' }), /2 keypoints per instance; give their OKS sigmas/);
    assert.throws(() => evaluateCoco(gt, results, { iouType: 'keypoints', kptSigmas: [0.1] }), /1 keypoint sigmas for 2 keypoints/);
    assertNear(evaluateCoco(gt, results, { iouType: 'keypoints', kptSigmas: [0.1, 0.1] }).named.AP50!, 1);
  });
});

describe('formatCocoSummary', () => {
  test("pycocotools' summarize() lines, -1 included", () => {
    const s = evaluateCoco(dataset([{ box: A }]), [det(FAR, 0.9), det(A, 0.8)], { iouType: 'bbox' });
    const lines = formatCocoSummary(s).split('\n');
    assert.equal(lines.length, 12);
    assert.equal(lines[0], ' Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.500');
    assert.equal(lines[1], ' Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = 0.500');
    assert.equal(lines[3], ' Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = -1.000');
    assert.equal(lines[6], ' Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 0.000');
    assert.equal(lines[10], ' Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ] = 1.000');
  });

  test("Python's rounding: an exact tie rounds to even (0.0625 -> 0.062, 0.1875 -> 0.188)", () => {
    const s = evaluateCoco(dataset([{ box: A }]), [det(A, 0.9)], { iouType: 'bbox' });
    s.stats = [0.0625, 0.1875, 0.0005, -1, 0.12345, 1, 0, 0, 0, 0, 0, 0];
    const values = formatCocoSummary(s).split('\n').map((l) => l.split(' = ')[1]);
    assert.deepEqual(values.slice(0, 6), ['0.062', '0.188', '0.001', '-1.000', '0.123', '1.000']);
  });

  test('keypoints: ten lines at maxDets 20', () => {
    const gt = dataset([{ box: A, keypoints: [20, 20, 2, 30, 30, 2] }]);
    const s = evaluateCoco(gt, [{ image_id: 1, category_id: 1, score: 0.9, keypoints: [20, 20, 1, 30, 30, 1] }], { iouType: 'keypoints', kptSigmas: [0.1, 0.1] });
    const lines = formatCocoSummary(s).split('\n');
    assert.equal(lines.length, 10);
    assert.equal(lines[3], ' Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets= 20 ] = 1.000');
    assert.deepEqual(Object.keys(s.named), ['AP', 'AP50', 'AP75', 'APm', 'APl', 'AR', 'AR50', 'AR75', 'ARm', 'ARl']);
  });
});

describe('loadResults', () => {
  const gt = dataset([{ box: A, mask: rectMask(A) }]);

  test('ids 1..n in order; areas: box w*h, else the mask area and box', () => {
    const boxes = loadResults(gt, [det([0, 0, 10, 20], 0.5), det(A, 0.4)], 'bbox').detections;
    assert.deepEqual(boxes.map((d) => [d.id, d.area, d.iscrowd]), [[1, 200, 0], [2, 1600, 0]]);
    const masks = loadResults(gt, [{ image_id: 1, category_id: 1, score: 0.5, segmentation: rectMask([5, 6, 7, 8]) }], 'segm').detections;
    assert.deepEqual([masks[0]!.area, masks[0]!.bbox], [56, [5, 6, 7, 8]]);
    // a mask result that carries a box is read as a box result: the box's area (why detectron2 drops it)
    const boxed = loadResults(gt, [{ image_id: 1, category_id: 1, score: 0.5, segmentation: rectMask([5, 6, 7, 8]), bbox: [5, 6, 10, 10] }], 'segm');
    assert.equal(boxed.detections[0]!.area, 100);
    const kps = loadResults(gt, [{ image_id: 1, category_id: 1, score: 0.5, keypoints: [10, 20, 2, 30, 25, 0] }], 'keypoints').detections;
    assert.deepEqual([kps[0]!.area, kps[0]!.bbox], [100, [10, 20, 20, 5]]);
  });

  const fails = (results: unknown, iouType: 'bbox' | 'segm' | 'keypoints', pattern: RegExp): void =>
    assert.throws(() => loadResults(gt, results, iouType, 'dets.json'), pattern);

  test('errors name the file, the index and the field', () => {
    fails({ image_id: 1 }, 'bbox', /^Error: dets\.json: results must be a JSON array/);
    fails([det(A, 0.9), det(A, 0.8, 7)], 'bbox', /dets\.json: result \[1\]: image_id 7 is not an image of the ground truth/);
    fails([det(A, 0.9, 1, 5)], 'bbox', /dets\.json: result \[0\]: category_id 5 is not a category of the ground truth \(1, 2\)/);
    fails([det(A, 0.9), { image_id: 1, category_id: 1, bbox: A }], 'bbox', /dets\.json: result \[1\]: 'score' must be a number, got nothing \(missing\)/);
    fails([{ ...det(A, 0.9), score: '0.9' }], 'bbox', /result \[0\]: 'score' must be a number, got "0.9"/);
    fails([det(A, 0.9)], 'segm', /dets\.json: result \[0\]: no 'segmentation', which segm evaluation compares \(the result has image_id, category_id, bbox, score\)/);
    fails([{ ...det(A, 0.9), bbox: [1, 2, 3] }], 'bbox', /result \[0\]: 'bbox' must be 4 numbers, got \[1,2,3\]/);
    const small = encodeRle(new Uint8Array(64 * 64), 64, 64);
    fails([{ image_id: 1, category_id: 1, score: 1, segmentation: small }], 'segm', /result \[0\]: 'segmentation' is 64x64, image 1 is 128x128/);
    fails([{ image_id: 1, category_id: 1, score: 1, keypoints: [1, 2, 3, 4] }], 'keypoints', /result \[0\]: 'keypoints' has 4 numbers, not a multiple of 3/);
  });
});

describe('selfsup coco-eval', () => {
  const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'selfsup-coco-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, content: unknown): string => {
    const path = join(dir, name);
    writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
    return path;
  };
  const selfsup = (...args: string[]) => spawnSync(process.execPath, [MAIN, 'coco-eval', ...args], { encoding: 'utf8', timeout: 60_000 });
  const gtPath = file('gt.json', dataset([{ box: A }, { box: FAR, cat: 2 }]));
  const resPath = file('res.json', [det(A, 0.9), det(FAR, 0.8, 1, 2), det([0, 0, 5, 5], 0.95)]);

  test('prints the 12 summary lines', () => {
    const r = selfsup(gtPath, resPath, '--iou-type', 'bbox');
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 12);
    assert.equal(lines[0], ' Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.750');
    assert.match(lines[11]!, /^ Average Recall {5}\(AR\) @\[ IoU=0\.50:0\.95 \| area= large \| maxDets=100 \] = -1\.000$/);
  });

  test('--json: the 12 numbers by name and perCategory', () => {
    const r = selfsup(gtPath, resPath, '--iou-type', 'bbox', '--json');
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.deepEqual(Object.keys(out), ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl', 'perCategory']);
    assert.ok(Math.abs((out.AP as number) - 0.75) < 1e-12, 'category 1: FP then TP (0.5), category 2: 1');
    assert.deepEqual((out.perCategory as { categoryId: number }[]).map((c) => c.categoryId), [1, 2]);
  });

  test('bad files exit 1 with a message naming the file', () => {
    const cases: [string[], RegExp][] = [
      [[file('broken.json', '{"images": ['), resPath], /selfsup: .*broken\.json: not valid JSON/],
      [[join(dir, 'missing.json'), resPath], /selfsup: cannot read the ground-truth file .*missing\.json/],
      [[file('nococo.json', { images: [], categories: [] }), resPath], /selfsup: .*nococo\.json: not a COCO dataset: 'annotations' is missing/],
      [[gtPath, file('unknown.json', [det(A, 0.9, 3)])], /selfsup: .*unknown\.json: result \[0\]: image_id 3 is not an image/],
    ];
    for (const [args, pattern] of cases) {
      const r = selfsup(...args, '--iou-type', 'bbox');
      assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, pattern);
      assert.equal(r.stdout, '');
    }
    const bad = selfsup(gtPath, resPath, '--iou-type', 'mask');
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /Allowed choices are bbox, segm, keypoints/);
  });
});
