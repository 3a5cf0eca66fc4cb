// A pipeline says, as plain JSON-able data, which inputs a method wants for
// each sample: augmented views, jigsaw sets, rotations, relative-location
// pairs. Plain data because the loader ships it to worker threads, which
// cannot receive functions. `fillSample` renders one sample straight into its
// slots of a preallocated batch.
import type { ImageSet } from './image_set.js';
import { NEIGHBOUR_CELLS, renderAllNeighbours, renderJigsaw, renderRelativeLocation, type JigsawSpec, type RelativeLocationSpec } from './jigsaw.js';
import type { Rng } from '../core/random.js';
import { rotate90 } from './transforms.js';
import { renderView, writeNormalizedBox, type SourceImage, type ViewSpec } from './views.js';

export interface RotationSpec {
  view: ViewSpec;
  /** All four rotations per sample (RotNet), or one drawn at random. */
  all: boolean;
}

export type OutputSpec =
  /** `count` independent views: tensor [B*count, size, size, C], aux `<name>.box` [B*count, 4] and `<name>.flip`. */
  | { kind: 'view'; name: string; count?: number; view: ViewSpec }
  /** tensor [B*grid², p, p, C]; aux `<name>.perm` (cell of each slot) and `<name>.box`; with a permutation set, `<name>.label` [B] (its index). */
  | { kind: 'jigsaw'; name: string; jigsaw: JigsawSpec }
  /** tensor [B*4 or B, size, size, C]; aux `<name>.label` (quarter turns CCW). */
  | { kind: 'rotation'; name: string; rotation: RotationSpec }
  /** tensor [B*2, p, p, C] (centre, neighbour); aux `<name>.label` [B] (0-7); with `allNeighbours`, [B*16] and [B*8]. */
  | { kind: 'relative-location'; name: string; relativeLocation: RelativeLocationSpec };

export interface PipelineSpec {
  outputs: OutputSpec[];
}

/** A batch of images, NHWC float32. */
export interface NhwcArray {
  data: Float32Array;
  shape: [number, number, number, number];
}

export interface Batch {
  epoch: number;
  /** Position of this batch in its epoch. */
  index: number;
  /** Dataset index of each sample. */
  indices: Int32Array;
  /** Dataset label of each sample (-1 when unlabeled). */
  labels: Int32Array;
  tensors: Record<string, NhwcArray>;
  aux: Record<string, Int32Array | Float32Array>;
}

/** Images one sample contributes to an output. */
export function imagesPerSample(output: OutputSpec): number {
  switch (output.kind) {
    case 'view':
      return output.count ?? 1;
    case 'jigsaw':
      return output.jigsaw.grid * output.jigsaw.grid;
    case 'rotation':
      return output.rotation.all ? 4 : 1;
    case 'relative-location':
      return output.relativeLocation.allNeighbours ? 2 * NEIGHBOUR_CELLS.length : 2;
  }
}

function outputSide(output: OutputSpec): number {
  switch (output.kind) {
    case 'view':
      return output.view.size;
    case 'jigsaw':
      return output.jigsaw.patchSize;
    case 'rotation':
      return output.rotation.view.size;
    case 'relative-location':
      return output.relativeLocation.patchSize;
  }
}

/** Images (views, patches) per sample over the whole pipeline: the unit of views/s. */
export function viewsPerSample(spec: PipelineSpec): number {
  return spec.outputs.reduce((n, o) => n + imagesPerSample(o), 0);
}

/** Allocates an empty batch of `n` samples for `spec` on `channels`-channel images. */
export function allocateBatch(spec: PipelineSpec, n: number, channels: number, epoch: number, index: number): Batch {
  const tensors: Batch['tensors'] = {};
  const aux: Batch['aux'] = {};
  const names = new Set<string>();
  for (const o of spec.outputs) {
    if (names.has(o.name)) throw new Error(`pipeline: two outputs are named '${o.name}'`);
    names.add(o.name);
    const per = imagesPerSample(o);
    const side = outputSide(o);
    tensors[o.name] = { data: new Float32Array(n * per * side * side * channels), shape: [n * per, side, side, channels] };
    if (o.kind === 'view' || o.kind === 'jigsaw') aux[`${o.name}.box`] = new Float32Array(n * per * 4);
    if (o.kind === 'view') aux[`${o.name}.flip`] = new Int32Array(n * per);
    if (o.kind === 'jigsaw') aux[`${o.name}.perm`] = new Int32Array(n * per);
    if (o.kind === 'jigsaw' && o.jigsaw.permutations) aux[`${o.name}.label`] = new Int32Array(n);
    if (o.kind === 'rotation') aux[`${o.name}.label`] = new Int32Array(n * per);
    if (o.kind === 'relative-location') aux[`${o.name}.label`] = new Int32Array((n * per) / 2);
  }
  return { epoch, index, indices: new Int32Array(n), labels: new Int32Array(n), tensors, aux };
}

