// Transform invariants: shapes, value ranges, boxes in bounds, and the
// algebra (two flips, four quarter turns) that catches off-by-one indexing.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Rng } from '../src/core/random.js';
import {
  adjustHue,
  colorJitter,
  flipHorizontal,
  gaussianBlur,
  normalize,
  resizedCrop,
  rotate90,
  sampleResizedCropBox,
  solarize,
  toGrayscale,
} from '../src/data/transforms.js';

function randomImage(w: number, h: number, c: number, seed: number): Float32Array {
  const r = Rng.seeded(seed);
  return Float32Array.from({ length: w * h * c }, () => r.next());
}

function inUnitRange(a: Float32Array, what: string): void {
  for (let i = 0; i < a.length; i++) assert.ok(a[i]! >= 0 && a[i]! <= 1, `${what}: value ${a[i]} at ${i} outside [0, 1]`);
}

describe('Rng', () => {
  test('same seed, same stream; split depends on the seed only', () => {
    const a = Rng.seeded(42);
    const b = Rng.seeded(42);
    const xs = Array.from({ length: 5 }, () => a.next());
    assert.deepEqual(xs, Array.from({ length: 5 }, () => b.next()));
    const fresh = Rng.seeded(42).split(7).next();
    assert.equal(a.split(7).next(), fresh, 'split must not depend on draws already made');
    assert.notEqual(Rng.seeded(42).split(8).next(), fresh);
    assert.notEqual(Rng.seeded(43).split(7).next(), fresh);
  });

  test('uniform, int and permutation behave', () => {
    const r = Rng.seeded(1);
    let sum = 0;
    for (let i = 0; i < 20000; i++) sum += r.next();
    assert.ok(Math.abs(sum / 20000 - 0.5) < 0.01);
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) {
      const k = r.int(2, 5);
      assert.ok(k >= 2 && k <= 5 && Number.isInteger(k));
      seen.add(k);
    }
    assert.equal(seen.size, 4);
    assert.deepEqual([...r.permutation(9)].sort(), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  });
});

describe('RandomResizedCrop', () => {
  test('boxes stay in bounds and respect scale and ratio', () => {
    const r = Rng.seeded(3);
    for (const [w, h] of [[28, 28], [32, 20], [7, 50], [224, 224]] as const) {
      for (let i = 0; i < 500; i++) {
        const box = sampleResizedCropBox(r, w, h, [0.08, 1], [3 / 4, 4 / 3]);
        assert.ok(box.x >= 0 && box.y >= 0 && box.w >= 1 && box.h >= 1, JSON.stringify(box));
        assert.ok(box.x + box.w <= w && box.y + box.h <= h, `${JSON.stringify(box)} outside ${w}x${h}`);
        assert.ok(Number.isInteger(box.x) && Number.isInteger(box.w));
      }
    }
    for (let i = 0; i < 200; i++) {
      const box = sampleResizedCropBox(r, 100, 100, [0.5, 0.6], [1, 1]);
      assert.ok(box.w * box.h >= 0.45 * 1e4 && box.w * box.h <= 0.65 * 1e4, `area ${box.w * box.h}`);
    }
  });

  test('the whole image at its own size is the identity, from bytes or floats', () => {
    const img = randomImage(9, 7, 3, 1);
    const out = new Float32Array(img.length);
    resizedCrop(img, 0, 9, 7, 3, { x: 0, y: 0, w: 9, h: 7 }, false, out, 0, 9, 7);
    assert.deepEqual(out, img);
    const bytes = Uint8Array.from({ length: 28 * 28 }, (_, i) => (i * 7) % 256);
    const grey = new Float32Array(28 * 28);
    resizedCrop(bytes, 0, 28, 28, 1, { x: 0, y: 0, w: 28, h: 28 }, false, grey, 0, 28, 28);
    for (let i = 0; i < grey.length; i++) assert.ok(Math.abs(grey[i]! - bytes[i]! / 255) < 1e-6);
  });

  test('a flipped crop equals the crop flipped; two flips are the identity', () => {
    const img = randomImage(20, 16, 3, 2);
    const box = { x: 3, y: 2, w: 11, h: 9 };
    const a = new Float32Array(12 * 12 * 3);
    const b = new Float32Array(12 * 12 * 3);
    resizedCrop(img, 0, 20, 16, 3, box, true, a, 0, 12, 12);
    resizedCrop(img, 0, 20, 16, 3, box, false, b, 0, 12, 12);
    flipHorizontal(b, 0, 12, 12, 3);
    assert.deepEqual(a, b);
    const c = Float32Array.from(img);
    flipHorizontal(c, 0, 20, 16, 3);
    assert.notDeepEqual(c, img);
    flipHorizontal(c, 0, 20, 16, 3);
    assert.deepEqual(c, img);
  });

  test('writes only its slot of a larger buffer', () => {
    const img = randomImage(10, 10, 1, 4);
    const out = new Float32Array(3 * 25).fill(-1);
    resizedCrop(img, 0, 10, 10, 1, { x: 0, y: 0, w: 10, h: 10 }, false, out, 25, 5, 5);
    assert.ok(out.subarray(0, 25).every((v) => v === -1));
    assert.ok(out.subarray(50).every((v) => v === -1));
    inUnitRange(out.subarray(25, 50), 'slot');
  });
});

