// COCO detection, instance-segmentation and keypoint evaluation: a port of
// the semantics of pycocotools' COCOeval (cocoapi PythonAPI/pycocotools/
// cocoeval.py; loadRes in coco.py; IoUs in common/maskApi.c, here
// mask_iou.ts), so numbers from this file can stand next to published COCO
// numbers. docs/research detection_transfer.md §4.1 lists the rules kept;
// each quirk below is pycocotools' own and is commented where it is kept.
//
//   loadResults   results list -> detections with ids, areas and boxes (loadRes)
//   prepare       ground truth and detections grouped by (image, category)
//   cellIous      per group: detections by score, IoU / OKS matrix (computeIoU, computeOks)
//   evaluateImage per category, area range, image: greedy matching (evaluateImg)
//   accumulate    precision at 101 recall thresholds, recall (accumulate)
//   summarize     the 12 (keypoints: 10) headline numbers (summarize)
import type { CocoRle } from '../data/coco.js';
import { boxIou, parseRle, rleIou, shortJson, type Rle, type UncompressedRle } from './mask_iou.js';

export type IouType = 'bbox' | 'segm' | 'keypoints';
export const IOU_TYPES: readonly IouType[] = ['bbox', 'segm', 'keypoints'];
export type Box = [number, number, number, number];
export type AreaLabel = 'all' | 'small' | 'medium' | 'large';

/** One entry of a standard COCO results file. */
export interface CocoResult {
  image_id: number;
  category_id: number;
  score: number;
  bbox?: Box;
  segmentation?: CocoRle;
  keypoints?: number[];
}

/** What evaluation reads of a ground-truth annotation (src/data/coco.ts's CocoAnnotation is one). */
export interface CocoGtAnnotation {
  id: number;
  image_id: number;
  category_id: number;
  bbox: Box | number[];
  area: number;
  iscrowd?: number | boolean;
  segmentation?: CocoRle | UncompressedRle | number[][];
  keypoints?: number[];
  num_keypoints?: number;
}

/** The parts of a COCO dataset evaluation reads (src/data/coco.ts's CocoDataset is one). */
export interface CocoGroundTruth {
  images: { id: number; width?: number; height?: number }[];
  annotations: CocoGtAnnotation[];
  categories: { id: number; name?: string }[];
}

/** A result as loadRes leaves it: id 1..n in input order, its area, a box, iscrowd 0. */
export interface CocoDetection {
  id: number;
  image_id: number;
  category_id: number;
  score: number;
  area: number;
  bbox: Box;
  iscrowd: 0;
  segmentation?: CocoRle | UncompressedRle;
  keypoints?: number[];
}

export interface LoadedResults {
  iouType: IouType;
  source: string;
  detections: CocoDetection[];
}

export interface CocoEvalParams {
  iouType: IouType;
  /** Sorted, unique; every image (category) of the ground truth by default. */
  imgIds: number[];
  catIds: number[];
  iouThrs: number[];
  recThrs: number[];
  maxDets: number[];
  areaRng: [number, number][];
  areaRngLbl: AreaLabel[];
  /** false pools all categories per image (proposal recall); keypoints need true. */
  useCats: boolean;
  /** Per-keypoint OKS sigmas (keypoints only). */
  kptSigmas?: number[];
}

export interface CocoEvalOptions {
  /** Default: the loaded results' type, else 'bbox'. */
  iouType?: IouType;
  /** Replace some of the named area ranges ([min, max] in pixels, both inclusive). */
  areaRanges?: Partial<Record<AreaLabel, [number, number]>>;
  maxDets?: number[];
  imgIds?: number[];
  catIds?: number[];
  kptSigmas?: number[];
  useCats?: boolean;
  /** Names the results and the ground truth in error messages. */
  source?: string;
  gtSource?: string;
}

export interface CategoryAp {
  categoryId: number;
  name: string;
  /** AP at IoU .50:.95, area all, 100 detections (keypoints: 20); -1 when the category has no ground truth. */
  ap: number;
}

export interface CocoEvalSummary {
  iouType: IouType;
  params: CocoEvalParams;
  /** pycocotools' `stats`: 12 numbers (keypoints: 10), -1 where nothing was evaluated. */
  stats: number[];
  /**
   * The same by name: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl
   * (keypoints: AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl).
   */
  named: Record<string, number>;
  perCategory: CategoryAp[];
  /** [T, R, K, A, M]: IoU thresholds, recall thresholds, categories, area ranges, maxDets. */
  counts: [number, number, number, number, number];
  /** Row-major [T, R, K, A, M], -1 where a category has no ground truth. */
  precision: Float64Array;
  /** Row-major [T, K, A, M]. */
  recall: Float64Array;
}

/** COCO's 17 person keypoints (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles). */
export const COCO_PERSON_SIGMAS: readonly number[] = [
  0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89,
].map((s) => s / 10);

