// RotNet (Gidaris et al. 2018): every image in all four rotations (0, 90, 180
// and 270 degrees, one batch), a 4-way classifier on the backbone's pooled
// features, softmax cross-entropy; the pretext accuracy is the `accuracy`
// term. The views and labels come from src/data's rotation output.
// Paper vs ours (one line each):
// - all 4 rotations of an image in the same batch: ours too (their best).
// - classifier: the network's own last blocks (NIN, AlexNet); ours an MLP (512 hidden, BN) on pooled res5, what evaluation reads (a Linear: kNN 56.5, not 67.1).
// - views: 32 px CIFAR with crops and flips; ours 32 px Fashion-MNIST / 64 px RGB, crops of 60-100% and flips (rotationPipeline).
// - SGD lr 0.1, batch 128, 100+ epochs: lr 0.1 kept; schedule and batch are the run's.
// Garments and clip-art objects have an upright pose, so their rotation is well defined.
import { z } from 'zod';
import { rotationPipeline, type PipelineSpec } from '../data/index.js';
import { defineMethod, type MethodContext } from './method.js';
import { PretextMethod, pretextHeadField } from './parts/pretext.js';

export const RotationOptions = z
  .object({
    /** Hidden width of the head; 0 is a Linear. */
    hiddenDim: pretextHeadField(512),
  })
  .strict();
export type RotationOptions = z.infer<typeof RotationOptions>;

export class Rotation extends PretextMethod {
  readonly name = 'rotation';

  constructor(readonly options: RotationOptions, ctx: MethodContext) {
    super({ output: 'rotation', parts: 1, classes: 4, hiddenDim: options.hiddenDim }, ctx);
  }

  pipeline(): PipelineSpec {
    return rotationPipeline({ ...this.recipe, all: true });
  }
}

export const rotationSpec = defineMethod({
  names: ['rotation'],
  description: 'RotNet: predict which of 4 rotations (0/90/180/270) an image was given',
  options: RotationOptions,
  recipe: { lr: 0.1 },
  create: (_name, o, ctx) => new Rotation(o, ctx),
});
