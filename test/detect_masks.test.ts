// src/detect/masks.ts: pasting masks into boxes with grid_sample's
// half-pixel convention (which pixels a full mask fills, a hand-computed
// bilinear case, the corner loss of large boxes), and mask targets by
// aligned RoIAlign (detectron2's own test values, the -0.5 shift, the border
// rule, agreement with the backend's roiAlignHost).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { roiAlignHost } from '../src/backend/roi_align.js';
import { maskTargets, pasteMasks, roiAlignSingle } from '../src/detect/masks.js';
import { assertClose } from './helpers.js';

const f32 = (...v: number[]) => Float32Array.from(v);

/** The set pixels of an H x W bitmask as "x,y" strings. */
function setPixels(mask: Uint8Array, width: number): string[] {
  const out: string[] = [];
  mask.forEach((v, p) => v && out.push(`${p % width},${Math.floor(p / width)}`));
  return out;
}

function rect(x0: number, y0: number, x1: number, y1: number): string[] {
  const out: string[] = [];
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) out.push(`${x},${y}`);
  return out.sort();
}

describe('pasteMasks', () => {
  const M = 28;
  const ones = new Float32Array(M * M).fill(1);

  test('a full mask in an integer box no larger than M fills exactly the box', () => {
    // Pixel x has centre x + 0.5; the first inside the box [10, 40) is 10.5, at
    // grid_sample coordinate (0.5 / 30) 28 - 0.5 = -0.03: weight 0.97 on mask
    // cell 0. Pixel 9 (centre 9.5) sits at -0.97: weight 0.03. So exactly
    // x 10..39 and y 20..49 pass 0.5.
    const [m] = pasteMasks(ones, M, f32(10, 20, 40, 50), 64, 64);
    assert.deepEqual(setPixels(m!, 64).sort(), rect(10, 20, 40, 50));
  });

  test('a fractional box: pixels whose centres are inside', () => {
    // Centres x + 0.5 in [10.2, 30.6]: x = 10..30; y + 0.5 in [20.7, 41.4]: y = 21..40.
    // Edge weights: x = 30 at 0.5 + 0.1 (28 / 20.4) = 0.64, x = 10 at 0.91; rows 21 and 40 are whole.
    const [m] = pasteMasks(ones, M, f32(10.2, 20.7, 30.6, 41.4), 64, 64);
    assert.deepEqual(setPixels(m!, 64).sort(), rect(10, 21, 31, 41));
  });

  test('a box wider and higher than 2.4 M loses its corner pixels, as in detectron2', () => {
    // Box [0, 100): pixel 0 sits at (0.5 / 100) 28 - 0.5 = -0.36, weight 0.64 per
    // axis, 0.41 at the corner; pixel 1 at -0.08, weight 0.92: 0.92 x 0.64 = 0.59.
    const [m] = pasteMasks(ones, M, f32(0, 0, 100, 100), 128, 128);
    assert.equal(m![0], 0);
    assert.equal(m![1], 1);
    assert.equal(m![128], 1);
    assert.equal(m![99 * 128 + 99], 0);
    assert.equal(m![50 * 128], 1);
    assert.equal(m!.reduce((a, b) => a + b, 0), 100 * 100 - 4);
  });

  test('bilinear weights by hand: a 2 x 2 mask with one set cell, pasted 2x', () => {
    // Box [0, 4) on a 2-cell mask: pixel x maps to x / 2 - 0.25, so cell 0 gets
    // weights 0.75, 0.75, 0.25, 0 over pixels 0..3 (pixel 0 reads zero padding
    // at -1). Values are products: 0.5625 in the top-left 2 x 2, 0.1875 beside it,
    // 0.0625 at (2, 2).
    const mask = f32(1, 0, 0, 0);
    const [half] = pasteMasks(mask, 2, f32(0, 0, 4, 4), 4, 4);
    assert.deepEqual(setPixels(half!, 4).sort(), rect(0, 0, 2, 2));
    const [low] = pasteMasks(mask, 2, f32(0, 0, 4, 4), 4, 4, 0.1);
    assert.deepEqual(setPixels(low!, 4).sort(), [...rect(0, 0, 3, 3)].filter((p) => p !== '2,2').sort());
  });

  test('several boxes, boxes outside the image, empty boxes', () => {
    const masks = new Float32Array(3 * M * M).fill(1);
    const out = pasteMasks(masks, M, f32(0, 0, 8, 8, 70, 70, 90, 90, 5, 5, 5, 9), 64, 64);
    assert.equal(out.length, 3);
    assert.deepEqual(setPixels(out[0]!, 64).sort(), rect(0, 0, 8, 8));
    assert.equal(out[1]!.reduce((a, b) => a + b, 0), 0);
    assert.equal(out[2]!.reduce((a, b) => a + b, 0), 0);
    assert.throws(() => pasteMasks(masks, M, f32(0, 0, 8, 8), 64, 64), /1 boxes need/);
  });
});