/** np.spacing(1), pycocotools' guard against 0/0. */
const EPS = 2.220446049250313e-16;

/**
 * numpy's linspace, value for value: start + i * step, the last set to stop.
 * summarize() picks AP50/AP75 by exact equality with these, and
 * iouThrs[8] = 0.8999999999999999, not 0.9.
 */
function linspace(start: number, stop: number, num: number): number[] {
  const step = (stop - start) / (num - 1);
  const out = Array.from({ length: num }, (_, i) => i * step + start);
  out[num - 1] = stop;
  return out;
}

/** pycocotools' Params.setDetParams / setKpParams. */
export function defaultParams(iouType: IouType): CocoEvalParams {
  const common = { iouType, imgIds: [], catIds: [], iouThrs: linspace(0.5, 0.95, 10), recThrs: linspace(0, 1, 101), useCats: true };
  if (iouType === 'keypoints') {
    return {
      ...common,
      maxDets: [20],
      areaRng: [[0, 1e10], [32 ** 2, 96 ** 2], [96 ** 2, 1e10]],
      areaRngLbl: ['all', 'medium', 'large'],
      kptSigmas: [...COCO_PERSON_SIGMAS],
    };
  }
  return {
    ...common,
    maxDets: [1, 10, 100],
    areaRng: [[0, 1e10], [0, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e10]],
    areaRngLbl: ['all', 'small', 'medium', 'large'],
  };
}

// ---------------------------------------------------------------- validation

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function numberField(o: Record<string, unknown>, key: string, at: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new Error(`${at}: '${key}' must be a number, got ${v === undefined ? 'nothing (missing)' : shortJson(v)}`);
  }
  return v;
}

function numberArray(v: unknown, key: string, at: string, length?: number): number[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'number' && Number.isFinite(x)) || (length !== undefined && v.length !== length)) {
    const want = length === undefined ? 'an array of numbers' : `${length} numbers`;
    throw new Error(`${at}: '${key}' must be ${want}, got ${v === undefined ? 'nothing (missing)' : shortJson(v)}`);
  }
  return v as number[];
}

function checkKeypoints(v: unknown, at: string, perInstance: number | null): number[] {
  const kp = numberArray(v, 'keypoints', at);
  if (kp.length % 3 !== 0) throw new Error(`${at}: 'keypoints' has ${kp.length} numbers, not a multiple of 3 (x, y, v per keypoint)`);
  if (perInstance !== null && kp.length !== 3 * perInstance) {
    throw new Error(`${at}: 'keypoints' has ${kp.length / 3} keypoints, the ground truth ${perInstance}`);
  }
  return kp;
}

function checkMaskSize(mask: Rle, image: { id: number; width?: number; height?: number }, at: string): void {
  if (mask.height !== image.height || mask.width !== image.width) {
    throw new Error(`${at}: 'segmentation' is ${mask.height}x${mask.width}, image ${image.id} is ${image.height}x${image.width}`);
  }
}

/** Keypoints per instance in the ground truth, or null when no annotation has any. */
function gtKeypointCount(gt: CocoGroundTruth): number | null {
  const a = gt.annotations.find((x) => Array.isArray(x.keypoints));
  return a ? a.keypoints!.length / 3 : null;
}

/**
 * Checks that `data` is a COCO dataset that `iouType` evaluation can read:
 * images, annotations and categories arrays; annotations of known images and
 * categories with an id, a box and an area; RLE masks of their image's size
 * (segm); the same number of keypoints in each (keypoints). `source` (the
 * file) starts every message.
 */
