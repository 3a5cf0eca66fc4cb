// Views and pretext inputs: recipe shapes, jigsaw patches from their cells,
// rotation labels, relative-location labels.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { arrayImageSet } from '../src/data/image_set.js';
import { NEIGHBOUR_CELLS, renderJigsaw, renderRelativeLocation } from '../src/data/jigsaw.js';
import { buildBatch, viewsPerSample } from '../src/data/pipeline.js';
import { Rng } from '../src/core/random.js';
import {
  detcoPipeline,
  FASHION_MNIST_STATS,
  jigsawSpec,
  multiCropPipeline,
  relativeLocationPipeline,
  rotationPipeline,
  twoViewPipeline,
} from '../src/data/recipes.js';
import { rotate90 } from '../src/data/transforms.js';
import type { SourceImage } from '../src/data/views.js';

/** An RGB image whose red channel is x / (W-1) and green channel y / (H-1): patches tell where they came from. */
function coordinateImage(w: number, h: number): SourceImage {
  const data = new Float32Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      data[(y * w + x) * 3] = x / (w - 1);
      data[(y * w + x) * 3 + 1] = y / (h - 1);
    }
  }
  return { data, offset: 0, width: w, height: h, channels: 3 };
}

const noColour = { jitter: null, grayscaleP: 0, blur: null, solarizeP: 0, normalize: null };

function tinySet(count: number, side: number, channels: number) {
  const r = Rng.seeded(9);
  const images = Uint8Array.from({ length: count * side * side * channels }, () => r.int(0, 255));
  return arrayImageSet(images, { count, height: side, width: side, channels }, Array.from({ length: count }, (_, i) => i % 10));
}

describe('recipes', () => {
  test('two-view, BYOL, multi-crop and DetCo batches have the documented shapes and ranges', () => {
    const set = tinySet(6, 28, 1);
    const root = Rng.seeded(1);
    for (const recipe of ['mocov2', 'simclr', 'byol'] as const) {
      const b = buildBatch(set, twoViewPipeline(recipe), root, 0, 0, [0, 1, 2, 3]);
      for (const name of ['view1', 'view2']) {
        assert.deepEqual(b.tensors[name]!.shape, [4, 32, 32, 1], `${recipe} ${name}`);
        for (const v of b.tensors[name]!.data) assert.ok(v >= 0 && v <= 1, `${recipe}: ${v} outside [0, 1] without normalisation`);
        const boxes = b.aux[`${name}.box`]!;
        for (let i = 0; i < boxes.length; i++) assert.ok(boxes[i]! >= 0 && boxes[i]! <= 1);
      }
      assert.notDeepEqual(b.tensors.view1!.data, b.tensors.view2!.data);
    }
    const mc = buildBatch(set, multiCropPipeline({ localCount: 4 }), root, 0, 0, [0, 1]);
    assert.deepEqual(mc.tensors.global!.shape, [4, 32, 32, 1]);
    assert.deepEqual(mc.tensors.local!.shape, [8, 16, 16, 1]);
    const detco = detcoPipeline({ normalize: FASHION_MNIST_STATS });
    assert.equal(viewsPerSample(detco), 20);
    const d = buildBatch(set, detco, root, 0, 0, [0, 1, 2]);
    assert.deepEqual(d.tensors.view1!.shape, [3, 32, 32, 1]);
    assert.deepEqual(d.tensors.jigsaw2!.shape, [27, 16, 16, 1]);
    assert.equal(d.aux['jigsaw1.perm']!.length, 27);
    let mean = 0;
    for (const v of d.tensors.view1!.data) mean += v;
    assert.ok(Math.abs(mean / d.tensors.view1!.data.length) < 3, 'normalised values are centred');
  });

  test('an RGB source keeps three channels; BYOL solarizes only its second view (p 0.2, 0.4 on small views)', () => {
    const set = tinySet(2, 64, 3);
    const b = buildBatch(set, twoViewPipeline('byol', { size: 48 }), Rng.seeded(2), 0, 0, [0, 1]);
    assert.deepEqual(b.tensors.view1!.shape, [2, 48, 48, 3]);
    const solarizeP = (size: number) => twoViewPipeline('byol', { size }).outputs.map((o) => (o.kind === 'view' ? o.view.solarizeP : null));
    assert.deepEqual(solarizeP(224), [0, 0.2]);
    assert.deepEqual(solarizeP(32), [0, 0.4]);
  });
});