describe('maskTargets', () => {
  const H = 48;
  const W = 40;
  function boxMask(x0: number, y0: number, x1: number, y1: number): Uint8Array {
    const m = new Uint8Array(H * W);
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) m[y * W + x] = 1;
    return m;
  }

  test("detectron2's RoIAlign test: arange(25) on 5 x 5, box [1, 1, 3, 3], aligned", () => {
    // tests/layers/test_roi_align.py test_forward_output, aligned=True.
    const out = new Float32Array(16);
    roiAlignSingle(Float32Array.from({ length: 25 }, (_, i) => i), 5, 5, [1, 1, 3, 3], 4, out, 0);
    assertClose(out, [4.5, 5, 5.5, 6, 7, 7.5, 8, 8.5, 9.5, 10, 10.5, 11, 12, 12.5, 13, 13.5], { atol: 1e-6, rtol: 0 });
  });

  test('a GT bitmask equal to the RoI box gives all ones', () => {
    const t = maskTargets([boxMask(0, 0, 5, 5), boxMask(8, 8, 24, 40)], H, W, f32(8, 8, 24, 40), Int32Array.from([1]), 28);
    assert.equal(t.length, 28 * 28);
    assert.ok(t.every((v) => v === 1));
  });

  test('a RoI twice the object: bins sample pixel centres exactly', () => {
    // RoI [0, 32) x [0, 32) in 4 bins of 8 px with 8 samples per bin and axis:
    // aligned samples land on 0..31 exactly, so bin 0 reads pixels 0..7 (empty),
    // bins 1-2 read the object's 8..23; in y the object covers 8..39: bins 1-3.
    const t = maskTargets([boxMask(8, 8, 24, 40)], H, W, f32(0, 0, 32, 32), Int32Array.from([0]), 4);
    assert.deepEqual(Array.from(t), [0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0]);
  });

  test('aligned = True shifts by half a pixel', () => {
    // Column x = 8 set; RoI [8, 9) in 2 bins: aligned samples at 7.75 and 8.25
    // both read 0.75 of pixel 8 (unaligned ones at 8.25 and 8.75 would give 0.75
    // and 0.25, so [1, 0]).
    const t = maskTargets([boxMask(8, 0, 9, H)], H, W, f32(8, 10, 9, 12), Int32Array.from([0]), 2);
    assert.deepEqual(Array.from(t), [1, 1, 1, 1]);
  });

  test('border: samples down to -1 clamp to the first pixel, beyond read 0', () => {
    // All-ones 4 x 4 map, RoI x in [-2, 2), 2 bins: bin 0 samples x = -2 (out)
    // and -1 (clamped to 0): 0.5, which passes >= 0.5; bin 1 reads 1.
    const full = new Float32Array(16).fill(1);
    const raw = new Float32Array(4);
    roiAlignSingle(full, 4, 4, [-2, 0, 2, 4], 2, raw, 0);
    assertClose(raw, [0.5, 1, 0.5, 1], { atol: 1e-7, rtol: 0 });
    roiAlignSingle(full, 4, 4, [-3, 0, 1, 4], 2, raw, 0);
    assertClose(raw, [0, 1, 0, 1], { atol: 1e-7, rtol: 0 });
    const t = maskTargets([Uint8Array.from(full)], 4, 4, f32(-2, 0, 2, 4, -3, 0, 1, 4), Int32Array.from([0, 0]), 2);
    assert.deepEqual(Array.from(t), [1, 1, 1, 1, 0, 1, 0, 1]);
    assert.throws(() => maskTargets([Uint8Array.from(full)], 4, 4, f32(0, 0, 1, 1), Int32Array.from([3]), 2), /GT 3, but there are 1 GT masks/);
  });

  test("agrees with the backend's roiAlignHost on random masks and boxes", () => {
    const rng = Rng.seeded(8);
    const g = 3;
    const r = 40;
    const masks = Array.from({ length: g }, () => {
      const m = new Uint8Array(H * W);
      const [cx, cy, rad] = [rng.uniform(0, W), rng.uniform(0, H), rng.uniform(4, 20)];
      for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) m[y * W + x] = (x - cx) ** 2 + (y - cy) ** 2 < rad * rad ? 1 : 0;
      return m;
    });
    const boxes = new Float32Array(4 * r);
    const gt = new Int32Array(r);
    const rois = new Float32Array(5 * r);
    for (let i = 0; i < r; i++) {
      const x = rng.uniform(-5, W);
      const y = rng.uniform(-5, H);
      boxes.set([x, y, x + rng.uniform(0.5, 50), y + rng.uniform(0.5, 50)], 4 * i);
      gt[i] = rng.int(0, g - 1);
      rois[5 * i] = gt[i]!;
      rois.set(boxes.subarray(4 * i, 4 * i + 4), 5 * i + 1);
    }
    const data = new Float32Array(g * H * W);
    masks.forEach((m, k) => data.set(m, k * H * W));
    const reference = roiAlignHost(data, [g, H, W, 1], rois, { pooledHeight: 14, pooledWidth: 14, spatialScale: 1, samplingRatio: 0, aligned: true });
    const raw = new Float32Array(r * 14 * 14);
    for (let i = 0; i < r; i++) roiAlignSingle(masks[gt[i]!]!, H, W, boxes.subarray(4 * i, 4 * i + 4), 14, raw, i * 196);
    assertClose(raw, reference, { atol: 1e-5, rtol: 0 });
    const targets = maskTargets(masks, H, W, boxes, gt, 14);
    assert.deepEqual(Array.from(targets), Array.from(reference, (v) => (v >= 0.5 ? 1 : 0)));
    assert.ok(targets.some((v) => v === 1) && targets.some((v) => v === 0));
  });
});