export function checkGroundTruth(data: unknown, source: string, iouType: IouType): CocoGroundTruth {
  if (!isObject(data)) throw new Error(`${source}: not a COCO dataset (an object with images, annotations and categories)`);
  for (const key of ['images', 'annotations', 'categories']) {
    if (!Array.isArray(data[key])) throw new Error(`${source}: not a COCO dataset: '${key}' is missing or not an array`);
  }
  const gt = data as unknown as CocoGroundTruth;
  const images = new Map<number, CocoGroundTruth['images'][number]>();
  gt.images.forEach((im, i) => {
    const at = `${source}: images[${i}]`;
    if (!isObject(im)) throw new Error(`${at} is not an object`);
    const id = numberField(im, 'id', at);
    if (images.has(id)) throw new Error(`${at}: image id ${id} appears twice`);
    if (iouType === 'segm') (numberField(im, 'width', at), numberField(im, 'height', at));
    images.set(id, im);
  });
  const categories = new Set<number>();
  gt.categories.forEach((c, i) => {
    const at = `${source}: categories[${i}]`;
    if (!isObject(c)) throw new Error(`${at} is not an object`);
    const id = numberField(c, 'id', at);
    if (categories.has(id)) throw new Error(`${at}: category id ${id} appears twice`);
    categories.add(id);
  });
  const ids = new Set<number>();
  const perInstance = iouType === 'keypoints' ? gtKeypointCount(gt) : null;
  gt.annotations.forEach((a, i) => {
    const at = `${source}: annotations[${i}]`;
    if (!isObject(a)) throw new Error(`${at} is not an object`);
    const id = numberField(a, 'id', at);
    // pycocotools indexes annotations by id, so a repeated id would silently evaluate one of them twice
    if (ids.has(id)) throw new Error(`${at}: annotation id ${id} appears twice`);
    ids.add(id);
    const imageId = numberField(a, 'image_id', at);
    const image = images.get(imageId);
    if (!image) throw new Error(`${at}: image_id ${imageId} is not in 'images'`);
    const categoryId = numberField(a, 'category_id', at);
    if (!categories.has(categoryId)) throw new Error(`${at}: category_id ${categoryId} is not in 'categories'`);
    numberArray(a.bbox, 'bbox', at, 4);
    numberField(a, 'area', at);
    if (a.iscrowd !== undefined && typeof a.iscrowd !== 'number' && typeof a.iscrowd !== 'boolean') {
      throw new Error(`${at}: 'iscrowd' must be 0 or 1, got ${shortJson(a.iscrowd)}`);
    }
    if (iouType === 'segm') checkMaskSize(parseRle(a.segmentation, `${at}: 'segmentation'`), image, at);
    if (iouType === 'keypoints') {
      checkKeypoints(a.keypoints, at, perInstance);
      if (a.num_keypoints !== undefined) numberField(a, 'num_keypoints', at);
    }
  });
  return gt;
}

const hasBox = (r: Record<string, unknown>): boolean => r.bbox !== undefined && !(Array.isArray(r.bbox) && r.bbox.length === 0);

/** The field each IoU type compares. */
const NEEDS: Record<IouType, string> = { bbox: 'bbox', segm: 'segmentation', keypoints: 'keypoints' };

/**
 * A results list as pycocotools' loadRes reads it, checked first: ids 1..n in
 * input order and iscrowd 0; with a `bbox`, area = w * h; a mask without a
 * box gets the mask's area and box; keypoints without a box get the extent of
 * all their points (labelled or not) as box and area. As in loadRes, the
 * first result decides which reading applies to all: a segm result that
 * carries a box is scored with the box's area in the area ranges (detectron2
 * drops `bbox` from mask results for this reason).
 *
 * Every error names `source` (the file), the result's index and the field:
 * unknown image or category ids, missing or non-numeric fields, results that
 * lack what `iouType` compares, masks not of their image's size, keypoints
 * not in triples or not as many as the ground truth's.
 */
export function loadResults(gt: CocoGroundTruth, results: unknown, iouType: IouType, source = 'results'): LoadedResults {
  if (!Array.isArray(results)) {
    throw new Error(`${source}: results must be a JSON array of detections, got ${results === null ? 'null' : typeof results}`);
  }
  const images = new Map(gt.images.map((im) => [im.id, im]));
  const categories = new Set(gt.categories.map((c) => c.id));
  const perInstance = iouType === 'keypoints' ? gtKeypointCount(gt) : null;
  const first = results[0];
  const reading = !isObject(first) || hasBox(first) ? 'bbox' : first.segmentation !== undefined ? 'segm' : 'keypoints';
  const detections = results.map((r: unknown, i): CocoDetection => {
    const at = `${source}: result [${i}]`;
    if (!isObject(r)) throw new Error(`${at} is not an object, got ${shortJson(r)}`);
    const imageId = numberField(r, 'image_id', at);
    const image = images.get(imageId);
    if (!image) throw new Error(`${at}: image_id ${imageId} is not an image of the ground truth`);
    const categoryId = numberField(r, 'category_id', at);
    if (!categories.has(categoryId)) {
      throw new Error(`${at}: category_id ${categoryId} is not a category of the ground truth (${[...categories].join(', ')})`);
    }
    const score = numberField(r, 'score', at);
    const need = NEEDS[iouType];
    const usable = iouType === 'bbox' ? hasBox(r) || r.segmentation !== undefined : r[need] !== undefined;
    if (!usable) {
      throw new Error(`${at}: no '${need}', which ${iouType} evaluation compares (the result has ${Object.keys(r).join(', ')})`);
    }
    if (reading === 'bbox' && !hasBox(r)) throw new Error(`${at}: no 'bbox', while result [0] has one (one reading applies to all results)`);
    const box = hasBox(r) ? (numberArray(r.bbox, 'bbox', at, 4) as Box) : undefined;
    let mask: Rle | undefined;
    if (r.segmentation !== undefined && (iouType === 'segm' || reading === 'segm')) {
      mask = parseRle(r.segmentation, `${at}: 'segmentation'`);
      checkMaskSize(mask, image, at);
    }
    const keypoints = r.keypoints !== undefined || iouType === 'keypoints' ? checkKeypoints(r.keypoints, at, perInstance) : undefined;
    const det: CocoDetection = { id: i + 1, image_id: imageId, category_id: categoryId, score, area: 0, bbox: [0, 0, 0, 0], iscrowd: 0 };
    if (reading === 'bbox') {
      det.bbox = box!;
      det.area = box![2] * box![3];
    } else if (reading === 'segm') {
      if (!mask) throw new Error(`${at}: no 'segmentation', while result [0] has one (one reading applies to all results)`);
      det.area = mask.area;
      det.bbox = box ?? mask.box;
    } else {
      if (!keypoints) throw new Error(`${at}: no 'keypoints', while result [0] has them (one reading applies to all results)`);
      const xs = keypoints.filter((_, k) => k % 3 === 0);
      const ys = keypoints.filter((_, k) => k % 3 === 1);
      const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
      det.area = (x1 - x0) * (y1 - y0);
      det.bbox = [x0, y0, x1 - x0, y1 - y0];
    }
    if (r.segmentation !== undefined) det.segmentation = r.segmentation as CocoRle;
    if (keypoints) det.keypoints = keypoints;
    return det;
  });
  return { iouType, source, detections };
}

