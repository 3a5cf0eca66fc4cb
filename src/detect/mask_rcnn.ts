// Mask R-CNN with an FPN on the toolkit's ResNet, as MoCo and DetCo fine-tune
// it with detectron2: BN trained over the whole batch everywhere (in one
// process that is SyncBN), nothing frozen, heads freshly initialised; only the
// backbone comes from a checkpoint. Settings are scaled to 128 px scenes
// (docs/detection.md has the table against detectron2's).
import * as tf from '../core/tf.js';
import type { Scalar, Tensor4D } from '@tensorflow/tfjs-core';
import { Mulberry32, type Rng } from '../core/random.js';
import { Module } from '../nn/module.js';
import type { ResNet } from '../nn/resnet.js';
import { FPN, type Pyramid } from './fpn.js';
import { RoiHeads, type Detections, type GroundTruth, type RoiHeadSettings } from './roi_heads.js';
import { RPN, type RpnSettings } from './rpn.js';

export interface MaskRcnnSettings {
  numClasses: number;
  /** FPN channels; default twice the backbone's width, as detectron2's 256 over R50's 128-wide res2 3x3s. */
  fpnChannels: number;
  rpn: RpnSettings;
  roi: Omit<RoiHeadSettings, 'numClasses'>;
  /** Seeds the heads' initialisation. */
  seed: number;
}

/**
 * RoIs sampled per image for the box and mask heads: not detectron2's 512 (128
 * scaled) because scenes hold 1-4 objects, and at 128 the heads saw ~4%
 * foreground and learnt less (docs/experiments.md#transfer).
 */
export const ROI_BATCH_PER_IMAGE = 32;

/** The scaled detectron2 configuration for 128 px scenes with 1-4 objects of 20-80 px. */
export function defaultMaskRcnnSettings(numClasses: number, backboneWidth: number, seed: number): MaskRcnnSettings {
  return {
    numClasses,
    fpnChannels: 2 * backboneWidth,
    rpn: {
      anchorSizes: [16, 32, 64, 128],
      aspectRatios: [0.5, 1, 2],
      batchPerImage: 256,
      positiveFraction: 0.5,
      nmsThreshold: 0.7,
      preNmsTopK: { train: 1000, test: 1000 },
      postNmsTopK: { train: 500, test: 300 },
    },
    roi: {
      batchPerImage: ROI_BATCH_PER_IMAGE,
      positiveFraction: 0.25,
      canonicalBox: 56,
      boxPool: 7,
      maskPool: 14,
      fcDim: 256,
      scoreThreshold: 0.05,
      nmsThreshold: 0.5,
      detectionsPerImage: 100,
    },
    seed,
  };
}

export type DetectorLosses = Record<'rpnObjectness' | 'rpnBox' | 'cls' | 'box' | 'mask', Scalar>;

export class MaskRCNN extends Module {
  readonly backbone: ResNet;
  readonly fpn: FPN;
  readonly rpn: RPN;
  readonly roiHeads: RoiHeads;

  constructor(backbone: ResNet, readonly settings: MaskRcnnSettings) {
    super();
    const rng = new Mulberry32(settings.seed);
    this.backbone = this.addModule('backbone', backbone);
    this.fpn = this.addModule('fpn', new FPN(backbone.channels, settings.fpnChannels, rng));
    this.rpn = this.addModule('rpn', new RPN(settings.fpnChannels, settings.rpn, rng));
    this.roiHeads = this.addModule('roi_heads', new RoiHeads(settings.fpnChannels, { ...settings.roi, numClasses: settings.numClasses }, rng));
  }

  /** Frees everything but the backbone, which belongs to whoever passed it in. */
  disposeHeads(): void {
    for (const part of [this.fpn, this.rpn, this.roiHeads]) part.dispose();
  }

  pyramid(images: Tensor4D): Pyramid {
    return this.fpn.forward(this.backbone.forward(images));
  }

  /** Every loss of one training batch; `rng` draws the anchor and RoI samples. */
  losses(images: Tensor4D, truth: GroundTruth[], rng: Rng): DetectorLosses {
    const [, height, width] = images.shape;
    const pyramid = this.pyramid(images);
    const rpnOut = this.rpn.forward(pyramid);
    const anchors = this.rpn.anchors(pyramid, height);
    const rpn = this.rpn.losses(rpnOut, anchors, truth.map((t) => t.boxes), rng.split(0));
    const proposals = this.rpn.proposals(rpnOut, anchors, height, width, true);
    const roi = this.roiHeads.losses(pyramid, proposals, truth, height, width, rng.split(1));
    return { rpnObjectness: rpn.objectness, rpnBox: rpn.boxes, ...roi };
  }

  /** Detections of each image (eval mode expected: BN with running statistics); every tensor it makes is freed. */
  predict(images: Tensor4D): Detections[] {
    const [, height, width] = images.shape;
    // A scope rather than tf.tidy: the result holds host arrays, not tensors.
    tf.engine().startScope();
    try {
      const pyramid = this.pyramid(images);
      const rpnOut = this.rpn.forward(pyramid);
      const proposals = this.rpn.proposals(rpnOut, this.rpn.anchors(pyramid, height), height, width, false);
      return this.roiHeads.predict(pyramid, proposals, height, width);
    } finally {
      tf.engine().endScope();
    }
  }
}
