// src/detect boxes, anchors, matcher and sampler against hand-computed
// detectron2 values: IoU of touching, contained, disjoint and empty boxes;
// Box2BoxTransform deltas with weights (10, 10, 5, 5) and its clamp; anchor
// order and count; the matcher's intervals at the exact thresholds and its
// low-quality rule; the balanced sampler's counts and seeds.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { generateAnchors } from '../src/detect/anchors.js';
import { BoxCoder, boxArea, clipBoxes, nonEmpty, nonEmptyIndices, pairwiseIou } from '../src/detect/boxes.js';
import { matchBoxes } from '../src/detect/matcher.js';
import { sampleBalanced } from '../src/detect/sampler.js';
import { assertClose } from './helpers.js';

const f32 = (...v: number[]) => Float32Array.from(v);

describe('box geometry', () => {
  test('pairwise IoU of overlapping, touching, contained, disjoint and zero-area boxes', () => {
    const a = f32(0, 0, 2, 2, 1, 1, 1, 1);
    const b = f32(
      1, 1, 3, 3, // overlap 1 of union 4 + 4 - 1: 1/7
      2, 0, 4, 2, // shares the edge x = 2: intersection width 0
      0.5, 0.5, 1.5, 1.5, // inside, area 1 of 4: 1/4
      5, 5, 6, 6, // far away
      1, 1, 1, 1, // a point inside a: no intersection area
      0, 0, 2, 2, // the same box
    );
    const iou = pairwiseIou(a, b);
    assert.equal(iou.length, 12, 'Na x Nb');
    assertClose(iou.subarray(0, 6), [1 / 7, 0, 1 / 4, 0, 0, 1], { atol: 1e-7, rtol: 0 });
    // Row 1, the point box: union 0 with itself, yet 0 rather than NaN.
    assert.deepEqual(Array.from(iou.subarray(6)), [0, 0, 0, 0, 0, 0]);
    assert.equal(pairwiseIou(new Float32Array(0), b).length, 0);
    assert.equal(boxArea(b, 0), 4);
    assert.throws(() => pairwiseIou(f32(0, 0, 1), b), /whole number of boxes/);
  });

  test('clip to the image and drop boxes no larger than minSize', () => {
    const b = clipBoxes(f32(-3, -1, 70, 20, 10, 50, 12, 80), 64, 48);
    assert.deepEqual(Array.from(b), [0, 0, 48, 20, 10, 50, 12, 64]);
    // Widths 48 and 2, heights 20 and 14: minSize 2 keeps only the first (strict >).
    assert.deepEqual(Array.from(nonEmpty(b, 2)), [1, 0]);
    assert.deepEqual(Array.from(nonEmpty(b)), [1, 1]);
    assert.deepEqual(Array.from(nonEmptyIndices(f32(0, 0, 0, 5, 0, 0, 1, 1), 0)), [1]);
  });

  test('Box2BoxTransform deltas by hand with weights (10, 10, 5, 5)', () => {
    const coder = new BoxCoder([10, 10, 5, 5]);
    // ref: w 10, h 20, centre (5, 10); target: w 20, h 20, centre (12, 14).
    // dx = 10 (12 - 5) / 10 = 7, dy = 10 (14 - 10) / 20 = 2, dw = 5 ln 2, dh = 5 ln 1 = 0.
    const ref = f32(0, 0, 10, 20);
    const target = f32(2, 4, 22, 24);
    const d = coder.encode(ref, target);
    assertClose(d, [7, 2, 5 * Math.LN2, 0], { atol: 1e-6, rtol: 0 });
    assertClose(coder.decode(ref, d), target, { atol: 1e-5, rtol: 0 });
    assert.throws(() => coder.encode(f32(0, 0, 0, 5), target), /width 0/);
  });

  test('encode then decode gives the targets back for random boxes', () => {
    const rng = Rng.seeded(11);
    const n = 200;
    const ref = new Float32Array(4 * n);
    const target = new Float32Array(4 * n);
    for (const b of [ref, target]) {
      for (let i = 0; i < n; i++) {
        const x = rng.uniform(-20, 100);
        const y = rng.uniform(-20, 100);
        b.set([x, y, x + rng.uniform(1, 60), y + rng.uniform(1, 60)], 4 * i);
      }
    }
    for (const w of [[1, 1, 1, 1], [10, 10, 5, 5]] as [number, number, number, number][]) {
      const coder = new BoxCoder(w);
      assertClose(coder.decode(ref, coder.encode(ref, target)), target, { atol: 1e-3, rtol: 1e-5 }, `weights ${w}`);
    }
  });

  test('decode clamps dw and dh at log(1000 / 16)', () => {
    // dw = 50 / 5 = 10 exceeds log 62.5 = 4.135, so the width grows 62.5 times: 625
    // around centre 5; dh = -50 / 5 = -10 is not clamped (only from above).
    const coder = new BoxCoder([10, 10, 5, 5]);
    const out = coder.decode(f32(0, 0, 10, 10), f32(0, 0, 50, -50));
    const h = 10 * Math.exp(-10);
    assertClose(out, [5 - 312.5, 5 - h / 2, 5 + 312.5, 5 + h / 2], { atol: 1e-4, rtol: 1e-6 });
    const tight = new BoxCoder([1, 1, 1, 1], Math.log(2)).decode(f32(0, 0, 10, 10), f32(0, 0, 3, 3));
    assertClose(tight, [-5, -5, 15, 15], { atol: 1e-5, rtol: 0 });
  });
});