// ---------------------------------------------------------------- evaluation

interface GtItem {
  id: number;
  area: number;
  crowd: boolean;
  /** iscrowd, or (keypoints) no labelled keypoints: never counted, may absorb detections. */
  ignore: boolean;
  bbox: readonly number[];
  mask?: Rle;
  keypoints?: readonly number[];
}

interface DtItem {
  id: number;
  score: number;
  area: number;
  bbox: readonly number[];
  mask?: Rle;
  keypoints?: readonly number[];
}

/** One (image, category): detections by descending score, cut to maxDets[-1]; IoUs row-major [D, G], null when either side is empty. */
interface Cell {
  gts: GtItem[];
  dts: DtItem[];
  ious: Float64Array | null;
}

/** evaluateImg's record. Flags are row-major [T, D]. */
interface ImageEval {
  dtScores: number[];
  /** Matched to a ground truth whose id is not 0 (pycocotools stores the matched id, 0 meaning none). */
  dtMatched: Uint8Array;
  dtIgnore: Uint8Array;
  gtIgnore: Uint8Array;
}

/** Indices of `items` by descending score; Array.prototype.sort is stable, like numpy's mergesort. */
function byScore<T extends { score: number }>(items: readonly T[]): T[] {
  return items
    .map((_, i) => i)
    .sort((a, b) => items[b]!.score - items[a]!.score)
    .map((i) => items[i]!);
}

/** computeOks: object keypoint similarity of each detection with each ground truth, row-major [D, G]. */
export function keypointOks(
  dts: readonly (readonly number[])[],
  gts: readonly { keypoints: readonly number[]; bbox: readonly number[]; area: number }[],
  sigmas: readonly number[],
): Float64Array {
  const k = sigmas.length;
  const vars = sigmas.map((s) => (s * 2) ** 2);
  const out = new Float64Array(dts.length * gts.length);
  gts.forEach((g, j) => {
    const kg = g.keypoints;
    let labelled = 0;
    for (let n = 0; n < k; n++) if (kg[3 * n + 2]! > 0) labelled++;
    // a ground truth with no labelled keypoint: distance to its box doubled on each side
    const [bx, by, bw, bh] = g.bbox as [number, number, number, number];
    const [x0, x1, y0, y1] = [bx - bw, bx + bw * 2, by - bh, by + bh * 2];
    dts.forEach((kd, i) => {
      let sum = 0;
      let count = 0;
      for (let n = 0; n < k; n++) {
        const xd = kd[3 * n]!;
        const yd = kd[3 * n + 1]!;
        let dx: number;
        let dy: number;
        if (labelled > 0) {
          if (!(kg[3 * n + 2]! > 0)) continue;
          dx = xd - kg[3 * n]!;
          dy = yd - kg[3 * n + 1]!;
        } else {
          dx = Math.max(0, x0 - xd) + Math.max(0, xd - x1);
          dy = Math.max(0, y0 - yd) + Math.max(0, yd - y1);
        }
        const e = (dx ** 2 + dy ** 2) / vars[n]! / (g.area + EPS) / 2;
        sum += Math.exp(-e);
        count++;
      }
      out[i * gts.length + j] = sum / count;
    });
  });
  return out;
}

