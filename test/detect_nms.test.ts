// src/detect/nms.ts: torchvision semantics by hand (an IoU equal to the
// threshold is kept, equal scores keep input order, a suppressed box
// suppresses nothing, groups never suppress each other), agreement with a
// direct transcription of the greedy rule on random boxes, and speed.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { pairwiseIou } from '../src/detect/boxes.js';
import { batchedNms, nms } from '../src/detect/nms.js';

const f32 = (...v: number[]) => Float32Array.from(v);

/** The greedy rule written the slow, obvious way: visit by score, keep unless a kept box overlaps > t. */
function referenceNms(boxes: Float32Array, scores: Float32Array, t: number, groups?: Int32Array): number[] {
  const n = scores.length;
  const iou = pairwiseIou(boxes, boxes);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[b]! - scores[a]! || a - b);
  const kept: number[] = [];
  for (const i of order) {
    if (!kept.some((k) => (!groups || groups[k] === groups[i]) && iou[k * n + i]! > t)) kept.push(i);
  }
  return kept;
}

function randomBoxes(rng: Rng, n: number, clusters: number): { boxes: Float32Array; scores: Float32Array } {
  const centres = Array.from({ length: clusters }, () => [rng.uniform(10, 118), rng.uniform(10, 118)]);
  const boxes = new Float32Array(4 * n);
  const scores = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const [cx, cy] = centres[i % clusters]!;
    const w = rng.uniform(8, 40);
    const h = rng.uniform(8, 40);
    const x = cx! + rng.uniform(-6, 6);
    const y = cy! + rng.uniform(-6, 6);
    boxes.set([x - w / 2, y - h / 2, x + w / 2, y + h / 2], 4 * i);
    // Quantised scores, so equal scores occur and order their ties.
    scores[i] = Math.round(rng.next() * 50) / 50;
  }
  return { boxes, scores };
}

describe('nms by hand', () => {
  // [0,0,3,1] and [1,0,4,1] overlap in 2 of a 4-pixel union: IoU exactly 0.5.
  const half = f32(0, 0, 3, 1, 1, 0, 4, 1);

  test('an IoU equal to the threshold is kept (torchvision suppresses only when IoU > threshold)', () => {
    assert.deepEqual(Array.from(nms(half, f32(0.9, 0.8), 0.5)), [0, 1]);
    assert.deepEqual(Array.from(nms(half, f32(0.9, 0.8), 0.49)), [0]);
  });

  test('kept indices come in descending score order; equal scores keep input order', () => {
    const disjoint = f32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    assert.deepEqual(Array.from(nms(disjoint, f32(0.5, 0.5, 0.9, 0.5), 0.5)), [2, 0, 1, 3]);
    // Two boxes at IoU 0.5 with equal scores: the earlier one wins, whichever it is.
    assert.deepEqual(Array.from(nms(half, f32(0.7, 0.7), 0.3)), [0]);
    assert.deepEqual(Array.from(nms(f32(1, 0, 4, 1, 0, 0, 3, 1), f32(0.7, 0.7), 0.3)), [0]);
  });

  test('a suppressed box suppresses nothing', () => {
    // IoU(A, B) = 3/5 = 0.6, IoU(B, C) = 2.5/5.5 = 0.45, IoU(A, C) = 1.5/6.5 = 0.23.
    // At 0.4, A removes B; C survives because B is gone.
    const boxes = f32(0, 0, 4, 1, 1, 0, 5, 1, 2.5, 0, 6.5, 1);
    assert.deepEqual(Array.from(nms(boxes, f32(0.9, 0.8, 0.7), 0.4)), [0, 2]);
    assert.deepEqual(Array.from(nms(new Float32Array(0), new Float32Array(0), 0.5)), []);
    assert.throws(() => nms(boxes, f32(1, 2), 0.5), /3 box values|2 scores/);
  });

  test('batched: groups never suppress each other; the result is sorted by score across groups', () => {
    // Box 1 is box 0 in another group; box 2 overlaps box 0 at 90/110 = 0.82 in
    // group 0 with a higher score; box 3 is alone.
    const boxes = f32(0, 0, 10, 10, 0, 0, 10, 10, 1, 0, 11, 10, 20, 20, 30, 30);
    const scores = f32(0.3, 0.9, 0.5, 0.7);
    const groups = Int32Array.from([0, 1, 0, 1]);
    assert.deepEqual(Array.from(batchedNms(boxes, scores, groups, 0.5)), [1, 3, 2]);
    // Without groups box 1 removes boxes 0 and 2.
    assert.deepEqual(Array.from(nms(boxes, scores, 0.5)), [1, 3]);
    // Group ids need not be small or contiguous.
    assert.deepEqual(Array.from(batchedNms(boxes, scores, Int32Array.from([-7, 1000, -7, 1000]), 0.5)), [1, 3, 2]);
  });
});

describe('nms on random boxes', () => {
  test('agrees with the direct greedy rule, per group too', () => {
    const rng = Rng.seeded(21);
    for (let t = 0; t < 20; t++) {
      const n = rng.int(1, 150);
      const { boxes, scores } = randomBoxes(rng, n, rng.int(1, 6));
      const threshold = [0.3, 0.5, 0.7][t % 3]!;
      assert.deepEqual(Array.from(nms(boxes, scores, threshold)), referenceNms(boxes, scores, threshold), `trial ${t}`);
      const groups = Int32Array.from({ length: n }, () => rng.int(0, 3));
      assert.deepEqual(Array.from(batchedNms(boxes, scores, groups, threshold)), referenceNms(boxes, scores, threshold, groups), `trial ${t}, grouped`);
    }
  });

  test('4,000 clustered boxes in well under a second', () => {
    const { boxes, scores } = randomBoxes(Rng.seeded(5), 4000, 4);
    const groups = Int32Array.from({ length: 4000 }, (_, i) => i % 4);
    const start = performance.now();
    const kept = batchedNms(boxes, scores, groups, 0.7);
    const ms = performance.now() - start;
    assert.ok(kept.length > 4 && kept.length < 4000);
    assert.ok(ms < 1000, `batchedNms took ${ms.toFixed(0)} ms`);
  });
});
