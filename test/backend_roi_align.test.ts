import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Tensor, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { RoiAlign, roiAlign, roiAlignHost, type RoiAlignSettings } from '../src/backend/roi_align.js';
import { nativeAddon } from '../src/backend/native_addon.js';
import { assertClose, countCalls, randomArray, rng, runOn, setupNative } from './helpers.js';

type Shape4 = [number, number, number, number];
const BACKENDS = ['native', 'cpu'] as const;

function settings(over: Partial<RoiAlignSettings> = {}): RoiAlignSettings {
  return { pooledHeight: 4, pooledWidth: 4, spatialScale: 1, samplingRatio: 0, aligned: true, ...over };
}

/** roiAlign's output on `backend` (native kernel on `native`, the composite on `cpu`). */
async function forwardOn(backend: string, data: Float32Array, shape: Shape4, rois: Float32Array, s: RoiAlignSettings) {
  const [y] = await runOn(backend, () => roiAlign(tf.tensor4d(data, shape), tf.tensor2d(rois, [rois.length / 5, 5]), s));
  return y!;
}

/** d/dfeatures of sum(roiAlign(features) * dy) on `backend`. */
async function backwardOn(backend: string, data: Float32Array, shape: Shape4, rois: Float32Array, s: RoiAlignSettings, dy: Float32Array) {
  const [dx] = await runOn(backend, () => {
    const boxes = tf.tensor2d(rois, [rois.length / 5, 5]) as Tensor2D;
    const weights = tf.tensor(dy);
    return tf.grad((f) => tf.sum(tf.mul(tf.reshape(roiAlign(f as Tensor4D, boxes, s), [-1]), weights)))(tf.tensor4d(data, shape));
  });
  return dx!;
}

// detectron2 tests/layers/test_roi_align.py, test_forward_output: a 5x5 map of 0..24, box [1,1,3,3], 4x4 bins.
const arange25 = Float32Array.from({ length: 25 }, (_, i) => i);
const unalignedRows = [7.5, 8, 8.5, 9, 10, 10.5, 11, 11.5, 12.5, 13, 13.5, 14, 15, 15.5, 16, 16.5];
const alignedRows = [4.5, 5, 5.5, 6, 7, 7.5, 8, 8.5, 9.5, 10, 10.5, 11, 12, 12.5, 13, 13.5];

