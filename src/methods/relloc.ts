// Relative location (Doersch et al. 2015): the centre cell of a 3x3 grid and
// one of its 8 neighbours, each a sub-crop of its cell (a gap, and jitter
// inside the cell), both through the backbone, their pooled features
// concatenated (centre first), an 8-way classifier of where the neighbour
// sits, softmax cross-entropy; pretext accuracy is `accuracy`.
// Colour dropping (2 of 3 channels replaced by faint noise, against the
// chromatic-aberration cue) applies to RGB images only: a 1-channel image
// (Fashion-MNIST) has no colour to drop, and the option does nothing there.
// Paper vs ours (one line each):
// - 96 px patches with 48 px gaps (sub-crops 2/3 of a cell), up to 7 px jitter: ours 2/3 of a cell placed anywhere in it, resized to half the view
//   (16 px at 32): at a quarter (8 px, the cell's own scale) the bench's kNN was 67.4, at half 71.0 (docs/experiments.md#pretext-tasks).
// - one pair per image per step: ours all 8 (`allNeighbours`), as RotNet takes all 4 rotations: 8 labels an image in a short schedule.
// - images resized to 150k-450k pixels: ours a crop of 60-100% of a 28 px (or 64 px) image.
// - colour dropping or projection: ours dropping (RGB), and greyscale on 20% of patches.
// - AlexNet-style fc6 per patch, fc7 of 4096, fc8: ours pooled res5, an fc6 of 256 per patch (Linear -> BN -> ReLU), Linear -> BN -> ReLU -> Linear of 512 hidden;
//   without the fc6 the bench's kNN was 71.0, with it 71.7 (docs/experiments.md#pretext-tasks).
// - weeks of GPU training: ours the run's schedule, lr 0.1 with BN.
import { z } from 'zod';
import { NEIGHBOUR_CELLS, relativeLocationPipeline, type PipelineSpec } from '../data/index.js';
import { defineMethod, type MethodContext } from './method.js';
import { partDimFromCheckpoint, PretextMethod, pretextHeadField, pretextPatchField, pretextPatchSize } from './parts/pretext.js';

/** Patch side = view side / this. */
const RELLOC_PATCHES_PER_VIEW = 2;

export const RelLocOptions = z
  .object({
    hiddenDim: pretextHeadField(512),
    /** The per-patch layer before the concatenation (the paper's fc6), 0 for none. */
    partDim: pretextHeadField(256),
    patchSize: pretextPatchField(),
    /** Doersch et al.'s colour dropping; RGB only. */
    colorDrop: z.boolean().default(true),
    /** All 8 pairs of each image per step, not one drawn at random. */
    allNeighbours: z.boolean().default(true),
  })
  .strict();
export type RelLocOptions = z.infer<typeof RelLocOptions>;

export class RelLoc extends PretextMethod {
  readonly name = 'relloc';

  constructor(readonly options: RelLocOptions, ctx: MethodContext) {
    super({ output: 'relloc', parts: 2, classes: NEIGHBOUR_CELLS.length, hiddenDim: options.hiddenDim, partDim: options.partDim }, ctx);
  }

  pipeline(): PipelineSpec {
    const { patchSize, colorDrop, allNeighbours } = this.options;
    return relativeLocationPipeline({ ...this.recipe, patchSize: patchSize ?? pretextPatchSize(this.recipe, RELLOC_PATCHES_PER_VIEW), colorDrop, allNeighbours });
  }
}

export const rellocSpec = defineMethod({
  names: ['relloc'],
  description: 'relative location: where (of 8) a neighbouring patch sits around the centre patch',
  options: RelLocOptions,
  recipe: { lr: 0.1 },
  resolve: (_name, o, ctx) => ({ ...o, patchSize: o.patchSize ?? pretextPatchSize(ctx.recipe, RELLOC_PATCHES_PER_VIEW) }),
  fromCheckpoint: partDimFromCheckpoint,
  create: (_name, o, ctx) => new RelLoc(o, ctx),
});