describe('rotate90', () => {
  test('one quarter turn is counter-clockwise, four are the identity', () => {
    // 2x2: [a b; c d] turned CCW is [b d; a c].
    const img = Float32Array.from([1, 2, 3, 4]);
    const out = new Float32Array(4);
    rotate90(img, 0, out, 0, 2, 1, 1);
    assert.deepEqual([...out], [2, 4, 1, 3]);
    const big = randomImage(6, 6, 3, 5);
    for (let k = 0; k < 4; k++) {
      const once = new Float32Array(big.length);
      const back = new Float32Array(big.length);
      rotate90(big, 0, once, 0, 6, 3, k);
      rotate90(once, 0, back, 0, 6, 3, 4 - k);
      assert.deepEqual(back, big, `rotate ${k} then ${4 - k}`);
    }
  });
});

describe('photometric transforms', () => {
  test('jitter, grayscale, blur and solarize keep values in [0, 1] and shapes', () => {
    const r = Rng.seeded(6);
    for (const c of [1, 3]) {
      for (let i = 0; i < 30; i++) {
        const img = randomImage(12, 12, c, 100 + i);
        colorJitter(img, 0, 144, c, { brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.2, p: 1 }, r);
        inUnitRange(img, `jitter c=${c}`);
        toGrayscale(img, 0, 144, c);
        gaussianBlur(img, 0, 12, 12, c, r.uniform(0.1, 2));
        solarize(img, 0, img.length);
        inUnitRange(img, `chain c=${c}`);
        assert.equal(img.length, 144 * c);
      }
    }
  });

  test('grayscale gives equal channels; hue shift keeps grey pixels grey', () => {
    const img = randomImage(4, 4, 3, 7);
    toGrayscale(img, 0, 16, 3);
    for (let p = 0; p < 16; p++) assert.ok(img[3 * p] === img[3 * p + 1] && img[3 * p + 1] === img[3 * p + 2]);
    const grey = Float32Array.from(img);
    adjustHue(grey, 0, 16, 0.3);
    for (let i = 0; i < img.length; i++) assert.ok(Math.abs(grey[i]! - img[i]!) < 1e-3);
  });

  test('blur keeps a constant image constant and smooths an impulse', () => {
    const flat = new Float32Array(10 * 10 * 3).fill(0.4);
    gaussianBlur(flat, 0, 10, 10, 3, 1.5);
    for (const v of flat) assert.ok(Math.abs(v - 0.4) < 1e-6);
    const impulse = new Float32Array(11 * 11);
    impulse[5 * 11 + 5] = 1;
    gaussianBlur(impulse, 0, 11, 11, 1, 1);
    const total = impulse.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(total - 1) < 1e-5, `mass ${total}`);
    assert.ok(impulse[5 * 11 + 5]! < 0.2 && impulse[5 * 11 + 6]! > 0.05);
  });

  test('solarize inverts above the threshold; normalize uses per-channel stats', () => {
    const a = Float32Array.from([0.2, 0.5, 0.9]);
    solarize(a, 0, 3);
    assert.deepEqual([...a].map((v) => +v.toFixed(6)), [0.2, 0.5, 0.1]);
    const b = Float32Array.from([0.5, 0.5, 1, 1]);
    normalize(b, 0, 2, 2, [0.5, 0], [0.25, 2]);
    assert.deepEqual([...b], [0, 0.25, 2, 0.5]);
    assert.throws(() => normalize(b, 0, 2, 2, [0.5], [1]), /2 channels but mean has 1/);
  });
});
