// The jigsaw puzzle (Noroozi & Favaro 2016, the context-free network): 3x3
// tiles of a crop, each a sub-crop of its cell (a gap between tiles and
// random jitter inside the cell, so edges never line up), put in the order of
// one of N permutations of maximal Hamming distance (src/data/permutations.ts,
// fixed seed); every tile through the backbone (the shared tile encoder), the
// 9 pooled features concatenated in slot order, an N-way classifier of the
// permutation's index, softmax cross-entropy; pretext accuracy is `accuracy`.
// Paper vs ours (one line each):
// - 1000 permutations: ours 100 (an option); a 2,000-image run would see each of 1000 classes twice an epoch.
// - 225 px crop, 75 px cells, 64 px tiles cut at the image's scale: ours a crop of 60-100%, tiles 64/75 of a cell, a quarter of the view (8 px at 32), about their size in the view.
// - tile encoder AlexNet to fc6 (512): ours the backbone's pooled res5, what evaluation reads (`partDim` adds an fc6; it did not help here).
// - fc7 of 4096 and fc8: ours Linear -> BN -> ReLU -> Linear of 512 hidden, for narrow ResNets.
// - per-tile mean/std normalisation: ours per-tile colour jitter and greyscale (PIRL's), then the data set's normalisation, as evaluation sees it.
// - batch 256, lr 0.01, 350k steps: ours the run's schedule, lr 0.1 with BN.
import { z } from 'zod';
import { jigsawPuzzlePipeline, maxHammingPermutations, type PipelineSpec } from '../data/index.js';
import { defineMethod, type MethodContext } from './method.js';
import { PretextMethod, pretextHeadField, pretextPatchField, pretextPatchSize, resolvePatchSize } from './parts/pretext.js';

/** The seed of the permutation set's first permutation: one set for every run. */
export const PERMUTATION_SEED = 2016;

export const JigsawOptions = z
  .object({
    /** Size of the permutation set: the classes of the puzzle. */
    permutations: z.number().int().min(2).max(1000).default(100),
    hiddenDim: pretextHeadField(512),
    /** A per-tile layer before the concatenation (the paper's fc6), 0 for none: 256 scored 71.9 kNN against 72.4 without. */
    partDim: pretextHeadField(0),
    patchSize: pretextPatchField(),
  })
  .strict();
export type JigsawOptions = z.infer<typeof JigsawOptions>;

export class Jigsaw extends PretextMethod {
  readonly name = 'jigsaw';
  /** Class l puts cell permutations[l][k] in slot k. */
  readonly permutations: number[][];

  constructor(readonly options: JigsawOptions, ctx: MethodContext) {
    super({ output: 'jigsaw', parts: 9, classes: options.permutations, hiddenDim: options.hiddenDim, partDim: options.partDim }, ctx);
    this.permutations = maxHammingPermutations(options.permutations, PERMUTATION_SEED);
  }

  pipeline(): PipelineSpec {
    return jigsawPuzzlePipeline({ ...this.recipe, patchSize: this.options.patchSize ?? pretextPatchSize(this.recipe), permutations: this.permutations });
  }
}

export const jigsawPuzzleSpec = defineMethod({
  names: ['jigsaw'],
  description: 'jigsaw puzzle: which of N maximal-Hamming permutations shuffled 3x3 tiles',
  options: JigsawOptions,
  recipe: { lr: 0.1 },
  resolve: resolvePatchSize,
  create: (_name, o, ctx) => new Jigsaw(o, ctx),
});
