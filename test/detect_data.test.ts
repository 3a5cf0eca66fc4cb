// src/detect/data.ts on a small generated scene folder: boxes are the RLE
// masks' extents, classes are contiguous and agree with the semantic masks,
// `limit` keeps the first images, a flip mirrors image, boxes, masks and
// semantic mask together, batches are fixed by the seed, and malformed
// annotations are named.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Rng } from '../src/core/random.js';
import { maskBox, type CocoDataset } from '../src/data/coco.js';
import { missingPackages } from '../src/data/packages.js';
import { writeScenes } from '../src/data/scenes.js';
import { detectionBatches, flipTarget, loadDetectionSet, makeDetectionBatch, type DetectionSet, type DetectionTarget } from '../src/detect/data.js';

const missing = missingPackages(['tuxpaintStamps', 'openclipart']);
const skip = missing.length > 0 ? `synthetic scenes need Debian packages: apt-get install ${missing.join(' ')}` : false;
const tmp = mkdtempSync(join(tmpdir(), 'selfsup-detect-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const SIZE = 48;
const dir = join(tmp, 'scenes');
let set: DetectionSet;

/** The xyxy box of a bitmask's set pixels (maskBox gives [x, y, w, h]). */
function extent(mask: Uint8Array): number[] {
  const b = maskBox(mask, SIZE, SIZE);
  assert.ok(b, 'empty mask');
  return [b[0], b[1], b[0] + b[2], b[1] + b[3]];
}

function checkTarget(t: DetectionTarget, semantic: Uint8Array, categoryIds: number[], what: string): void {
  assert.equal(t.boxes.length, 4 * t.masks.length, what);
  t.masks.forEach((m, g) => {
    assert.deepEqual(Array.from(t.boxes.subarray(4 * g, 4 * g + 4)), extent(m), `${what}, object ${g}: box is the mask's extent`);
    const id = categoryIds[t.classes[g]!]!;
    for (let p = 0; p < m.length; p++) if (m[p]) assert.equal(semantic[p], id, `${what}, object ${g}: semantic mask at pixel ${p}`);
  });
}

describe('detection data set', { skip }, () => {
  before(async () => {
    await writeScenes(dir, { count: 7, size: SIZE, seed: 5, valFraction: 0, backgrounds: 'procedural', maxObjects: 3 });
    set = await loadDetectionSet(dir, 'train');
  });

  test('boxes are the RLE masks extents; classes are contiguous and match the semantic masks', () => {
    assert.deepEqual([set.count, set.height, set.width], [7, SIZE, SIZE]);
    const coco = JSON.parse(readFileSync(join(dir, 'annotations', 'instances_train.json'), 'utf8')) as CocoDataset;
    assert.deepEqual(set.categoryIds, coco.categories.map((c) => c.id).sort((a, b) => a - b));
    assert.equal(set.numClasses, coco.categories.length);
    assert.equal(set.categoryNames[0], coco.categories.find((c) => c.id === set.categoryIds[0])!.name);
    assert.equal(set.emptyDropped, 0);
    let objects = 0;
    set.targets.forEach((t, k) => {
      const semantic = set.split.semantic.subarray(k * SIZE * SIZE, (k + 1) * SIZE * SIZE);
      checkTarget(t, semantic, set.categoryIds, `image ${k}`);
      for (const c of t.classes) assert.ok(c >= 0 && c < set.numClasses);
      assert.deepEqual(Array.from(t.crowd), t.masks.map(() => 0));
      objects += t.masks.length;
    });
    assert.equal(objects, coco.annotations.length);
    assert.ok(objects >= 7);
  });

  test('limit keeps the first images and their annotations', async () => {
    const small = await loadDetectionSet(dir, 'train', { limit: 2 });
    assert.equal(small.count, 2);
    assert.equal(small.split.images.count, 2);
    assert.equal(small.split.semantic.length, 2 * SIZE * SIZE);
    assert.deepEqual(small.targets, set.targets.slice(0, 2));
    assert.deepEqual(small.split.coco.images.map((im) => im.id), set.split.coco.images.slice(0, 2).map((im) => im.id));
    await assert.rejects(loadDetectionSet(dir, 'train', { limit: 0 }), /limit must be a positive whole number/);
  });

  test('a flip mirrors image, boxes, masks and semantic mask together', () => {
    const mean = [0.4, 0.5, 0.6];
    const std = [0.2, 0.25, 0.5];
    const batch = makeDetectionBatch(set, [3, 1], { flip: [true, false], mean, std });
    assert.equal(batch.images.length, 2 * SIZE * SIZE * 3);
    assert.deepEqual(batch.indices, [3, 1]);
    const pixels = set.split.images.images;
    for (const [b, index, flipped] of [[0, 3, true], [1, 1, false]] as const) {
      for (let y = 0; y < SIZE; y++) {
        for (let x = 0; x < SIZE; x++) {
          const sx = flipped ? SIZE - 1 - x : x;
          for (let c = 0; c < 3; c++) {
            const want = (pixels[((index * SIZE + y) * SIZE + sx) * 3 + c]! / 255 - mean[c]!) / std[c]!;
            const got = batch.images[((b * SIZE + y) * SIZE + x) * 3 + c]!;
            assert.ok(Math.abs(got - want) < 1e-5, `image ${b} (${x}, ${y}, ${c}): ${got} != ${want}`);
          }
          assert.equal(batch.semantic[(b * SIZE + y) * SIZE + x], set.split.semantic[(index * SIZE + y) * SIZE + sx]);
        }
      }
    }
    // Flipped boxes: x0' = W - x1, x1' = W - x0; still the extents of the flipped masks.
    const t = batch.targets[0]!;
    const src = set.targets[3]!;
    for (let g = 0; g < src.masks.length; g++) {
      const [x0, y0, x1, y1] = src.boxes.subarray(4 * g, 4 * g + 4);
      assert.deepEqual(Array.from(t.boxes.subarray(4 * g, 4 * g + 4)), [SIZE - x1!, y0, SIZE - x0!, y1]);
    }
    checkTarget(t, batch.semantic.subarray(0, SIZE * SIZE), set.categoryIds, 'flipped image');
    checkTarget(batch.targets[1]!, batch.semantic.subarray(SIZE * SIZE), set.categoryIds, 'unflipped image');
    assert.ok(src.masks.length > 0 && t.masks.some((m, g) => m.some((v, p) => v !== src.masks[g]![p])), 'the flip changed the masks');
    // Mirroring twice is the identity; the set's own target is untouched.
    assert.deepEqual(flipTarget(t, SIZE, SIZE), src);
    assert.deepEqual(Array.from(set.targets[3]!.boxes), Array.from(src.boxes));
    assert.throws(() => makeDetectionBatch(set, [0, 1], { flip: [true], mean, std }), /2 images but 1 flip flags/);
    assert.throws(() => makeDetectionBatch(set, [9], { flip: [false], mean, std }), /image index 9 is outside 0..6/);
  });

  test('an epoch of batches: shuffled, flipped, last incomplete batch dropped, fixed by the seed', () => {
    const options = { flipProbability: 0.5, mean: [0, 0, 0], std: [1, 1, 1] };
    const run = (seed: number, size: number) => [...detectionBatches(set, size, Rng.seeded(seed), options)];
    const a = run(3, 2);
    assert.equal(a.length, 3, '7 images in batches of 2: the seventh is dropped');
    const seen = a.flatMap((b) => b.indices);
    assert.equal(new Set(seen).size, 6);
    const b = run(3, 2);
    assert.deepEqual(a.map((x) => [x.indices, x.flipped]), b.map((x) => [x.indices, x.flipped]));
    assert.deepEqual(a[1]!.images, b[1]!.images);
    const c = run(4, 2);
    assert.notDeepEqual(a.map((x) => [x.indices, x.flipped]), c.map((x) => [x.indices, x.flipped]));
    // Each batch is what makeDetectionBatch gives for its indices and flips.
    const again = makeDetectionBatch(set, a[2]!.indices, { flip: a[2]!.flipped, ...options });
    assert.deepEqual(again.images, a[2]!.images);
    assert.deepEqual(again.targets, a[2]!.targets);
    // Flip probability 0 and 1 are never and always; one batch of 7.
    assert.ok(run(5, 7)[0]!.flipped.length === 7);
    assert.ok([...detectionBatches(set, 1, Rng.seeded(1), { ...options, flipProbability: 0 })].every((x) => !x.flipped[0]));
    assert.ok([...detectionBatches(set, 1, Rng.seeded(1), { ...options, flipProbability: 1 })].every((x) => x.flipped[0]));
    // The same generator, called again, moves on to another order.
    const rng = Rng.seeded(6);
    const first = [...detectionBatches(set, 7, rng, options)][0]!.indices;
    const second = [...detectionBatches(set, 7, rng, options)][0]!.indices;
    assert.notDeepEqual(first, second);
  });

  test('malformed annotations name the file and the annotation', async () => {
    const bad = join(tmp, 'bad');
    cpSync(dir, bad, { recursive: true });
    const jsonPath = join(bad, 'annotations', 'instances_train.json');
    const coco = JSON.parse(readFileSync(jsonPath, 'utf8')) as CocoDataset;
    const ann = coco.annotations[1]!;
    const original = { ...ann };
    ann.category_id = 999;
    writeFileSync(jsonPath, JSON.stringify(coco));
    await assert.rejects(loadDetectionSet(bad, 'train'), (err: Error) => {
      assert.match(err.message, /instances_train\.json: annotation 2 \(image \d+\): category id 999 is not among the categories/);
      return true;
    });
    Object.assign(ann, original, { bbox: [1, 2, 3] });
    writeFileSync(jsonPath, JSON.stringify(coco));
    await assert.rejects(loadDetectionSet(bad, 'train'), /annotation 2 .*bbox must be four finite numbers/);
    Object.assign(ann, original, { segmentation: { size: [SIZE, SIZE + 1], counts: ann.segmentation.counts } });
    writeFileSync(jsonPath, JSON.stringify(coco));
    await assert.rejects(loadDetectionSet(bad, 'train'), /annotation 2 .*RLE size \[48, 49\] differs/);
    // A zero-width box is dropped, not trained on.
    Object.assign(ann, original, { bbox: [ann.bbox[0], ann.bbox[1], 0, ann.bbox[3]] });
    writeFileSync(jsonPath, JSON.stringify(coco));
    const dropped = await loadDetectionSet(bad, 'train');
    assert.equal(dropped.emptyDropped, 1);
    assert.equal(dropped.targets.reduce((s, t) => s + t.masks.length, 0), set.targets.reduce((s, t) => s + t.masks.length, 0) - 1);
  });
});