describe('anchors', () => {
  test('the 128-px pyramid P2-P5 has 4,080 anchors (research doc sec. 2.4)', () => {
    const levels = [16, 32, 64, 128].map((size, l) => ({ stride: 4 << l, size, height: 32 >> l, width: 32 >> l }));
    const anchors = generateAnchors(levels);
    assert.deepEqual(anchors.map((a) => a.length / 4), [3072, 768, 192, 48]);
    assert.equal(anchors.reduce((s, a) => s + a.length / 4, 0), 4080);
  });

  test('cell order, ratio order and shifts by hand', () => {
    const [a] = generateAnchors([{ stride: 4, size: 16, height: 2, width: 3 }]);
    assert.equal(a!.length / 4, 18);
    // Area 256: ratio 0.5 gives w = sqrt(512) = 22.63, h = 11.31; ratio 1 a 16 x 16
    // square; ratio 2 gives w = 11.31, h = 22.63. All centred on (0, 0), cell (0, 0).
    const s = Math.sqrt(512) / 2;
    const t = Math.sqrt(128) / 2;
    assertClose(a!.subarray(0, 12), [-s, -t, s, t, -8, -8, 8, 8, -t, -s, t, s], { atol: 1e-5, rtol: 0 });
    // Next cell is x = 1 (row-major: x inner): shifted by one stride in x.
    assertClose(a!.subarray(12, 16), [4 - s, -t, 4 + s, t], { atol: 1e-5, rtol: 0 });
    // Anchor 9 opens row y = 1, x = 0.
    assertClose(a!.subarray(36, 40), [-s, 4 - t, s, 4 + t], { atol: 1e-5, rtol: 0 });
    // Anchor 17 is the ratio-2 anchor of the last cell (2, 1).
    assertClose(a!.subarray(68, 72), [8 - t, 4 - s, 8 + t, 4 + s], { atol: 1e-5, rtol: 0 });
  });

  test('offset 0.5 centres anchors on the cells', () => {
    const [a] = generateAnchors([{ stride: 4, size: 16, height: 1, width: 1 }], [1], 0.5);
    assert.deepEqual(Array.from(a!), [-6, -6, 10, 10]);
  });
});

