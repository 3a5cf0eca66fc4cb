// Grid-patch pretext inputs.
//
// Jigsaw sets (Noroozi & Favaro 2016; PIRL, Misra & van der Maaten 2020;
// DetCo's local views, Xie et al. 2021): a random crop of the image is split
// into a grid x grid raster, a random sub-crop is taken inside each cell (PIRL:
// 64 px out of 85 px cells, so patch edges never line up and the network
// cannot solve the task from boundary continuity), and every patch gets its
// own colour augmentation. With shuffling, slot k holds cell perm[k].
//
// Relative location (Doersch et al. 2015): the centre patch of such a grid and
// one of its 8 neighbours, labelled 0-7 in reading order; the gap between
// sub-crops again hides low-level continuity, and colour dropping hides the
// chromatic aberration that tells a patch's place in the lens' field.
import type { Rng } from '../core/random.js';
import { dropColors, resizedCrop, sampleResizedCropBox, type CropBox, type Range } from './transforms.js';
import { applyPhotometric, writeNormalizedBox, type PhotometricSpec, type SourceImage } from './views.js';

export interface GridPatchSpec {
  /** RandomResizedCrop ranges for the region that is cut into the grid. */
  scale: Range;
  ratio: Range;
  /** Cells per side (3 in every paper). */
  grid: number;
  /** Sub-crop side over cell side (PIRL 64/85 = 0.75; Doersch 96/(96+48) = 0.67). */
  cellFraction: number;
  /** Output side of each patch. */
  patchSize: number;
  /** Colour augmentation, drawn independently per patch. */
  photometric: PhotometricSpec;
}

export interface JigsawSpec extends GridPatchSpec {
  shuffle: boolean;
  /**
   * The jigsaw puzzle's classes (Noroozi & Favaro; src/data/permutations.ts):
   * each sample draws one, label l, and slot k holds cell permutations[l][k].
   * Replaces `shuffle`'s uniform permutation.
   */
  permutations?: number[][];
}

export interface RelativeLocationSpec extends GridPatchSpec {
  /** Doersch et al.'s colour dropping on RGB patches (transforms.ts dropColors); nothing to drop on grey ones. */
  colorDrop?: boolean;
  /** All 8 (centre, neighbour) pairs of a sample's grid, not one drawn at random (RotNet's all-four-rotations, for relative location). */
  allNeighbours?: boolean;
}

/** The random sub-crop of cell `cell` (row-major) of `region`. */
export function cellSubCrop(region: CropBox, grid: number, cellFraction: number, cell: number, rng: Rng): CropBox {
  const cw = region.w / grid;
  const ch = region.h / grid;
  const w = cw * cellFraction;
  const h = ch * cellFraction;
  const row = Math.floor(cell / grid);
  const col = cell % grid;
  return {
    x: region.x + col * cw + rng.uniform(0, cw - w),
    y: region.y + row * ch + rng.uniform(0, ch - h),
    w,
    h,
  };
}

function renderPatch(src: SourceImage, box: CropBox, spec: GridPatchSpec, rng: Rng, out: Float32Array, offset: number): void {
  const p = spec.patchSize;
  resizedCrop(src.data, src.offset, src.width, src.height, src.channels, box, false, out, offset, p, p);
  applyPhotometric(out, offset, p, p, src.channels, spec.photometric, rng);
}

/**
 * Renders grid*grid patches into consecutive slots of `out` from `offset`,
 * writes the cell each slot came from into `perm` at `permOffset`, and, when
 * `boxes` is given, each patch's [x0, y0, x1, y1] (normalised) there. With a
 * permutation set, the index of the permutation drawn goes to `labels` at
 * `labelOffset`. Returns the region that was cut into the grid.
 */