describe('jigsaw', () => {
  test('each patch comes from its grid cell, and the permutation is returned', () => {
    const src = coordinateImage(60, 48);
    const spec = { ...jigsawSpec({ size: 60, patchSize: 8 }), photometric: noColour };
    const r = Rng.seeded(5);
    for (let trial = 0; trial < 20; trial++) {
      const out = new Float32Array(9 * 8 * 8 * 3);
      const perm = new Int32Array(9);
      const boxes = new Float32Array(36);
      const region = renderJigsaw(src, spec, r, out, 0, perm, 0, boxes);
      assert.deepEqual([...perm].sort(), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
      for (let k = 0; k < 9; k++) {
        const cell = perm[k]!;
        const cx0 = region.x + (cell % 3) * (region.w / 3);
        const cy0 = region.y + Math.floor(cell / 3) * (region.h / 3);
        // Every pixel's encoded (x, y) lies inside the cell (half a pixel of bilinear slack).
        for (let p = 0; p < 64; p++) {
          const x = out[(k * 64 + p) * 3]! * 59;
          const y = out[(k * 64 + p) * 3 + 1]! * 47;
          assert.ok(x >= cx0 - 0.5 && x <= cx0 + region.w / 3 + 0.5, `slot ${k} (cell ${cell}): x ${x} outside [${cx0}, ${cx0 + region.w / 3}]`);
          assert.ok(y >= cy0 - 0.5 && y <= cy0 + region.h / 3 + 0.5, `slot ${k} (cell ${cell}): y ${y} outside the cell`);
        }
        const [bx0, by0, bx1, by1] = boxes.subarray(4 * k, 4 * k + 4);
        assert.ok(bx0! * 60 >= cx0 - 1e-6 && bx1! * 60 <= cx0 + region.w / 3 + 1e-6);
        assert.ok(by0! * 48 >= cy0 - 1e-6 && by1! * 48 <= cy0 + region.h / 3 + 1e-6);
      }
    }
  });

  test('without shuffling, slot k is cell k', () => {
    const src = coordinateImage(30, 30);
    const perm = new Int32Array(9);
    const spec = { ...jigsawSpec({ patchSize: 6 }), shuffle: false };
    renderJigsaw(src, spec, Rng.seeded(1), new Float32Array(9 * 36 * 3), 0, perm, 0);
    assert.deepEqual([...perm], [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  });
});

describe('rotation', () => {
  test('labels match the rotation applied', () => {
    const set = tinySet(3, 28, 1);
    const b = buildBatch(set, rotationPipeline({ size: 20 }), Rng.seeded(3), 0, 0, [0, 1, 2]);
    const t = b.tensors.rotation!;
    assert.deepEqual(t.shape, [12, 20, 20, 1]);
    const labels = b.aux['rotation.label']!;
    assert.deepEqual([...labels], [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]);
    const n = 400;
    for (let s = 0; s < 3; s++) {
      for (let k = 0; k < 4; k++) {
        const expected = new Float32Array(n);
        rotate90(t.data, s * 4 * n, expected, 0, 20, 1, labels[s * 4 + k]!);
        assert.deepEqual(t.data.subarray((s * 4 + k) * n, (s * 4 + k + 1) * n), expected);
      }
    }
    const single = buildBatch(set, rotationPipeline({ size: 20, all: false }), Rng.seeded(3), 0, 0, [0, 1, 2]);
    assert.deepEqual(single.tensors.rotation!.shape, [3, 20, 20, 1]);
    for (const l of single.aux['rotation.label']!) assert.ok(l >= 0 && l <= 3);
  });
});

describe('relative location', () => {
  test('the label says where the neighbour sits relative to the centre', () => {
    const src = coordinateImage(64, 64);
    const spec = relativeLocationPipeline({ size: 64, patchSize: 8 }).outputs[0]!;
    assert.equal(spec.kind, 'relative-location');
    const rl = spec.kind === 'relative-location' ? { ...spec.relativeLocation, photometric: noColour } : null!;
    const r = Rng.seeded(8);
    const labels = new Set<number>();
    for (let trial = 0; trial < 60; trial++) {
      const out = new Float32Array(2 * 64 * 3);
      const boxes = new Float32Array(8);
      const label = renderRelativeLocation(src, rl, r, out, 0, boxes);
      labels.add(label);
      const cell = NEIGHBOUR_CELLS[label]!;
      const [dr, dc] = [Math.floor(cell / 3) - 1, (cell % 3) - 1];
      const centre = (k: number, ch: number) => {
        let s = 0;
        for (let p = 0; p < 64; p++) s += out[(k * 64 + p) * 3 + ch]!;
        return s / 64;
      };
      // Offsets in pixels, read from the patches' content. A neighbour in the
      // same column may still be shifted by the sub-crop jitter, at most a
      // third of a cell; a neighbour beside it is at least two thirds away.
      const dx = (centre(1, 0) - centre(0, 0)) * 63;
      const dy = (centre(1, 1) - centre(0, 1)) * 63;
      const cellW = ((boxes[2]! - boxes[0]!) * 64) / rl.cellFraction;
      const cellH = ((boxes[3]! - boxes[1]!) * 64) / rl.cellFraction;
      for (const [d, want, cellSide, axis] of [[dx, dc, cellW, 'x'], [dy, dr, cellH, 'y']] as const) {
        if (want === 0) assert.ok(Math.abs(d) <= cellSide / 3 + 0.5, `label ${label}: ${axis} offset ${d} too large`);
        else assert.ok(Math.sign(d) === want && Math.abs(d) >= (2 * cellSide) / 3 - 0.5, `label ${label}: ${axis} offset ${d}`);
      }
    }
    assert.equal(labels.size, 8, 'all eight labels occur');
  });
});