/** cv2.resize(INTER_LINEAR) to half size: with half-pixel centres each output is its 2x2 block's mean. */
function downscale2x(data: Float32Array, h: number, w: number): Float32Array {
  const out = new Float32Array((h / 2) * (w / 2));
  for (let y = 0; y < h / 2; y++)
    for (let x = 0; x < w / 2; x++) {
      const at = (dy: number, dx: number) => data[(2 * y + dy) * w + 2 * x + dx]!;
      out[y * (w / 2) + x] = (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4;
    }
  return out;
}

// A map of two images and boxes of every awkward kind, in image pixels (x0, y0, x1, y1).
const SHAPE_H = 9;
const SHAPE_W = 11;
function awkwardRois(scale: number, seed: number): Float32Array {
  const W = SHAPE_W / scale;
  const H = SHAPE_H / scale;
  const boxes: number[][] = [
    [0, 1.3, 2.1, 0.6 * W, 0.7 * H], // inside
    [1, 0, 0, W, H], // the whole map, edges on the border
    [0, -0.3 * W, -0.2 * H, 0.4 * W, 0.5 * H], // partly outside, top left
    [1, 0.6 * W, 0.5 * H, 1.5 * W, 1.4 * H], // partly outside, bottom right
    [0, -3 * W, -3 * H, -2 * W, -2 * H], // entirely outside: every sample beyond -1
    [1, 0.41 * W, 0.37 * H, 0.43 * W, 0.4 * H], // tiny
    [0, 0.5 * W, 0.2 * H, 0.5 * W, 0.8 * H], // zero width
    [1, W - 0.2, H - 0.3, W + 0.4, H + 0.1], // a sliver just past the far edge
  ];
  const r = rng(seed);
  for (let i = 0; i < 6; i++) {
    const x0 = (r() * 1.2 - 0.1) * W;
    const y0 = (r() * 1.2 - 0.1) * H;
    boxes.push([i % 2, x0, y0, x0 + r() * 0.8 * W, y0 + r() * 0.8 * H]);
  }
  return Float32Array.from(boxes.flat());
}

const variants: Array<{ name: string; s: RoiAlignSettings }> = [
  { name: 'aligned 7x7 adaptive, scale 1/2', s: settings({ pooledHeight: 7, pooledWidth: 7, spatialScale: 0.5 }) },
  { name: 'unaligned 3x5 adaptive', s: settings({ pooledHeight: 3, pooledWidth: 5, aligned: false }) },
  { name: 'aligned 2x3 sampling 2, scale 1/4', s: settings({ pooledHeight: 2, pooledWidth: 3, samplingRatio: 2, spatialScale: 0.25 }) },
  { name: 'unaligned 4x4 sampling 3, scale 1/2', s: settings({ samplingRatio: 3, aligned: false, spatialScale: 0.5 }) },
];

describe('roiAlign', () => {
  before(setupNative);

  test('the native backend has the kernel and tfjs-cpu does not (so cpu runs the composite)', () => {
    assert.ok(tf.getKernel(RoiAlign, 'native'));
    assert.equal(tf.getKernel(RoiAlign, 'cpu'), undefined);
  });

  for (const [aligned, rows] of [[false, unalignedRows], [true, alignedRows]] as const) {
    test(`detectron2's 5x5 arange case, aligned=${aligned}`, async () => {
      const rois = Float32Array.of(0, 1, 1, 3, 3);
      const s = settings({ aligned });
      for (const backend of BACKENDS) assertClose(await forwardOn(backend, arange25, [1, 5, 5, 1], rois, s), rows, { atol: 1e-5, rtol: 0 }, backend);
      assertClose(roiAlignHost(arange25, [1, 5, 5, 1], rois, s), rows, { atol: 1e-5, rtol: 0 }, 'host');
    });
  }

  test("detectron2's resize case: a 2x downscaled map and a halved box give the same 5x5 output", async () => {
    const input = randomArray(30 * 30, 11, 0, 100);
    const half = downscale2x(input, 30, 30);
    const s = settings({ pooledHeight: 5, pooledWidth: 5 });
    const full = Float32Array.of(0, 10, 10, 20, 20);
    const halved = Float32Array.of(0, 5, 5, 10, 10);
    for (const backend of BACKENDS) {
      const a = await forwardOn(backend, input, [1, 30, 30, 1], full, s);
      const b = await forwardOn(backend, half, [1, 15, 15, 1], halved, s);
      assertClose(b, a, { atol: 1e-4, rtol: 0 }, backend);
      // Not vacuous: the box's content varies.
      assert.ok(Math.max(...a) - Math.min(...a) > 10, `${backend}: the pooled values are all alike`);
    }
    assertClose(roiAlignHost(half, [1, 15, 15, 1], halved, s), roiAlignHost(input, [1, 30, 30, 1], full, s), { atol: 1e-4, rtol: 0 }, 'host');
  });

  test('edges: samples in [-1, 0] and [W-1, W] clamp to the border pixel, samples beyond contribute 0', async () => {
    // A 1x4 map [1, 2, 3, 4]; aligned boxes 4 px wide, one sample per bin, at x = -3, -2, -1, 0 and 3, 4, 5, 6.
    const map = Float32Array.of(1, 2, 3, 4);
    const rois = Float32Array.of(0, -3, 0, 1, 1, 0, 3, 0, 7, 1);
    const expected = [0, 0, 1, 1, 4, 4, 0, 0];
    const s = settings({ pooledHeight: 1, pooledWidth: 4 });
    for (const backend of BACKENDS) assert.deepEqual(Array.from(await forwardOn(backend, map, [1, 1, 4, 1], rois, s)), expected, backend);
    assert.deepEqual(Array.from(roiAlignHost(map, [1, 1, 4, 1], rois, s)), expected, 'host');
  });

  test("detectron2's empty box gives zeros and a zero gradient", async () => {
    const img = randomArray(25, 3, 0, 1);
    const rois = Float32Array.of(0, 3, 4, 5, 4);
    const s = settings({ pooledHeight: 7, pooledWidth: 7 });
    for (const backend of BACKENDS) {
      assert.deepEqual(Array.from(await forwardOn(backend, img, [1, 5, 5, 1], rois, s)), new Array(49).fill(0), backend);
      const dx = await backwardOn(backend, img, [1, 5, 5, 1], rois, s, new Float32Array(49).fill(1));
      assert.deepEqual(Array.from(dx), new Array(25).fill(0), backend);
    }
  });

  test('no RoIs: an empty [0,PH,PW,C] output and a zero gradient on both paths', async () => {
    const data = randomArray(2 * 4 * 5 * 3, 5);
    for (const backend of BACKENDS) {
      await tf.setBackend(backend);
      const y = roiAlign(tf.tensor4d(data, [2, 4, 5, 3]), tf.zeros([0, 5]) as Tensor2D, settings({ pooledHeight: 2, pooledWidth: 3 }));
      assert.deepEqual(y.shape, [0, 2, 3, 3], backend);
      y.dispose();
      const dx = await backwardOn(backend, data, [2, 4, 5, 3], new Float32Array(0), settings({ pooledHeight: 2, pooledWidth: 3 }), new Float32Array(0));
      assert.deepEqual(Array.from(dx), new Array(data.length).fill(0), backend);
    }
  });

  test('a batch index outside the batch is an error on every path', async () => {
    const data = randomArray(2 * 4 * 4 * 2, 6);
    const rois = Float32Array.of(2, 0, 0, 2, 2);
    for (const backend of BACKENDS) await assert.rejects(forwardOn(backend, data, [2, 4, 4, 2], rois, settings()), /batch index/, backend);
    assert.throws(() => roiAlignHost(data, [2, 4, 4, 2], rois, settings()), /batch index/);
  });

  for (const [v, { name, s }] of variants.entries()) {
    for (const c of [1, 3, 8, 19]) {
      test(`native kernel, composite and host agree, forward and backward: ${name}, C=${c}`, async () => {
        const shape: Shape4 = [2, SHAPE_H, SHAPE_W, c];
        const data = randomArray(shape.reduce((a, b) => a * b), 100 * v + c);
        const rois = awkwardRois(s.spatialScale, v);
        const outSize = (rois.length / 5) * s.pooledHeight * s.pooledWidth * c;
        const dy = randomArray(outSize, 200 * v + c);
        const forwardCalls = countCalls('roiAlign');
        const backwardCalls = countCalls('roiAlignBackward');
        const native = await forwardOn('native', data, shape, rois, s);
        const composite = await forwardOn('cpu', data, shape, rois, s);
        assert.equal(forwardCalls(), 1, 'the native forward kernel ran once');
        assertClose(native, composite, { atol: 1e-5, rtol: 1e-5 }, 'forward');
        assertClose(roiAlignHost(data, shape, rois, s), native, { atol: 1e-5, rtol: 1e-5 }, 'host forward');
        assert.ok(native.some((x) => x !== 0) && native.some((x) => x === 0), 'some bins see the map and some (outside, empty) do not');

        const nativeDx = await backwardOn('native', data, shape, rois, s, dy);
        const compositeDx = await backwardOn('cpu', data, shape, rois, s, dy);
        assert.equal(backwardCalls(), 1, 'the native backward kernel ran once');
        assertClose(nativeDx, compositeDx, { atol: 1e-5, rtol: 1e-5 }, 'backward');
        assert.ok(nativeDx.some((x) => Math.abs(x) > 1e-3), 'the gradient is not all zero');
      });
    }
  }

  for (const backend of BACKENDS) {
    test(`${backend}: the gradient w.r.t. the features matches central finite differences at every coordinate`, async () => {
      await tf.setBackend(backend);
      const s = settings({ pooledHeight: 3, pooledWidth: 2, spatialScale: 0.5 });
      const shape: Shape4 = [2, 5, 6, 3];
      const rois = Float32Array.of(0, 1, 2, 9, 8, 1, -2, 0.5, 7, 11, 1, 4.2, 3.3, 5.1, 6, 0, 6, 6, 14, 12);
      const boxes = tf.tensor2d(rois, [4, 5]);
      const w = tf.tensor4d(randomArray(4 * 3 * 2 * 3, 21), [4, 3, 2, 3]);
      const loss = (f: Tensor) => tf.sum(tf.mul(roiAlign(f as Tensor4D, boxes as Tensor2D, s), w));
      const base = randomArray(shape.reduce((a, b) => a * b), 22);
      const analytic = tf.tidy(() => tf.grad(loss)(tf.tensor4d(base, shape)).dataSync() as Float32Array);
      const eps = 1e-2;
      const at = (i: number, delta: number) =>
        tf.tidy(() => {
          const v = Float32Array.from(base);
          v[i] = v[i]! + delta;
          return loss(tf.tensor4d(v, shape)).dataSync()[0]!;
        });
      let touched = 0;
      for (let i = 0; i < base.length; i++) {
        const numeric = (at(i, eps) - at(i, -eps)) / (2 * eps);
        if (numeric !== 0) touched++;
        assert.ok(Math.abs(analytic[i]! - numeric) <= 1e-3 + 1e-2 * Math.abs(numeric), `at ${i}: autograd ${analytic[i]}, finite difference ${numeric}`);
      }
      assert.ok(touched > base.length / 4, `only ${touched} of ${base.length} features reach the loss`);
      tf.dispose([boxes, w]);
    });
  }

  test('native backward is bit-identical run to run and across thread counts', async () => {
    const shape: Shape4 = [3, 16, 16, 40];
    const r = rng(31);
    const rois = new Float32Array(300 * 5);
    for (let i = 0; i < 300; i++) {
      const x0 = r() * 60 - 4;
      const y0 = r() * 60 - 4;
      rois.set([i % 3, x0, y0, x0 + r() * 30, y0 + r() * 30], i * 5);
    }
    const s = settings({ pooledHeight: 7, pooledWidth: 7, spatialScale: 0.25 });
    const data = randomArray(shape.reduce((a, b) => a * b), 32);
    const dy = randomArray(300 * 49 * 40, 33);
    const addon = nativeAddon();
    const threads = addon.info().threads;
    try {
      const first = await backwardOn('native', data, shape, rois, s, dy);
      const second = await backwardOn('native', data, shape, rois, s, dy);
      addon.setThreads(1);
      const oneThread = await backwardOn('native', data, shape, rois, s, dy);
      assert.ok(first.some((x) => x !== 0));
      assert.deepEqual(Buffer.from(second.buffer), Buffer.from(first.buffer), 'two runs differ');
      assert.deepEqual(Buffer.from(oneThread.buffer), Buffer.from(first.buffer), 'one thread differs from the default');
    } finally {
      addon.setThreads(threads);
    }
  });
});
