// Synthetic scenes: boxes agree with masks, semantic masks agree with
// instance masks, occlusion stays within the limit, and a seed fixes the output.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import sharp from 'sharp';
import { decodeRle, encodeRle, maskBox, type CocoDataset } from '../src/data/coco.js';
import { SCENE_CLASSES } from '../src/data/object_bank.js';
import { missingPackages, type DataPackage } from '../src/data/packages.js';
import { Rng } from '../src/core/random.js';
import { SceneGenerator, writeScenes } from '../src/data/scenes.js';
import { loadSceneSplit } from '../src/data/scenes_reader.js';

const tmp = mkdtempSync(join(tmpdir(), 'selfsup-scenes-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function needPackages(names: DataPackage[]): void {
  const missing = missingPackages(names);
  assert.equal(missing.length, 0, `synthetic scenes need Debian packages: apt-get install ${missing.join(' ')}`);
}

describe('COCO RLE', () => {
  test('round-trips random masks and matches a hand-computed case', () => {
    // 3x2 mask, column-major: column 0 is (0,1,1), column 1 is (1,0,0): runs 1,3,2.
    const mask = Uint8Array.from([0, 1, 1, 0, 1, 0]);
    const rle = encodeRle(mask, 3, 2);
    assert.deepEqual(decodeRle(rle), mask);
    assert.equal(rle.counts, '132', 'pycocotools gives 132 for runs [1, 3, 2]');
    const r = Rng.seeded(4);
    for (let t = 0; t < 20; t++) {
      const h = r.int(1, 40);
      const w = r.int(1, 40);
      const p = r.next();
      const m = Uint8Array.from({ length: h * w }, () => (r.next() < p ? 1 : 0));
      assert.deepEqual(decodeRle(encodeRle(m, h, w)), m);
    }
    assert.equal(maskBox(new Uint8Array(6), 2, 3), null);
  });
});

describe('synthetic scenes', () => {
  test('boxes agree with masks, semantic masks with instances; train/val split', async () => {
    needPackages(['tuxpaintStamps', 'openclipart']);
    const out = join(tmp, 'a');
    const summary = await writeScenes(out, { count: 8, size: 64, seed: 7, valFraction: 0.25, backgrounds: 'procedural', maxObjects: 4 });
    assert.deepEqual([summary.train, summary.val], [6, 2]);
    assert.ok(summary.objects >= 8, `only ${summary.objects} objects in 8 images`);
    let seen = 0;
    for (const split of ['train', 'val']) {
      const coco = JSON.parse(readFileSync(join(out, 'annotations', `instances_${split}.json`), 'utf8')) as CocoDataset;
      assert.equal(coco.images.length, split === 'train' ? 6 : 2);
      assert.deepEqual(coco.categories.map((c) => c.id), SCENE_CLASSES.map((_, k) => k + 1));
      assert.ok(coco.categories.length >= 10 && coco.categories.length <= 20);
      for (const image of coco.images) {
        const maskFile = join(out, split, 'masks', image.semantic_mask!);
        assert.equal((await sharp(maskFile).metadata()).channels, 1, 'semantic masks are single-channel PNGs');
        // sharp widens to sRGB on raw output unless told otherwise.
        const semantic = await sharp(maskFile).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
        const rgb = await sharp(join(out, split, 'images', image.file_name)).metadata();
        assert.deepEqual([rgb.width, rgb.height], [64, 64]);
        const covered = new Uint8Array(64 * 64);
        for (const ann of coco.annotations.filter((a) => a.image_id === image.id)) {
          seen++;
          const mask = decodeRle(ann.segmentation);
          assert.deepEqual(maskBox(mask, 64, 64), ann.bbox, `annotation ${ann.id}: bbox is the mask's tight box`);
          assert.equal(mask.reduce((a, b) => a + b, 0), ann.area);
          for (let p = 0; p < mask.length; p++) {
            if (!mask[p]) continue;
            assert.equal(covered[p], 0, `annotation ${ann.id}: instance masks overlap`);
            covered[p] = 1;
            assert.equal(semantic.data[p], ann.category_id, `annotation ${ann.id}: semantic mask disagrees at ${p}`);
          }
        }
        for (let p = 0; p < covered.length; p++) if (!covered[p]) assert.equal(semantic.data[p], 0, 'background is 0');
      }
      const ids = coco.annotations.map((a) => a.id);
      assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
    }
    assert.equal(seen, summary.objects);
    assert.equal(readdirSync(join(out, 'val', 'images')).length, 2);

    // Read back for evaluation: pixels, semantic masks and annotations line up.
    const val = await loadSceneSplit(out, 'val');
    assert.equal(val.images.count, 2);
    assert.equal(val.images.images.length, 2 * 64 * 64 * 3);
    val.annotations.forEach((anns, k) => {
      for (const ann of anns) {
        const mask = decodeRle(ann.segmentation);
        for (let p = 0; p < mask.length; p++) if (mask[p]) assert.equal(val.semantic[k * 4096 + p], ann.category_id);
      }
    });
  });

  test('the same seed gives the same files; another seed does not', async () => {
    needPackages(['tuxpaintStamps', 'openclipart']);
    const opts = { count: 3, size: 48, seed: 3, valFraction: 0, backgrounds: 'procedural' as const };
    await writeScenes(join(tmp, 'b1'), opts);
    await writeScenes(join(tmp, 'b2'), opts);
    await writeScenes(join(tmp, 'b3'), { ...opts, seed: 4 });
    const read = (d: string, f: string) => readFileSync(join(tmp, d, f));
    for (const f of ['annotations/instances_train.json', 'train/images/000002.png', 'train/masks/000001.png']) {
      assert.deepEqual(read('b1', f), read('b2', f), f);
    }
    assert.notDeepEqual(read('b1', 'train/images/000000.png'), read('b3', 'train/images/000000.png'));
  });

  test('no object loses more than maxOcclusion to later ones; photo backgrounds work', async () => {
    needPackages(['tuxpaintStamps', 'openclipart', 'gnomeBackgrounds']);
    const gen = new SceneGenerator({ count: 4, size: 64, seed: 1, minObjects: 4, maxObjects: 6, maxOcclusion: 0.2, backgrounds: 'photos' });
    for (let i = 0; i < 4; i++) {
      const scene = await gen.generate(i);
      assert.match(scene.background, /^photo:/);
      assert.ok(scene.objects.length >= 1);
      for (const obj of scene.objects) {
        assert.ok(obj.area >= 16, `object of ${obj.area} px`);
        assert.ok(obj.area >= 0.8 * obj.fullArea, `scene ${i}: ${obj.area} of ${obj.fullArea} px visible, more than 20% hidden`);
      }
      // Re-generation is identical (decoded objects are cached, draws are not).
      const again = await gen.generate(i);
      assert.deepEqual(again.rgb, scene.rgb);
    }
    assert.throws(() => new SceneGenerator({ count: 1, scaleRange: [0.5, 0.2] }), /scaleRange must satisfy/);
    assert.throws(() => new SceneGenerator({ count: 0 }), /count must be a positive integer/);
  });
});