/** Every buffer of a batch, for postMessage's transfer list. */
export function batchBuffers(batch: Batch): ArrayBuffer[] {
  const out: ArrayBuffer[] = [batch.indices.buffer as ArrayBuffer, batch.labels.buffer as ArrayBuffer];
  for (const t of Object.values(batch.tensors)) out.push(t.data.buffer as ArrayBuffer);
  for (const a of Object.values(batch.aux)) out.push(a.buffer as ArrayBuffer);
  return out;
}

let rotationScratch = new Float32Array(0);

/** The source view of image `i` of a set. */
export function sourceImage(set: ImageSet, i: number): SourceImage {
  const bytes = set.height * set.width * set.channels;
  return { data: set.images, offset: i * bytes, width: set.width, height: set.height, channels: set.channels };
}

/**
 * Renders every output for one sample into slot `slot` of `batch`. Each output
 * draws from its own split of `rng`, so adding an output to a pipeline leaves
 * the others' augmentations unchanged.
 */
export function fillSample(spec: PipelineSpec, batch: Batch, slot: number, src: SourceImage, rng: Rng): void {
  const c = src.channels;
  spec.outputs.forEach((o, k) => {
    const r = rng.split(k);
    const per = imagesPerSample(o);
    const side = outputSide(o);
    const floats = side * side * c;
    const tensor = batch.tensors[o.name]!.data;
    const first = slot * per;
    switch (o.kind) {
      case 'view': {
        const boxes = batch.aux[`${o.name}.box`] as Float32Array;
        const flips = batch.aux[`${o.name}.flip`] as Int32Array;
        for (let v = 0; v < per; v++) {
          const placed = renderView(src, o.view, r, tensor, (first + v) * floats);
          writeNormalizedBox(placed.box, src, boxes, (first + v) * 4);
          flips[first + v] = placed.flipped ? 1 : 0;
        }
        break;
      }
      case 'jigsaw': {
        const perm = batch.aux[`${o.name}.perm`] as Int32Array;
        const boxes = batch.aux[`${o.name}.box`] as Float32Array;
        const labels = batch.aux[`${o.name}.label`] as Int32Array | undefined;
        renderJigsaw(src, o.jigsaw, r, tensor, first * floats, perm, first, boxes, first * 4, labels, slot);
        break;
      }
      case 'rotation': {
        if (rotationScratch.length < floats) rotationScratch = new Float32Array(floats);
        renderView(src, o.rotation.view, r, rotationScratch, 0);
        const labels = batch.aux[`${o.name}.label`] as Int32Array;
        for (let v = 0; v < per; v++) {
          const turns = o.rotation.all ? v : r.int(0, 3);
          rotate90(rotationScratch, 0, tensor, (first + v) * floats, side, c, turns);
          labels[first + v] = turns;
        }
        break;
      }
      case 'relative-location': {
        const labels = batch.aux[`${o.name}.label`] as Int32Array;
        if (o.relativeLocation.allNeighbours) renderAllNeighbours(src, o.relativeLocation, r, tensor, first * floats, labels, first / 2);
        else labels[slot] = renderRelativeLocation(src, o.relativeLocation, r, tensor, first * floats);
        break;
      }
    }
  });
}

/**
 * Builds batch `index` of `epoch` from the dataset indices `indices`; sample
 * i's generator is root.split(epoch).split(dataset index), which is what makes
 * batches independent of the worker that builds them.
 */
export function buildBatch(
  set: ImageSet,
  spec: PipelineSpec,
  root: Rng,
  epoch: number,
  index: number,
  indices: ArrayLike<number>,
): Batch {
  const batch = allocateBatch(spec, indices.length, set.channels, epoch, index);
  const epochRng = root.split(epoch);
  for (let s = 0; s < indices.length; s++) {
    const i = indices[s]!;
    if (!(i >= 0 && i < set.count)) throw new Error(`batch ${index}: dataset index ${i} is out of range (0-${set.count - 1})`);
    batch.indices[s] = i;
    batch.labels[s] = set.labels[i]!;
    fillSample(spec, batch, s, sourceImage(set, i), epochRng.split(i));
  }
  return batch;
}