export function renderJigsaw(
  src: SourceImage,
  spec: JigsawSpec,
  rng: Rng,
  out: Float32Array,
  offset: number,
  perm: Int32Array,
  permOffset: number,
  boxes?: Float32Array,
  boxOffset = 0,
  labels?: Int32Array,
  labelOffset = 0,
): CropBox {
  const cells = spec.grid * spec.grid;
  const region = sampleResizedCropBox(rng, src.width, src.height, spec.scale, spec.ratio);
  const set = spec.permutations;
  const label = set ? rng.int(0, set.length - 1) : -1;
  const order = set ? set[label]! : rng.permutation(cells);
  if (order.length !== cells) throw new Error(`jigsaw: a permutation of ${order.length} cells for a ${spec.grid}x${spec.grid} grid`);
  if (labels) labels[labelOffset] = label;
  const patchFloats = spec.patchSize * spec.patchSize * src.channels;
  for (let k = 0; k < cells; k++) {
    const cell = set || spec.shuffle ? order[k]! : k;
    perm[permOffset + k] = cell;
    const box = cellSubCrop(region, spec.grid, spec.cellFraction, cell, rng);
    renderPatch(src, box, spec, rng, out, offset + k * patchFloats);
    if (boxes) writeNormalizedBox(box, src, boxes, boxOffset + 4 * k);
  }
  return region;
}

/** Neighbour label l (0-7) is grid cell NEIGHBOUR_CELLS[l] of a 3x3 grid, in reading order around the centre. */
export const NEIGHBOUR_CELLS = [0, 1, 2, 3, 5, 6, 7, 8] as const;

/** Renders the centre patch of `region` then neighbour `label`'s into two consecutive slots of `out`. */
function renderPair(src: SourceImage, spec: RelativeLocationSpec, region: CropBox, label: number, rng: Rng, out: Float32Array, offset: number, boxes?: Float32Array, boxOffset = 0): void {
  const pixels = spec.patchSize * spec.patchSize;
  const cells = [4, NEIGHBOUR_CELLS[label]!];
  const centre = spec.photometric.normalize ? 0 : 0.5;
  for (let k = 0; k < 2; k++) {
    const box = cellSubCrop(region, 3, spec.cellFraction, cells[k]!, rng);
    renderPatch(src, box, spec, rng, out, offset + k * pixels * src.channels);
    if (spec.colorDrop && src.channels === 3) dropColors(out, offset + k * pixels * 3, pixels, 3, rng, centre);
    if (boxes) writeNormalizedBox(box, src, boxes, boxOffset + 4 * k);
  }
}

/**
 * Renders the centre patch then a neighbour patch into two consecutive slots
 * of `out` and returns the neighbour's label. The grid is always 3x3 here.
 */
export function renderRelativeLocation(
  src: SourceImage,
  spec: RelativeLocationSpec,
  rng: Rng,
  out: Float32Array,
  offset: number,
  boxes?: Float32Array,
  boxOffset = 0,
): number {
  const region = sampleResizedCropBox(rng, src.width, src.height, spec.scale, spec.ratio);
  const label = rng.int(0, 7);
  renderPair(src, spec, region, label, rng, out, offset, boxes, boxOffset);
  return label;
}

/**
 * `allNeighbours`: the 8 pairs of one region, pair l (centre, neighbour l)
 * in slots 2l and 2l + 1, every patch with its own jitter and colour; writes
 * labels 0-7 to `labels` from `labelOffset`.
 */
export function renderAllNeighbours(src: SourceImage, spec: RelativeLocationSpec, rng: Rng, out: Float32Array, offset: number, labels: Int32Array, labelOffset: number): void {
  const region = sampleResizedCropBox(rng, src.width, src.height, spec.scale, spec.ratio);
  const pairFloats = 2 * spec.patchSize * spec.patchSize * src.channels;
  for (let l = 0; l < NEIGHBOUR_CELLS.length; l++) {
    renderPair(src, spec, region, l, rng, out, offset + l * pairFloats);
    labels[labelOffset + l] = l;
  }
}