function cellIous(gts: GtItem[], dts: DtItem[], p: CocoEvalParams): Float64Array | null {
  const G = gts.length;
  const D = dts.length;
  if (G === 0 || D === 0) return null;
  if (p.iouType === 'keypoints') {
    return keypointOks(
      dts.map((d) => d.keypoints!),
      gts.map((g) => ({ keypoints: g.keypoints!, bbox: g.bbox, area: g.area })),
      p.kptSigmas!,
    );
  }
  const ious = new Float64Array(D * G);
  for (let d = 0; d < D; d++) {
    for (let g = 0; g < G; g++) {
      const gt = gts[g]!;
      ious[d * G + g] = p.iouType === 'segm' ? rleIou(dts[d]!.mask!, gt.mask!, gt.crowd) : boxIou(dts[d]!.bbox, gt.bbox, gt.crowd);
    }
  }
  return ious;
}

/** _prepare and computeIoU: one cell per (category, image) in the params' order; categories pooled when !useCats. */
function prepare(gt: CocoGroundTruth, detections: readonly CocoDetection[], p: CocoEvalParams): Cell[][] {
  const imgSet = new Set(p.imgIds);
  const catSet = new Set(p.catIds);
  const key = (img: number, cat: number): string => `${img} ${cat}`;
  const gtGroups = new Map<string, GtItem[]>();
  const dtGroups = new Map<string, DtItem[]>();
  const push = <T>(groups: Map<string, T[]>, k: string, item: T): void => void (groups.get(k) ?? groups.set(k, []).get(k)!).push(item);
  gt.annotations.forEach((a, i) => {
    if (!imgSet.has(a.image_id) || !catSet.has(a.category_id)) return;
    const crowd = Boolean(a.iscrowd);
    const item: GtItem = { id: a.id, area: a.area, crowd, ignore: crowd, bbox: a.bbox };
    if (p.iouType === 'segm') item.mask = parseRle(a.segmentation, `ground truth annotations[${i}]: 'segmentation'`);
    if (p.iouType === 'keypoints') {
      item.keypoints = a.keypoints!;
      // pycocotools reads num_keypoints; when a file leaves it out, count the labelled points
      const labelled = a.num_keypoints ?? a.keypoints!.filter((v, k) => k % 3 === 2 && v > 0).length;
      item.ignore = crowd || labelled === 0;
    }
    push(gtGroups, key(a.image_id, a.category_id), item);
  });
  for (const d of detections) {
    if (!imgSet.has(d.image_id) || !catSet.has(d.category_id)) continue;
    const item: DtItem = { id: d.id, score: d.score, area: d.area, bbox: d.bbox };
    if (p.iouType === 'segm') item.mask = parseRle(d.segmentation, `result [${d.id - 1}]: 'segmentation'`);
    if (p.iouType === 'keypoints') item.keypoints = d.keypoints!;
    push(dtGroups, key(d.image_id, d.category_id), item);
  }
  const maxDet = p.maxDets[p.maxDets.length - 1]!;
  return (p.useCats ? p.catIds : [-1]).map((cat) =>
    p.imgIds.map((img) => {
      // pooled categories are concatenated in category order, as computeIoU does
      const cats = p.useCats ? [cat] : p.catIds;
      const gts = cats.flatMap((c) => gtGroups.get(key(img, c)) ?? []);
      const dts = byScore(cats.flatMap((c) => dtGroups.get(key(img, c)) ?? [])).slice(0, maxDet);
      return { gts, dts, ious: cellIous(gts, dts, p) };
    }),
  );
}

/** evaluateImg: greedy matching of one cell's detections, independently at each IoU threshold. */
function evaluateImage(cell: Cell, [lo, hi]: [number, number], maxDet: number, iouThrs: readonly number[]): ImageEval | null {
  if (cell.gts.length === 0 && cell.dts.length === 0) return null;
  const outside = (area: number): boolean => area < lo || area > hi;
  const isIgnored = (g: GtItem): boolean => g.ignore || outside(g.area);
  // ground truth to ignore sorts last (stably), so a regular match is always found first
  const order = cell.gts.map((_, i) => i).sort((a, b) => Number(isIgnored(cell.gts[a]!)) - Number(isIgnored(cell.gts[b]!)));
  const gts = order.map((i) => cell.gts[i]!);
  const gtIgnore = Uint8Array.from(gts, (g) => Number(isIgnored(g)));
  const dts = cell.dts.slice(0, maxDet);
  const [T, G, D, G0] = [iouThrs.length, gts.length, dts.length, cell.gts.length];
  const gtTaken = new Uint8Array(T * G);
  const dtMatchId = new Float64Array(T * D);
  const dtIgnore = new Uint8Array(T * D);
  const ious = cell.ious;
  if (ious) {
    for (let t = 0; t < T; t++) {
      for (let d = 0; d < D; d++) {
        let best = Math.min(iouThrs[t]!, 1 - 1e-10);
        let m = -1;
        for (let g = 0; g < G; g++) {
          // a matched regular ground truth is taken; a crowd region absorbs any number of detections
          if (gtTaken[t * G + g] && !gts[g]!.crowd) continue;
          // once a regular ground truth matched, the ignored ones (all after it) are not considered
          if (m > -1 && !gtIgnore[m] && gtIgnore[g]) break;
          const iou = ious[d * G0 + order[g]!]!;
          // `<`, not `<=`: an equal IoU replaces the match, so the last of equal ground truths wins
          if (iou < best) continue;
          best = iou;
          m = g;
        }
        if (m === -1) continue;
        dtIgnore[t * D + d] = gtIgnore[m]!;
        dtMatchId[t * D + d] = gts[m]!.id;
        gtTaken[t * G + m] = 1;
      }
    }
  }
  const dtMatched = new Uint8Array(T * D);
  for (let t = 0; t < T; t++) {
    for (let d = 0; d < D; d++) {
      const j = t * D + d;
      dtMatched[j] = Number(dtMatchId[j] !== 0);
      // an unmatched detection of a size this range does not score is neither right nor wrong
      if (!dtMatched[j] && outside(dts[d]!.area)) dtIgnore[j] = 1;
    }
  }
  return { dtScores: dts.map((d) => d.score), dtMatched, dtIgnore, gtIgnore };
}