describe('matcher', () => {
  // Two GT rows, five predictions: best IoUs 0.7 (GT 0), 0.3 (GT 0), 0.29,
  // 0.6 (GT 1), and a tie at 0.1 between GT 0 and GT 1.
  const iou = f32(0.7, 0.3, 0.29, 0.5, 0.1, 0.2, 0.1, 0, 0.6, 0.1);

  test('intervals [low, high): 0.7 is positive, 0.3 is ignored, below 0.3 negative; ties go to the first GT', () => {
    const m = matchBoxes(iou, 2, 5, [0.3, 0.7], [0, -1, 1], false);
    assert.deepEqual(Array.from(m.labels), [1, -1, 0, -1, 0]);
    assert.deepEqual(Array.from(m.matches), [0, 0, 0, 1, 0]);
  });

  test("low-quality matches make each GT's best prediction positive, ties included", () => {
    // GT 1's highest IoU is 0.6 at prediction 3, ignored above, now positive.
    const m = matchBoxes(iou, 2, 5, [0.3, 0.7], [0, -1, 1], true);
    assert.deepEqual(Array.from(m.labels), [1, -1, 0, 1, 0]);
    // GT 0: [0.9, 0.6, 0.1], GT 1: [0.1, 0.5, 0.5]. Predictions 1 and 2 tie at
    // GT 1's maximum 0.5 and both become positive; prediction 1's match stays
    // its own best GT, GT 0 (0.6), not the GT that promoted it.
    const tie = matchBoxes(f32(0.9, 0.6, 0.1, 0.1, 0.5, 0.5), 2, 3, [0.3, 0.7], [0, -1, 1], true);
    assert.deepEqual(Array.from(tie.labels), [1, 1, 1]);
    assert.deepEqual(Array.from(tie.matches), [0, 0, 1]);
  });

  test('as in detectron2, a GT that overlaps nothing makes every zero-IoU prediction positive', () => {
    const m = matchBoxes(f32(0.8, 0, 0, 0, 0, 0), 2, 3, [0.3, 0.7], [0, -1, 1], true);
    assert.deepEqual(Array.from(m.labels), [1, 1, 1]);
  });

  test('no GT: every prediction is background; bad arguments are named', () => {
    const m = matchBoxes(new Float32Array(0), 0, 4, [0.3, 0.7], [0, -1, 1], true);
    assert.deepEqual(Array.from(m.labels), [0, 0, 0, 0]);
    assert.deepEqual(Array.from(m.matches), [0, 0, 0, 0]);
    assert.throws(() => matchBoxes(iou, 2, 4, [0.3, 0.7], [0, -1, 1], false), /numGt x numPred = 2 x 4/);
    assert.throws(() => matchBoxes(iou, 2, 5, [0.3, 0.7], [0, 1], false), /want 3 labels/);
    // The ROI heads' matcher: one threshold 0.5, labels [0, 1].
    const roi = matchBoxes(iou, 2, 5, [0.5], [0, 1], false);
    assert.deepEqual(Array.from(roi.labels), [1, 0, 0, 1, 0]);
  });
});

describe('balanced sampler', () => {
  // 3 positives (1), 10 negatives (0), 7 ignored (-1).
  const labels = Int8Array.from([1, 0, -1, 0, 0, 1, -1, 0, 0, -1, 0, 0, -1, 1, 0, -1, 0, -1, 0, -1]);
  const pos = (l: number) => l === 1;
  const neg = (l: number) => l === 0;

  test('counts: positives capped by the fraction, negatives fill the rest up to what exists', () => {
    // 8 x 0.5 = 4 allowed, 3 exist: 3 positives and 8 - 3 = 5 negatives.
    let s = sampleBalanced(labels, 8, 0.5, pos, neg, Rng.seeded(1));
    assert.deepEqual([s.positive.length, s.negative.length], [3, 5]);
    assert.deepEqual([...s.positive].sort((a, b) => a - b), [0, 5, 13]);
    for (const i of s.negative) assert.equal(labels[i], 0);
    assert.equal(new Set(s.negative).size, 5, 'no index twice');
    // 8 x 0.25 = 2 positives; 100 per image asks for more negatives than the 10 there are.
    s = sampleBalanced(labels, 8, 0.25, pos, neg, Rng.seeded(1));
    assert.deepEqual([s.positive.length, s.negative.length], [2, 6]);
    s = sampleBalanced(labels, 100, 0.25, pos, neg, Rng.seeded(1));
    assert.deepEqual([s.positive.length, s.negative.length], [3, 10]);
  });

  test('a seed fixes the draw; another seed draws differently; choices are uniform', () => {
    const a = sampleBalanced(labels, 6, 0.25, pos, neg, Rng.seeded(3));
    const b = sampleBalanced(labels, 6, 0.25, pos, neg, Rng.seeded(3));
    const c = sampleBalanced(labels, 6, 0.25, pos, neg, Rng.seeded(4));
    assert.deepEqual(a, b);
    assert.notDeepEqual([a.positive, a.negative], [c.positive, c.negative]);
    // 6 per image at 0.25: 1 positive and 5 of the 10 negatives, so each negative
    // is chosen half the time, 1000 of 2000 (sd 22).
    const counts = new Map<number, number>();
    const rng = Rng.seeded(9);
    for (let t = 0; t < 2000; t++) for (const i of sampleBalanced(labels, 6, 0.25, pos, neg, rng).negative) counts.set(i, (counts.get(i) ?? 0) + 1);
    assert.equal(counts.size, 10);
    for (const [i, n] of counts) assert.ok(n > 900 && n < 1100, `negative ${i} chosen ${n} times of 2000`);
  });
});
