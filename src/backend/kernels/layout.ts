// Native layout kernels: Transpose, Concat, Slice, SplitV, PadV2, Tile and GatherV2
// (along axis 0), all copies in the addon. float32 only. Cases tfjs-cpu does without copying (a
// contiguous slice is a view, a one-input concat is the input) are left to it.
import * as tf from '../../core/tf.js';
import type { KernelConfig } from '@tensorflow/tfjs-core';
import { nativeKernel, sizeOf } from '../native_backend.js';

const transpose = nativeKernel(tf.Transpose, ({ inputs, attrs, backend }) => {
  const x = inputs.x!;
  const xv = backend.floats(x);
  if (!xv) return null;
  const perm = attrs.perm as number[];
  const out = backend.output(perm.map((p) => x.shape[p]!));
  backend.addon.transpose(xv, x.shape, perm, out.values);
  return out.info;
});

const concat = nativeKernel(tf.Concat, ({ inputs, attrs, backend }) => {
  const xs = Object.values(inputs).filter((x) => sizeOf(x!.shape) > 0);
  const values = xs.map((x) => backend.floats(x!));
  if (xs.length < 2 || values.some((v) => v === null)) return null;
  const axis = tf.util.parseAxisParam(attrs.axis as number, xs[0]!.shape)[0]!;
  const shapes = xs.map((x) => x!.shape);
  tf.backend_util.assertParamsConsistent(shapes, axis);
  const shape = tf.backend_util.computeOutShape(shapes, axis);
  const outer = sizeOf(shape.slice(0, axis));
  const out = backend.output(shape);
  backend.addon.concat(values as Float32Array[], outer, shapes.map((s) => sizeOf(s) / outer), out.values);
  return out.info;
});

const slice = nativeKernel(tf.Slice, ({ inputs, attrs, backend }) => {
  const x = inputs.x!;
  const xv = backend.floats(x);
  if (!xv) return null;
  const [begin, size] = tf.slice_util.parseSliceParams(x, attrs.begin as number[], attrs.size as number[]);
  tf.slice_util.assertParamsValid(x, begin!, size!);
  if (tf.slice_util.isSliceContinous(x.shape, begin!, size!)) return null;
  const out = backend.output(size!);
  backend.addon.slice(xv, x.shape, begin!, size!, out.values);
  return out.info;
});

// Concat's gradient. tfjs-cpu slices each piece through an element-by-element
// loop: 240 ms for the [64, 1+4096] logits of one InfoNCE term.
const splitV = nativeKernel(tf.SplitV, ({ inputs, attrs, backend }) => {
  const x = inputs.x!;
  const xv = backend.floats(x);
  if (!xv) return null;
  const axis = tf.util.parseAxisParam(attrs.axis as number, x.shape)[0]!;
  const sizes = tf.backend_util.prepareSplitSize(x, attrs.numOrSizeSplits as number[] | number, axis);
  const begin = x.shape.map(() => 0);
  return sizes.map((length) => {
    const size = [...x.shape];
    size[axis] = length;
    const out = backend.output(size);
    backend.addon.slice(xv, x.shape, begin, size, out.values);
    begin[axis]! += length;
    return out.info;
  });
});

const pad = nativeKernel(tf.PadV2, ({ inputs, attrs, backend }) => {
  const x = inputs.x!;
  const xv = backend.floats(x);
  if (!xv) return null;
  const paddings = attrs.paddings as Array<[number, number]>;
  const out = backend.output(paddings.map(([before, after], d) => before + x.shape[d]! + after));
  const before = paddings.map((p) => p[0]);
  const after = paddings.map((p) => p[1]);
  backend.addon.pad(xv, x.shape, before, after, Number(attrs.constantValue), out.values);
  return out.info;
});

const tile = nativeKernel(tf.Tile, ({ inputs, attrs, backend }) => {
  const x = inputs.x!;
  const xv = backend.floats(x);
  const reps = attrs.reps as number[];
  if (!xv || reps.length !== x.shape.length) return null;
  const out = backend.output(x.shape.map((s, d) => s * reps[d]!));
  backend.addon.tile(xv, x.shape, reps, out.values);
  return out.info;
});

// Shuffle-BN's permutations, the memory bank's lookups and DenseCL's
// per-image correspondences (batchDims 1). tfjs-cpu gathers element by
// element: ~55 ms for one [128, 32, 32, 1] batch of images, 32 ms for
// DenseCL's [256, 16, 128] keys. Taken when the gathered axis is the first
// after the batch dimensions: x is then rows of `inner` values, and batch
// b's index i is row b * axisDim + i.
const gather = nativeKernel(tf.GatherV2, ({ inputs, attrs, backend }) => {
  const x = inputs.x!;
  const indices = inputs.indices!;
  const xv = backend.floats(x);
  const iv = backend.data.get(indices.dataId).values;
  const batchDims = (attrs.batchDims as number | undefined) ?? 0;
  const axis = x.shape.length === 0 ? -1 : tf.util.parseAxisParam(attrs.axis as number, x.shape)[0]!;
  if (!xv || !(iv instanceof Int32Array) || axis !== batchDims) return null;
  const batch = sizeOf(x.shape.slice(0, batchDims));
  const axisDim = x.shape[axis]!;
  const inner = sizeOf(x.shape.slice(axis + 1));
  const out = backend.output([...x.shape.slice(0, axis), ...indices.shape.slice(batchDims), ...x.shape.slice(axis + 1)]);
  if (inner === 0) return out.info;
  let rows = iv;
  if (batchDims > 0) {
    const perBatch = iv.length / batch;
    rows = new Int32Array(iv.length);
    for (let j = 0; j < iv.length; j++) {
      const i = iv[j]!;
      if (!(i >= 0 && i < axisDim)) throw new Error(`gather: index ${i} is not in [0, ${axisDim})`);
      rows[j] = Math.floor(j / perBatch) * axisDim + i;
    }
  }
  backend.addon.gatherRows(xv, inner, rows, out.values);
  return out.info;
});

export const kernels: KernelConfig[] = [transpose, concat, slice, splitV, pad, tile, gather];