/** First index i with sorted[i] >= v (numpy searchsorted, side 'left'). */
function searchLeft(sorted: Float64Array, v: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** accumulate: precision [T, R, K, A, M] and recall [T, K, A, M], -1 where a category has no ground truth to count. */
function accumulate(evals: (ImageEval | null)[][][], p: CocoEvalParams) {
  const [T, R, K, A, M] = [p.iouThrs.length, p.recThrs.length, evals.length, p.areaRng.length, p.maxDets.length];
  const precision = new Float64Array(T * R * K * A * M).fill(-1);
  const recall = new Float64Array(T * K * A * M).fill(-1);
  for (let k = 0; k < K; k++) {
    for (let a = 0; a < A; a++) {
      const E = evals[k]![a]!.filter((e): e is ImageEval => e !== null);
      if (E.length === 0) continue;
      const npig = E.reduce((n, e) => n + e.gtIgnore.filter((g) => !g).length, 0);
      if (npig === 0) continue;
      for (let m = 0; m < M; m++) {
        const maxDet = p.maxDets[m]!;
        // every image's first maxDet detections, in image-id order, then one stable sort by score:
        // equal scores keep image order
        const rows: { score: number; e: ImageEval; d: number; D: number }[] = [];
        for (const e of E) {
          const D = e.dtScores.length;
          for (let d = 0; d < Math.min(maxDet, D); d++) rows.push({ score: e.dtScores[d]!, e, d, D });
        }
        const sorted = byScore(rows);
        const nd = sorted.length;
        for (let t = 0; t < T; t++) {
          const rc = new Float64Array(nd);
          const pr = new Float64Array(nd);
          let tp = 0;
          let fp = 0;
          sorted.forEach(({ e, d, D }, i) => {
            if (!e.dtIgnore[t * D + d]) {
              if (e.dtMatched[t * D + d]) tp++;
              else fp++;
            }
            rc[i] = tp / npig;
            pr[i] = tp / (fp + tp + EPS);
          });
          recall[((t * K + k) * A + a) * M + m] = nd ? rc[nd - 1]! : 0;
          // the precision envelope: best precision at this recall or any higher one
          for (let i = nd - 1; i > 0; i--) if (pr[i]! > pr[i - 1]!) pr[i - 1] = pr[i]!;
          // from the first recall threshold beyond the last recall reached on, precision
          // stays 0 (pycocotools' try/except around the lookup)
          let beyond = false;
          for (let r = 0; r < R; r++) {
            const i = searchLeft(rc, p.recThrs[r]!);
            beyond ||= i >= nd;
            precision[(((t * R + r) * K + k) * A + a) * M + m] = beyond ? 0 : pr[i]!;
          }
        }
      }
    }
  }
  return { precision, recall, counts: [T, R, K, A, M] as [number, number, number, number, number] };
}

// ---------------------------------------------------------------- summary

interface SummaryRow {
  name: string;
  ap: boolean;
  iouThr?: number;
  area: AreaLabel;
  maxDets: (p: CocoEvalParams) => number;
}

// pycocotools' first row passes no maxDets and so reads its default, 100,
// whatever params.maxDets holds; the others read maxDets[0..2].
const DET_ROWS: SummaryRow[] = [
  { name: 'AP', ap: true, area: 'all', maxDets: () => 100 },
  { name: 'AP50', ap: true, iouThr: 0.5, area: 'all', maxDets: (p) => p.maxDets[2]! },
  { name: 'AP75', ap: true, iouThr: 0.75, area: 'all', maxDets: (p) => p.maxDets[2]! },
  { name: 'APs', ap: true, area: 'small', maxDets: (p) => p.maxDets[2]! },
  { name: 'APm', ap: true, area: 'medium', maxDets: (p) => p.maxDets[2]! },
  { name: 'APl', ap: true, area: 'large', maxDets: (p) => p.maxDets[2]! },
  { name: 'AR1', ap: false, area: 'all', maxDets: (p) => p.maxDets[0]! },
  { name: 'AR10', ap: false, area: 'all', maxDets: (p) => p.maxDets[1]! },
  { name: 'AR100', ap: false, area: 'all', maxDets: (p) => p.maxDets[2]! },
  { name: 'ARs', ap: false, area: 'small', maxDets: (p) => p.maxDets[2]! },
  { name: 'ARm', ap: false, area: 'medium', maxDets: (p) => p.maxDets[2]! },
  { name: 'ARl', ap: false, area: 'large', maxDets: (p) => p.maxDets[2]! },
];

// _summarizeKps reads 20 detections in every row, whatever params.maxDets holds
const KP_ROWS: SummaryRow[] = [
  { name: 'AP', ap: true, area: 'all', maxDets: () => 20 },
  { name: 'AP50', ap: true, iouThr: 0.5, area: 'all', maxDets: () => 20 },
  { name: 'AP75', ap: true, iouThr: 0.75, area: 'all', maxDets: () => 20 },
  { name: 'APm', ap: true, area: 'medium', maxDets: () => 20 },
  { name: 'APl', ap: true, area: 'large', maxDets: () => 20 },
  { name: 'AR', ap: false, area: 'all', maxDets: () => 20 },
  { name: 'AR50', ap: false, iouThr: 0.5, area: 'all', maxDets: () => 20 },
  { name: 'AR75', ap: false, iouThr: 0.75, area: 'all', maxDets: () => 20 },
  { name: 'ARm', ap: false, area: 'medium', maxDets: () => 20 },
  { name: 'ARl', ap: false, area: 'large', maxDets: () => 20 },
];

const rowsFor = (iouType: IouType): SummaryRow[] => (iouType === 'keypoints' ? KP_ROWS : DET_ROWS);

/** _summarize: the mean of the selected entries that are not -1, or -1 when none is. */
function summarizeRow(row: SummaryRow, p: CocoEvalParams, acc: ReturnType<typeof accumulate>, cats?: number[]): number {
  const [, R, K, A, M] = acc.counts;
  // thresholds are picked by exact float equality, as np.where(iouThr == p.iouThrs) does
  const ts = p.iouThrs.flatMap((v, t) => (row.iouThr === undefined || v === row.iouThr ? [t] : []));
  const as = p.areaRngLbl.flatMap((l, a) => (l === row.area ? [a] : []));
  const ms = p.maxDets.flatMap((v, m) => (v === row.maxDets(p) ? [m] : []));
  const ks = cats ?? Array.from({ length: K }, (_, k) => k);
  let sum = 0;
  let n = 0;
  const add = (v: number): void => {
    if (v > -1) (sum += v), n++;
  };
  for (const t of ts) {
    for (const a of as) {
      for (const m of ms) {
        for (const k of ks) {
          if (row.ap) for (let r = 0; r < R; r++) add(acc.precision[(((t * R + r) * K + k) * A + a) * M + m]!);
          else add(acc.recall[((t * K + k) * A + a) * M + m]!);
        }
      }
    }
  }
  return n === 0 ? -1 : sum / n;
}

function resolveParams(gt: CocoGroundTruth, iouType: IouType, o: CocoEvalOptions): CocoEvalParams {
  const p = defaultParams(iouType);
  const unique = (ids: readonly number[]): number[] => [...new Set(ids)].sort((a, b) => a - b);
  const pick = (ids: number[] | undefined, known: number[], what: string): number[] => {
    if (ids === undefined) return unique(known);
    const unknown = ids.filter((id) => !known.includes(id));
    if (unknown.length > 0) throw new Error(`coco eval: ${what} ${unknown.join(', ')} not in the ground truth`);
    if (ids.length === 0) throw new Error(`coco eval: an empty ${what} list evaluates nothing`);
    return unique(ids);
  };
  p.imgIds = pick(o.imgIds, gt.images.map((im) => im.id), 'image ids');
  p.catIds = pick(o.catIds, gt.categories.map((c) => c.id), 'category ids');
  if (o.maxDets) {
    if (iouType !== 'keypoints' && o.maxDets.length !== 3) {
      throw new Error(`coco eval: maxDets needs 3 values (the summary's AR rows read each), got ${o.maxDets.length}`);
    }
    if (o.maxDets.length === 0 || !o.maxDets.every((m) => Number.isInteger(m) && m > 0)) {
      throw new Error(`coco eval: maxDets must be positive integers, got ${shortJson(o.maxDets)}`);
    }
    p.maxDets = [...o.maxDets].sort((a, b) => a - b);
  }
  for (const [label, range] of Object.entries(o.areaRanges ?? {}) as [AreaLabel, [number, number]][]) {
    const a = p.areaRngLbl.indexOf(label);
    if (a < 0) throw new Error(`coco eval: no area range '${label}' for ${iouType} (${p.areaRngLbl.join(', ')})`);
    p.areaRng[a] = [range[0], range[1]];
  }
  p.useCats = o.useCats ?? true;
  if (iouType === 'keypoints') {
    if (!p.useCats) throw new Error('coco eval: keypoint evaluation needs useCats (pycocotools compares nothing without it)');
    const k = gtKeypointCount(gt);
    if (o.kptSigmas) {
      if (k !== null && o.kptSigmas.length !== k) {
        throw new Error(`coco eval: ${o.kptSigmas.length} keypoint sigmas for ${k} keypoints per instance`);
      }
      if (!o.kptSigmas.every((s) => Number.isFinite(s) && s > 0)) {
        throw new Error(`coco eval: keypoint sigmas must be positive, got ${shortJson(o.kptSigmas)}`);
      }
      p.kptSigmas = [...o.kptSigmas];
    } else if (k !== null && k !== COCO_PERSON_SIGMAS.length) {
      throw new Error(
        `coco eval: the ground truth has ${k} keypoints per instance; give their OKS sigmas (kptSigmas, --kpt-sigmas): ` +
          "the defaults are for COCO's 17 person keypoints",
      );
    }
  } else if (o.kptSigmas) {
    throw new Error(`coco eval: kptSigmas apply to keypoint evaluation, not ${iouType}`);
  }
  return p;
}

/**
 * COCOeval's evaluate(), accumulate() and summarize() on `gt` and a results
 * list (raw, checked by loadResults, or already loaded).
 */
export function evaluateCoco(gt: CocoGroundTruth, results: readonly CocoResult[] | LoadedResults, options: CocoEvalOptions = {}): CocoEvalSummary {
  const iouType = options.iouType ?? (Array.isArray(results) ? 'bbox' : (results as LoadedResults).iouType);
  checkGroundTruth(gt, options.gtSource ?? 'ground truth', iouType);
  const loaded = Array.isArray(results) ? loadResults(gt, results, iouType, options.source) : (results as LoadedResults);
  if (loaded.iouType !== iouType) throw new Error(`${loaded.source}: results were loaded for ${loaded.iouType} evaluation, not ${iouType}`);
  const p = resolveParams(gt, iouType, options);
  const cells = prepare(gt, loaded.detections, p);
  const maxDet = p.maxDets[p.maxDets.length - 1]!;
  const evals = cells.map((byImage) => p.areaRng.map((range) => byImage.map((cell) => evaluateImage(cell, range, maxDet, p.iouThrs))));
  const acc = accumulate(evals, p);
  const rows = rowsFor(iouType);
  const stats = rows.map((row) => summarizeRow(row, p, acc));
  const names = new Map(gt.categories.map((c) => [c.id, c.name ?? String(c.id)]));
  const perCategory = p.useCats
    ? p.catIds.map((categoryId, k) => ({ categoryId, name: names.get(categoryId)!, ap: summarizeRow(rows[0]!, p, acc, [k]) }))
    : [];
  return {
    iouType,
    params: p,
    stats,
    named: Object.fromEntries(rows.map((row, i) => [row.name, stats[i]!])),
    perCategory,
    counts: acc.counts,
    precision: acc.precision,
    recall: acc.recall,
  };
}

/** Python's '{:0.Nf}': like toFixed, except that exact ties round to even. */
function pyFixed(x: number, digits: number): string {
  const exact = Math.abs(x).toFixed(100);
  const dot = exact.indexOf('.');
  const tail = exact.slice(dot + 1 + digits);
  const kept = exact.slice(0, dot + 1 + digits);
  if (/^50*$/.test(tail) && Number(kept[kept.length - 1]) % 2 === 0) return (x < 0 ? '-' : '') + kept.replace(/\.$/, '');
  return x.toFixed(digits);
}

/** The summary as pycocotools' summarize() prints it, one line per number. */
export function formatCocoSummary(summary: CocoEvalSummary, iouType: IouType = summary.iouType): string {
  const p = summary.params;
  return rowsFor(iouType)
    .map((row, i) => {
      const title = (row.ap ? 'Average Precision' : 'Average Recall').padEnd(18);
      const thresholds = `${pyFixed(p.iouThrs[0]!, 2)}:${pyFixed(p.iouThrs[p.iouThrs.length - 1]!, 2)}`;
      const iou = (row.iouThr === undefined ? thresholds : pyFixed(row.iouThr, 2)).padEnd(9);
      const area = row.area.padStart(6);
      const maxDets = String(row.maxDets(p)).padStart(3);
      const type = row.ap ? '(AP)' : '(AR)';
      return ` ${title} ${type} @[ IoU=${iou} | area=${area} | maxDets=${maxDets} ] = ${pyFixed(summary.stats[i]!, 3)}`;
    })
    .join('\n');
}
