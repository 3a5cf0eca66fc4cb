// The second stage of Mask R-CNN (detectron2's StandardROIHeads with the FPN
// box head and the mask-RCNN conv-upsample head): each proposal's features
// pooled by RoIAlign from the level its size belongs to, a 2-FC box head
// with a softmax classifier and class-specific box deltas, and a 4-conv mask
// head with 28x28 class-specific masks on the foreground proposals.
import * as tf from '../core/tf.js';
import { gatherRows } from '../backend/ops.js';
import type { Scalar, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import type { Mulberry32, Rng } from '../core/random.js';
import { roiAlign } from '../backend/roi_align.js';
import { l1LossSum, sigmoidCrossEntropySum, softmaxCrossEntropyMean } from '../losses/detection.js';
import { kaimingNormalFanOut, normal, xavierFanInUniform } from '../nn/init.js';
import { Conv2d, ConvTranspose2d, Linear } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import { BoxCoder, clipBoxes, pairwiseIou } from './boxes.js';
import type { Pyramid } from './fpn.js';
import { maskTargets } from './masks.js';
import { matchBoxes } from './matcher.js';
import { batchedNms } from './nms.js';
import { sampleBalanced } from './sampler.js';

export interface RoiHeadSettings {
  numClasses: number;
  batchPerImage: number;
  positiveFraction: number;
  /** A proposal of sqrt(area) = canonicalBox goes to P4 (detectron2: 224 at 800 px; ours scaled to the scenes). */
  canonicalBox: number;
  boxPool: number;
  maskPool: number;
  fcDim: number;
  scoreThreshold: number;
  nmsThreshold: number;
  detectionsPerImage: number;
}

/** The RoIs of a batch: boxes in input pixels and the image each belongs to. */
export interface Rois {
  boxes: Float32Array;
  image: Int32Array;
}

/** Per level k (P2..P5), floor(4 + log2(sqrt(area) / canonical)), clamped: detectron2's assign_boxes_to_levels. */
export function assignLevels(boxes: Float32Array, canonicalBox: number, levels = 4): Int32Array {
  const out = new Int32Array(boxes.length / 4);
  for (let i = 0; i < out.length; i++) {
    const area = (boxes[i * 4 + 2]! - boxes[i * 4]!) * (boxes[i * 4 + 3]! - boxes[i * 4 + 1]!);
    const level = Math.floor(4 + Math.log2(Math.sqrt(area) / canonicalBox + 1e-8));
    out[i] = Math.min(Math.max(level, 2), 1 + levels) - 2;
  }
  return out;
}

/**
 * RoIAlign (aligned, adaptive sampling) of every RoI from its level: one call
 * per level, then the rows put back in RoI order. [R, size, size, C].
 */
export function poolPyramid(pyramid: Pyramid, rois: Rois, size: number, canonicalBox: number, imageHeight: number): Tensor4D {
  const count = rois.image.length;
  const channels = pyramid[0].shape[3];
  if (count === 0) return tf.zeros([0, size, size, channels]);
  const levels = assignLevels(rois.boxes, canonicalBox, pyramid.length);
  const parts: Tensor4D[] = [];
  const order: number[] = [];
  pyramid.forEach((features, level) => {
    const members: number[] = [];
    for (let i = 0; i < count; i++) if (levels[i] === level) members.push(i);
    if (members.length === 0) return;
    const data = new Float32Array(members.length * 5);
    members.forEach((i, k) => {
      data[k * 5] = rois.image[i]!;
      data.set(rois.boxes.subarray(i * 4, i * 4 + 4), k * 5 + 1);
    });
    const spatialScale = features.shape[1] / imageHeight;
    parts.push(roiAlign(features, tf.tensor2d(data, [members.length, 5]), { pooledHeight: size, pooledWidth: size, spatialScale, samplingRatio: 0, aligned: true }));
    order.push(...members);
  });
  const pooled = parts.length === 1 ? parts[0]! : tf.concat(parts, 0);
  if (order.every((i, k) => i === k)) return pooled;
  const inverse = new Int32Array(count);
  order.forEach((i, k) => (inverse[i] = k));
  return gatherRows(pooled, inverse);
}

function xavierLinear(inFeatures: number, outFeatures: number, rng: Mulberry32): Linear {
  const fc = new Linear(inFeatures, outFeatures, { rng });
  fc.weight.assign(xavierFanInUniform(fc.weight.shape, inFeatures, rng));
  fc.bias!.assign(tf.zerosLike(fc.bias!));
  return fc;
}

function normalLinear(inFeatures: number, outFeatures: number, std: number, rng: Mulberry32): Linear {
  const fc = new Linear(inFeatures, outFeatures, { rng });
  fc.weight.assign(normal(fc.weight.shape, std, rng));
  fc.bias!.assign(tf.zerosLike(fc.bias!));
  return fc;
}

/** detectron2's c2_msra_fill: Kaiming normal (fan out), zero bias. */
function msraConv(inChannels: number, outChannels: number, kernelSize: number, rng: Mulberry32): Conv2d {
  const conv = new Conv2d(inChannels, outChannels, kernelSize, { rng, bias: true });
  conv.weight.assign(kaimingNormalFanOut(conv.weight.shape as [number, number, number, number], rng));
  conv.bias!.assign(tf.zerosLike(conv.bias!));
  return conv;
}

/** FastRCNNConvFCHead with 2 FCs, then FastRCNNOutputLayers: K+1 class scores, 4K class-specific deltas. */
export class BoxHead extends Module {
  private readonly fc1: Linear;
  private readonly fc2: Linear;
  private readonly cls: Linear;
  private readonly bbox: Linear;

  constructor(inFeatures: number, fcDim: number, readonly numClasses: number, rng: Mulberry32) {
    super();
    this.fc1 = this.addModule('fc1', xavierLinear(inFeatures, fcDim, rng));
    this.fc2 = this.addModule('fc2', xavierLinear(fcDim, fcDim, rng));
    this.cls = this.addModule('cls_score', normalLinear(fcDim, numClasses + 1, 0.01, rng));
    this.bbox = this.addModule('bbox_pred', normalLinear(fcDim, 4 * numClasses, 0.001, rng));
  }

  forward(pooled: Tensor4D): { scores: Tensor2D; deltas: Tensor2D } {
    const x = tf.reshape(pooled, [pooled.shape[0], -1]) as Tensor2D;
    const h = tf.relu(this.fc2.forward(tf.relu(this.fc1.forward(x))));
    return { scores: this.cls.forward(h), deltas: this.bbox.forward(h) };
  }
}

/** MaskRCNNConvUpsampleHead: 4 3x3 convs, a 2x2 stride-2 deconv, a 1x1 predictor to K masks. */
export class MaskHead extends Module {
  private readonly convs: Conv2d[];
  private readonly deconv: ConvTranspose2d;
  private readonly predictor: Conv2d;

  constructor(channels: number, numClasses: number, rng: Mulberry32) {
    super();
    this.convs = [0, 1, 2, 3].map((i) => this.addModule(`mask_fcn${i + 1}`, msraConv(channels, channels, 3, rng)));
    this.deconv = this.addModule('deconv', new ConvTranspose2d(channels, channels, 2, { rng }));
    this.deconv.weight.assign(kaimingNormalFanOut(this.deconv.weight.shape as [number, number, number, number], rng));
    this.deconv.bias.assign(tf.zerosLike(this.deconv.bias));
    this.predictor = this.addModule('predictor', new Conv2d(channels, numClasses, 1, { rng, bias: true }));
    this.predictor.weight.assign(normal(this.predictor.weight.shape, 0.001, rng));
    this.predictor.bias!.assign(tf.zerosLike(this.predictor.bias!));
  }

  /** [R, S, S, C] -> mask logits [R, 2S, 2S, K]. */
  forward(pooled: Tensor4D): Tensor4D {
    let x = pooled;
    for (const conv of this.convs) x = tf.relu(conv.forward(x));
    return this.predictor.forward(tf.relu(this.deconv.forward(x)));
  }
}

/** What training needs of one image's ground truth. */
export interface GroundTruth {
  boxes: Float32Array;
  classes: Int32Array;
  masks: Uint8Array[];
}

export interface Detections {
  boxes: Float32Array;
  scores: Float32Array;
  classes: Int32Array;
  /** Mask probabilities, D x M x M, for the detected class. */
  masks: Float32Array;
  maskSize: number;
}

/** The proposals sampled for the heads, with their targets; background class = numClasses. */
interface SampledRois extends Rois {
  classes: Int32Array;
  /** Index of the matched ground truth in its image, -1 for background. */
  gtIndex: Int32Array;
}

export class RoiHeads extends Module {
  readonly boxHead: BoxHead;
  readonly maskHead: MaskHead;
  /** detectron2's ROI_BOX_HEAD.BBOX_REG_WEIGHTS. */
  private readonly coder = new BoxCoder([10, 10, 5, 5]);

  constructor(channels: number, readonly settings: RoiHeadSettings, rng: Mulberry32) {
    super();
    this.boxHead = this.addModule('box_head', new BoxHead(channels * settings.boxPool * settings.boxPool, settings.fcDim, settings.numClasses, rng));
    this.maskHead = this.addModule('mask_head', new MaskHead(channels, settings.numClasses, rng));
  }

  /**
   * label_and_sample_proposals: ground truth appended to the proposals,
   * matched at IoU 0.5 (no low-quality matches), batchPerImage sampled with a
   * quarter foreground.
   */
  sample(proposals: Float32Array[], truth: GroundTruth[], rng: Rng): SampledRois {
    const { numClasses, batchPerImage, positiveFraction } = this.settings;
    const boxes: number[] = [];
    const image: number[] = [];
    const classes: number[] = [];
    const gtIndex: number[] = [];
    truth.forEach((gt, i) => {
      const all = new Float32Array(proposals[i]!.length + gt.boxes.length);
      all.set(proposals[i]!);
      all.set(gt.boxes, proposals[i]!.length);
      const count = all.length / 4;
      const numGt = gt.boxes.length / 4;
      const { matches, labels } = matchBoxes(pairwiseIou(gt.boxes, all), numGt, count, [0.5], [0, 1], false);
      const { positive, negative } = sampleBalanced(labels, batchPerImage, positiveFraction, (l) => l === 1, (l) => l === 0, rng.split(i));
      for (const [list, fg] of [[positive, true], [negative, false]] as const) {
        for (const p of list) {
          boxes.push(...all.subarray(p * 4, p * 4 + 4));
          image.push(i);
          classes.push(fg ? gt.classes[matches[p]!]! : numClasses);
          gtIndex.push(fg ? matches[p]! : -1);
        }
      }
    });
    return { boxes: Float32Array.from(boxes), image: Int32Array.from(image), classes: Int32Array.from(classes), gtIndex: Int32Array.from(gtIndex) };
  }

  /** Box classification, box regression and mask losses of the sampled RoIs (detectron2's normalisations). */
  losses(pyramid: Pyramid, proposals: Float32Array[], truth: GroundTruth[], imageHeight: number, imageWidth: number, rng: Rng): Record<'cls' | 'box' | 'mask', Scalar> {
    const { numClasses, canonicalBox, boxPool, maskPool } = this.settings;
    const rois = this.sample(proposals, truth, rng);
    const sampled = rois.image.length;
    const fg: number[] = [];
    rois.classes.forEach((c, i) => c < numClasses && fg.push(i));
    return tf.tidy(() => {
      const { scores, deltas } = this.boxHead.forward(poolPyramid(pyramid, rois, boxPool, canonicalBox, imageHeight));
      const cls = softmaxCrossEntropyMean(scores, rois.classes);
      // Class-specific deltas of each foreground RoI: row r, columns 4c..4c+3 of [R, 4K] -> rows 4(rK + c) + j of a flat view.
      const zero = tf.mul(tf.sum(deltas), 0) as Scalar;
      if (fg.length === 0) return { cls, box: zero, mask: zero };
      const picks = new Int32Array(fg.length * 4);
      const ref = new Float32Array(fg.length * 4);
      const target = new Float32Array(fg.length * 4);
      fg.forEach((r, k) => {
        for (let j = 0; j < 4; j++) picks[k * 4 + j] = r * 4 * numClasses + rois.classes[r]! * 4 + j;
        ref.set(rois.boxes.subarray(r * 4, r * 4 + 4), k * 4);
        const gt = truth[rois.image[r]!]!.boxes;
        target.set(gt.subarray(rois.gtIndex[r]! * 4, rois.gtIndex[r]! * 4 + 4), k * 4);
      });
      const chosen = gatherRows(tf.reshape(deltas, [-1]), picks);
      const box = tf.div(l1LossSum(chosen, this.coder.encode(ref, target)), Math.max(sampled, 1)) as Scalar;
      const mask = this.maskLoss(pyramid, rois, fg, truth, imageHeight, imageWidth, maskPool * 2);
      return { cls, box, mask };
    });
  }

  /** Mean BCE of each foreground RoI's own-class 28x28 logits against its ground-truth mask RoIAligned into the box. */
  private maskLoss(pyramid: Pyramid, rois: SampledRois, fg: number[], truth: GroundTruth[], height: number, width: number, size: number): Scalar {
    const { numClasses, canonicalBox, maskPool } = this.settings;
    const fgBoxes = new Float32Array(fg.length * 4);
    const fgImage = new Int32Array(fg.length);
    const targets = new Float32Array(fg.length * size * size);
    const oneHot = new Float32Array(fg.length * numClasses);
    fg.forEach((r, k) => {
      fgBoxes.set(rois.boxes.subarray(r * 4, r * 4 + 4), k * 4);
      fgImage[k] = rois.image[r]!;
      oneHot[k * numClasses + rois.classes[r]!] = 1;
    });
    // Targets image by image: maskTargets takes one image's masks.
    for (let i = 0; i < truth.length; i++) {
      const members = fg.map((_, k) => k).filter((k) => fgImage[k] === i);
      if (members.length === 0) continue;
      const boxes = new Float32Array(members.length * 4);
      const gtIndex = new Int32Array(members.length);
      members.forEach((k, j) => {
        boxes.set(fgBoxes.subarray(k * 4, k * 4 + 4), j * 4);
        gtIndex[j] = rois.gtIndex[fg[k]!]!;
      });
      const t = maskTargets(truth[i]!.masks, height, width, boxes, gtIndex, size);
      members.forEach((k, j) => targets.set(t.subarray(j * size * size, (j + 1) * size * size), k * size * size));
    }
    const logits = this.maskHead.forward(poolPyramid(pyramid, { boxes: fgBoxes, image: fgImage }, maskPool, canonicalBox, height));
    const own = tf.sum(tf.mul(logits, tf.tensor4d(oneHot, [fg.length, 1, 1, numClasses])), 3);
    return tf.div(sigmoidCrossEntropySum(own, targets), targets.length) as Scalar;
  }

  /**
   * fast_rcnn_inference: softmax scores, class-specific boxes clipped to the
   * image, scores above the threshold, per-class NMS, the best
   * detectionsPerImage; then the mask head on the kept boxes.
   */
  predict(pyramid: Pyramid, proposals: Float32Array[], imageHeight: number, imageWidth: number): Detections[] {
    const { numClasses, canonicalBox, boxPool, maskPool, scoreThreshold, nmsThreshold, detectionsPerImage } = this.settings;
    const image: number[] = [];
    proposals.forEach((p, i) => {
      for (let k = 0; k < p.length / 4; k++) image.push(i);
    });
    const all: Rois = { boxes: concat(proposals, new Float32Array(0)), image: Int32Array.from(image) };
    const [probs, deltas] = tf.tidy(() => {
      const { scores, deltas } = this.boxHead.forward(poolPyramid(pyramid, all, boxPool, canonicalBox, imageHeight));
      return [tf.softmax(scores).dataSync() as Float32Array, deltas.dataSync() as Float32Array];
    });
    const out: Detections[] = [];
    let row = 0;
    for (const p of proposals) {
      const count = p.length / 4;
      const boxes: number[] = [];
      const scores: number[] = [];
      const classes: number[] = [];
      for (let r = 0; r < count; r++, row++) {
        for (let c = 0; c < numClasses; c++) {
          const s = probs[row * (numClasses + 1) + c]!;
          if (!(s > scoreThreshold)) continue;
          const d = deltas.subarray(row * 4 * numClasses + c * 4, row * 4 * numClasses + c * 4 + 4);
          boxes.push(...this.coder.decode(p.subarray(r * 4, r * 4 + 4), d));
          scores.push(s);
          classes.push(c);
        }
      }
      const b = Float32Array.from(boxes);
      clipBoxes(b, imageHeight, imageWidth);
      const s = Float32Array.from(scores);
      const cl = Int32Array.from(classes);
      const keep: number[] = [];
      for (const k of batchedNms(b, s, cl, nmsThreshold)) {
        if (keep.length === detectionsPerImage) break;
        // detectron2 drops empty boxes (Boxes.nonempty) before NMS; a clipped box can collapse.
        if (b[k * 4 + 2]! > b[k * 4]! && b[k * 4 + 3]! > b[k * 4 + 1]!) keep.push(k);
      }
      out.push({
        boxes: Float32Array.from(keep.flatMap((k) => [...b.subarray(k * 4, k * 4 + 4)])),
        scores: Float32Array.from(keep.map((k) => s[k]!)),
        classes: Int32Array.from(keep.map((k) => cl[k]!)),
        masks: new Float32Array(0),
        maskSize: maskPool * 2,
      });
    }
    this.predictMasks(pyramid, out, imageHeight);
    return out;
  }

  /** Sigmoid of each detection's own-class mask logits. */
  private predictMasks(pyramid: Pyramid, detections: Detections[], imageHeight: number): void {
    const { numClasses, canonicalBox, maskPool } = this.settings;
    const image: number[] = [];
    detections.forEach((d, i) => d.classes.forEach(() => image.push(i)));
    if (image.length === 0) return;
    const classes = concat(detections.map((d) => d.classes), new Int32Array(0));
    const oneHot = new Float32Array(image.length * numClasses);
    classes.forEach((c, k) => (oneHot[k * numClasses + c] = 1));
    const masks = tf.tidy(() => {
      const logits = this.maskHead.forward(poolPyramid(pyramid, { boxes: concat(detections.map((d) => d.boxes), new Float32Array(0)), image: Int32Array.from(image) }, maskPool, canonicalBox, imageHeight));
      return tf.sigmoid(tf.sum(tf.mul(logits, tf.tensor4d(oneHot, [image.length, 1, 1, numClasses])), 3)).dataSync() as Float32Array;
    });
    const area = (maskPool * 2) ** 2;
    let at = 0;
    for (const d of detections) {
      d.masks = masks.slice(at * area, (at + d.classes.length) * area);
      at += d.classes.length;
    }
  }
}

/** The arrays end to end, in one array of the first's type. */
function concat<A extends Float32Array | Int32Array>(parts: A[], empty: A): A {
  const out = new (empty.constructor as new (n: number) => A)(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
