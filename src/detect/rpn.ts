// The region proposal network on P2..P5 (detectron2's StandardRPNHead and
// RPN): a shared 3x3 conv, per-anchor objectness and box deltas; training
// labels from IoU matching with low-quality matches, 256 anchors per image
// half positive; proposals as per-level top-k, decode, clip, per-level NMS,
// then the overall top-k. Matching, sampling and proposals run on the host
// and are constants to the tape, as detectron2 detaches them.
import * as tf from '../core/tf.js';
import { gatherRows } from '../backend/ops.js';
import type { Scalar, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import type { Mulberry32, Rng } from '../core/random.js';
import { l1LossSum, sigmoidCrossEntropySum } from '../losses/detection.js';
import { normal } from '../nn/init.js';
import { Conv2d } from '../nn/layers.js';
import { Module } from '../nn/module.js';
import { generateAnchors } from './anchors.js';
import { BoxCoder, clipBoxes, nonEmptyIndices, pairwiseIou, selectRows } from './boxes.js';
import type { Pyramid } from './fpn.js';
import { matchBoxes } from './matcher.js';
import { batchedNms } from './nms.js';
import { sampleBalanced } from './sampler.js';

export interface RpnSettings {
  /** Anchor side per level P2..P5, in input pixels. */
  anchorSizes: number[];
  aspectRatios: number[];
  batchPerImage: number;
  positiveFraction: number;
  nmsThreshold: number;
  preNmsTopK: { train: number; test: number };
  postNmsTopK: { train: number; test: number };
}

/** A conv with N(0, std^2) weights and a zero bias: detectron2's init of the RPN and predictors. */
export function normalConv(inChannels: number, outChannels: number, kernelSize: number, std: number, rng: Mulberry32): Conv2d {
  const conv = new Conv2d(inChannels, outChannels, kernelSize, { rng, bias: true });
  conv.weight.assign(normal(conv.weight.shape, std, rng));
  conv.bias!.assign(tf.zerosLike(conv.bias!));
  return conv;
}

export interface RpnOutput {
  /** [N, A_total] objectness logits, levels concatenated in anchor order. */
  logits: Tensor2D;
  /** [N * A_total, 4] box deltas. */
  deltas: Tensor2D;
}

/** Anchors of every level for one image size, concatenated, and where each level starts. */
export interface AnchorSet {
  boxes: Float32Array;
  levelStarts: number[];
  count: number;
}

export class RPN extends Module {
  private readonly conv: Conv2d;
  private readonly objectness: Conv2d;
  private readonly anchorDeltas: Conv2d;
  private readonly anchorsPerCell: number;
  /** detectron2's RPN.BBOX_REG_WEIGHTS: (1, 1, 1, 1). */
  private readonly coder = new BoxCoder([1, 1, 1, 1]);
  private anchorCache: { key: string; anchors: AnchorSet } | undefined;

  constructor(channels: number, readonly settings: RpnSettings, rng: Mulberry32) {
    super();
    this.anchorsPerCell = settings.aspectRatios.length;
    this.conv = this.addModule('conv', normalConv(channels, channels, 3, 0.01, rng));
    this.objectness = this.addModule('objectness_logits', normalConv(channels, this.anchorsPerCell, 1, 0.01, rng));
    this.anchorDeltas = this.addModule('anchor_deltas', normalConv(channels, 4 * this.anchorsPerCell, 1, 0.01, rng));
  }

  forward(pyramid: Pyramid): RpnOutput {
    const n = pyramid[0].shape[0];
    const logits: Tensor2D[] = [];
    const deltas: Tensor2D[] = [];
    for (const p of pyramid) {
      const t = tf.relu(this.conv.forward(p));
      logits.push(tf.reshape(this.objectness.forward(t), [n, -1]));
      deltas.push(tf.reshape(this.anchorDeltas.forward(t), [n, -1]));
    }
    const cat = tf.concat(deltas, 1);
    return { logits: tf.concat(logits, 1), deltas: tf.reshape(cat, [-1, 4]) };
  }

  /** The anchors for this pyramid's shapes (cached: the shapes repeat every step). */
  anchors(pyramid: Pyramid, imageHeight: number): AnchorSet {
    const key = pyramid.map((p) => `${p.shape[1]}x${p.shape[2]}`).join(',') + `/${imageHeight}`;
    if (this.anchorCache?.key !== key) {
      const levels = pyramid.map((p: Tensor4D, i) => ({
        stride: imageHeight / p.shape[1],
        size: this.settings.anchorSizes[i]!,
        height: p.shape[1],
        width: p.shape[2],
      }));
      const perLevel = generateAnchors(levels, this.settings.aspectRatios);
      const count = perLevel.reduce((s, a) => s + a.length / 4, 0);
      const boxes = new Float32Array(count * 4);
      const levelStarts: number[] = [];
      let at = 0;
      for (const a of perLevel) {
        levelStarts.push(at);
        boxes.set(a, at * 4);
        at += a.length / 4;
      }
      this.anchorCache = { key, anchors: { boxes, levelStarts, count } };
    }
    return this.anchorCache.anchors;
  }

  /**
   * Objectness BCE and L1 box loss over each image's sampled anchors, both
   * divided by batchPerImage x images (detectron2's normaliser).
   */
  losses(out: RpnOutput, anchors: AnchorSet, gtBoxes: Float32Array[], rng: Rng): { objectness: Scalar; boxes: Scalar } {
    const { batchPerImage, positiveFraction } = this.settings;
    const sampledIndex: number[] = [];
    const sampledLabel: number[] = [];
    const positiveIndex: number[] = [];
    const positiveTargets: number[] = [];
    gtBoxes.forEach((gt, image) => {
      const numGt = gt.length / 4;
      const offset = image * anchors.count;
      const { matches, labels } = matchBoxes(pairwiseIou(gt, anchors.boxes), numGt, anchors.count, [0.3, 0.7], [0, -1, 1], true);
      const { positive, negative } = sampleBalanced(labels, batchPerImage, positiveFraction, (l) => l === 1, (l) => l === 0, rng.split(image));
      for (const a of positive) {
        sampledIndex.push(offset + a);
        sampledLabel.push(1);
      }
      for (const a of negative) {
        sampledIndex.push(offset + a);
        sampledLabel.push(0);
      }
      if (positive.length > 0) {
        for (const a of positive) positiveIndex.push(offset + a);
        const target = selectRows(gt, 4, Array.from(positive, (a) => matches[a]!));
        positiveTargets.push(...this.coder.encode(selectRows(anchors.boxes, 4, positive), target));
      }
    });
    const normaliser = batchPerImage * gtBoxes.length;
    return tf.tidy(() => {
      const flat = tf.reshape(out.logits, [-1]);
      const picked = gatherRows(flat, Int32Array.from(sampledIndex));
      const objectness = tf.div(sigmoidCrossEntropySum(picked, Float32Array.from(sampledLabel)), normaliser) as Scalar;
      const boxes =
        positiveIndex.length === 0
          ? tf.mul(tf.sum(out.deltas), 0) as Scalar // keeps the deltas on the tape with a zero gradient
          : (tf.div(l1LossSum(gatherRows(out.deltas, Int32Array.from(positiveIndex)), Float32Array.from(positiveTargets)), normaliser) as Scalar);
      return { objectness, boxes };
    });
  }

  /**
   * Proposals per image (detectron2's find_top_rpn_proposals): per level the
   * top-k anchors by objectness, decoded and clipped, empty boxes dropped,
   * NMS within each level, then the best `postNmsTopK` overall.
   */
  proposals(out: RpnOutput, anchors: AnchorSet, imageHeight: number, imageWidth: number, training: boolean): Float32Array[] {
    const preK = training ? this.settings.preNmsTopK.train : this.settings.preNmsTopK.test;
    const postK = training ? this.settings.postNmsTopK.train : this.settings.postNmsTopK.test;
    const logits = out.logits.dataSync() as Float32Array;
    const deltas = out.deltas.dataSync() as Float32Array;
    const images = out.logits.shape[0];
    const result: Float32Array[] = [];
    for (let image = 0; image < images; image++) {
      const base = image * anchors.count;
      const chosen: number[] = [];
      const levels: number[] = [];
      anchors.levelStarts.forEach((start, level) => {
        const end = anchors.levelStarts[level + 1] ?? anchors.count;
        for (const a of topK(logits, base + start, base + end, preK)) {
          chosen.push(a - base);
          levels.push(level);
        }
      });
      const boxes = this.coder.decode(selectRows(anchors.boxes, 4, chosen), selectRows(deltas, 4, chosen.map((a) => base + a)));
      clipBoxes(boxes, imageHeight, imageWidth);
      // Non-empty also drops NaN boxes: every comparison with NaN is false.
      const keep = nonEmptyIndices(boxes);
      const kb = selectRows(boxes, 4, keep);
      const ks = Float32Array.from(keep, (k) => logits[base + chosen[k]!]!);
      const kg = Int32Array.from(keep, (k) => levels[k]!);
      const proposals = selectRows(kb, 4, batchedNms(kb, ks, kg, this.settings.nmsThreshold).subarray(0, postK));
      result.push(proposals);
    }
    return result;
  }
}

/** Indices in [from, to) of the k largest values, largest first (ties: lower index first, as a stable sort). */
export function topK(values: Float32Array, from: number, to: number, k: number): number[] {
  const idx = Array.from({ length: to - from }, (_, i) => from + i);
  idx.sort((a, b) => values[b]! - values[a]! || a - b);
  return idx.slice(0, Math.min(k, idx.length));
}
