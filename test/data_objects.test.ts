// Object-centric images (the ImageNet analog): the sprite split is stable and
// disjoint, images are deterministic, labelled by the pasted sprite's class and
// centred, the folder reads back through loadImageFolder and `objects:DIR`,
// and scenes draw only from the other half.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { DatasetConfig, dataFacts, hasTestSplit, loadTestSet, loadTrainingSet } from '../src/data/dataset_config.js';
import { loadImageFolder } from '../src/data/image_folder.js';
import {
  DEFAULT_OBJECT_ROOTS,
  listClassFiles,
  SCENE_CLASSES,
  spriteHalf,
  spriteHash,
  spriteKey,
  splitClassFiles,
  type ObjectRoots,
} from '../src/data/object_bank.js';
import {
  loadObjectImages,
  OBJECT_CLASS_FOLDERS,
  ObjectImageGenerator,
  objectFileName,
  OBJECTS_MANIFEST,
  writeObjectImages,
  type ObjectsManifest,
} from '../src/data/objects.js';
import { missingPackages } from '../src/data/packages.js';
import { SceneGenerator } from '../src/data/scenes.js';

const tmp = mkdtempSync(join(tmpdir(), 'selfsup-objects-'));
// loadImageFolder's default cache goes under $XDG_CACHE_HOME: keep it in the test's folder.
process.env.XDG_CACHE_HOME = join(tmp, 'cache');
after(() => rmSync(tmp, { recursive: true, force: true }));

function needSprites(): void {
  const missing = missingPackages(['tuxpaintStamps', 'openclipart']);
  assert.equal(missing.length, 0, `object images need Debian packages: apt-get install ${missing.join(' ')}`);
}

/** A copy of the packages' folder tree for `files` (relative to the roots), with empty files. */
function fakeRoots(dir: string, files: { tuxpaint: string[]; openclipart: string[] }): ObjectRoots {
  const roots = { tuxpaint: join(dir, 'share', 'tuxpaint', 'stamps'), openclipart: join(dir, 'elsewhere', 'png') };
  for (const pkg of ['tuxpaint', 'openclipart'] as const) {
    for (const f of files[pkg]) {
      mkdirSync(join(roots[pkg], f, '..'), { recursive: true });
      writeFileSync(join(roots[pkg], f), '');
    }
  }
  return roots;
}

describe('sprite halves', () => {
  test('the hash is sha256 of the package-relative name (pinned values)', () => {
    // Python: int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], 'big') / 2**32
    assert.equal(spriteHash('tuxpaint:animals/mammals/cat.png'), 0.6831385164987296);
    assert.equal(spriteHash('tuxpaint:animals/birds/owl.png'), 0.23446203931234777);
    assert.equal(spriteHalf('tuxpaint:animals/birds/owl.png'), 'pretrain');
    assert.equal(spriteHalf('openclipart:tools/hammer.png'), 'transfer');
    const roots = { tuxpaint: '/a/b/stamps', openclipart: '/c/png' };
    assert.equal(spriteKey('/a/b/stamps/animals/birds/owl.png', roots), 'tuxpaint:animals/birds/owl.png');
    assert.equal(spriteKey('/c/png/tools/hammer.png', roots), 'openclipart:tools/hammer.png');
    assert.throws(() => spriteKey('/elsewhere/x.png', roots), /not under the tuxpaint/);
  });

  test('the split does not depend on where the packages are installed', () => {
    const names = Array.from({ length: 30 }, (_, i) => `animal ${i}.png`);
    const layout = {
      tuxpaint: names.map((n) => `animals/mammals/${n}`),
      openclipart: SCENE_CLASSES.flatMap((c) => c.sources.filter((s) => s.startsWith('openclipart:')).map((s) => `${s.slice(12)}/x.png`)),
    };
    // Every tuxpaint-only source needs a file too, or listClassFiles refuses the class.
    for (const c of SCENE_CLASSES) if (!c.sources.some((s) => s.startsWith('openclipart:'))) layout.tuxpaint.push(`${c.sources[0]!.slice(9)}/y.png`);
    const a = fakeRoots(join(tmp, 'rootsA'), layout);
    const b = fakeRoots(join(tmp, 'deeper', 'rootsB'), layout);
    for (const half of ['pretrain', 'transfer'] as const) {
      const keysA = listClassFiles(a, half).map((files) => files.map((f) => spriteKey(f, a)));
      const keysB = listClassFiles(b, half).map((files) => files.map((f) => spriteKey(f, b)));
      assert.deepEqual(keysA, keysB, half);
    }
    const mammals = splitClassFiles(listClassFiles(a)[0]!, a);
    assert.ok(mammals.pretrain.length >= 8 && mammals.transfer.length >= 8, `31 files split ${mammals.pretrain.length}/${mammals.transfer.length}`);
  });

  test('a class of two or more files has both halves; one file stays where its hash puts it', () => {
    const roots = { tuxpaint: '/t', openclipart: '/o' };
    // Two names whose hashes fall on the same side.
    const names = Array.from({ length: 64 }, (_, i) => `/t/x/${i}.png`);
    const side = spriteHalf(spriteKey(names[0]!, roots));
    const same = names.filter((f) => spriteHalf(spriteKey(f, roots)) === side).slice(0, 3);
    assert.equal(same.length, 3);
    for (const files of [same.slice(0, 2), same]) {
      const split = splitClassFiles(files, roots);
      assert.ok(split.pretrain.length >= 1 && split.transfer.length >= 1, `${files.length} files: ${split.pretrain.length}/${split.transfer.length}`);
      assert.deepEqual([...split.pretrain, ...split.transfer].sort(), [...files].sort());
      // The file that moves is the one whose hash is nearest 0.5, whatever the order given.
      const moved = side === 'pretrain' ? split.transfer : split.pretrain;
      const nearest = [...files].sort((x, y) => Math.abs(spriteHash(spriteKey(x, roots)) - 0.5) - Math.abs(spriteHash(spriteKey(y, roots)) - 0.5))[0];
      assert.deepEqual(moved, [nearest]);
      assert.deepEqual(splitClassFiles([...files].reverse(), roots)[side].sort(), split[side].sort());
    }
    const single = splitClassFiles([same[0]!], roots);
    assert.deepEqual(single[side], [same[0]]);
    assert.equal(single[side === 'pretrain' ? 'transfer' : 'pretrain'].length, 0);
  });

  test('installed packages: halves are disjoint, cover every file, about half each, none empty', () => {
    needSprites();
    const all = listClassFiles();
    const pre = listClassFiles(DEFAULT_OBJECT_ROOTS, 'pretrain');
    const tra = listClassFiles(DEFAULT_OBJECT_ROOTS, 'transfer');
    let total = 0;
    let pretrain = 0;
    all.forEach((files, k) => {
      const name = SCENE_CLASSES[k]!.name;
      assert.ok(pre[k]!.length >= 1 && tra[k]!.length >= 1, `${name}: ${pre[k]!.length} pretrain, ${tra[k]!.length} transfer`);
      const p = new Set(pre[k]);
      assert.ok(!tra[k]!.some((f) => p.has(f)), `${name}: a file in both halves`);
      assert.deepEqual([...pre[k]!, ...tra[k]!].sort(), files, `${name}: the halves are not the class's files`);
      if (files.length >= 40) {
        const f = pre[k]!.length / files.length;
        assert.ok(f > 0.3 && f < 0.7, `${name}: ${pre[k]!.length} of ${files.length} files in pretrain`);
      }
      total += files.length;
      pretrain += pre[k]!.length;
    });
    assert.ok(Math.abs(pretrain / total - 0.5) < 0.05, `${pretrain} of ${total} files in pretrain`);
  });
});

describe('object images', () => {
  test('deterministic per seed; label is the pasted sprite\'s class; the sprite is centred', async () => {
    needSprites();
    const opts = { count: 36, size: 64, seed: 5, backgrounds: 'procedural' as const };
    const gen = new ObjectImageGenerator(opts);
    const twin = new ObjectImageGenerator(opts);
    const other = new ObjectImageGenerator({ ...opts, seed: 6 });
    const pretrain = listClassFiles(DEFAULT_OBJECT_ROOTS, 'pretrain');
    const transfer = new Set(listClassFiles(DEFAULT_OBJECT_ROOTS, 'transfer').flat());
    const size = 64;
    const maxOffset = 0.1 * size;
    let differs = 0;
    const labels = new Set<number>();
    for (let i = 0; i < opts.count; i++) {
      const img = await gen.generate(i);
      const again = await twin.generate(i);
      assert.deepEqual(again.rgb, img.rgb, `image ${i} differs between generators of the same seed`);
      assert.equal(again.file, img.file);
      if (Buffer.compare(Buffer.from((await other.generate(i)).rgb), Buffer.from(img.rgb)) !== 0) differs++;
      labels.add(img.label);
      assert.ok(pretrain[img.label]!.includes(img.file), `image ${i}: ${img.file} is not a pretrain sprite of ${SCENE_CLASSES[img.label]!.name}`);
      assert.ok(!transfer.has(img.file), `image ${i}: ${img.file} is a transfer sprite`);

      // The sprite's mask: inside the pasted box, its box centred to within the offset, its centroid near the centre.
      let n = 0;
      let sx = 0;
      let sy = 0;
      let [x0, y0, x1, y1] = [size, size, -1, -1];
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          if (!img.mask[y * size + x]) continue;
          n++;
          sx += x + 0.5;
          sy += y + 0.5;
          [x0, y0, x1, y1] = [Math.min(x0, x), Math.min(y0, y), Math.max(x1, x), Math.max(y1, y)];
        }
      }
      const [bx, by, bw, bh] = img.box;
      assert.ok(Math.max(bw, bh) >= 0.5 * size - 1 && Math.max(bw, bh) <= 0.9 * size + 1, `image ${i}: box ${img.box}`);
      assert.ok(n >= Math.max(16, 0.05 * bw * bh), `image ${i}: a mask of ${n} px in a ${bw}x${bh} box`);
      assert.ok(x0 >= bx && y0 >= by && x1 < bx + bw && y1 < by + bh, `image ${i}: mask outside the pasted box`);
      const [mx, my] = [(x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2];
      assert.ok(Math.abs(mx - size / 2) <= maxOffset + 2 && Math.abs(my - size / 2) <= maxOffset + 2, `image ${i}: mask box centred at ${mx}, ${my}`);
      const [cx, cy] = [sx / n, sy / n];
      assert.ok(Math.hypot(cx - size / 2, cy - size / 2) <= 0.25 * size, `image ${i}: mask centroid at ${cx.toFixed(1)}, ${cy.toFixed(1)}`);
    }
    assert.equal(labels.size, SCENE_CLASSES.length, 'every class appears in 36 images');
    assert.ok(differs >= 34, `another seed changed only ${differs} of 36 images`);

    // No offset: the pasted box is centred to the pixel.
    const centred = new ObjectImageGenerator({ ...opts, maxOffset: 0, sprites: 'transfer' });
    for (let i = 0; i < 6; i++) {
      const img = await centred.generate(i);
      const [bx, by, bw, bh] = img.box;
      assert.ok(Math.abs(bx + bw / 2 - 32) <= 0.5 && Math.abs(by + bh / 2 - 32) <= 0.5, `box ${img.box}`);
      assert.ok(transfer.has(img.file), `sprites: 'transfer' drew ${img.file}`);
    }
    assert.throws(() => new ObjectImageGenerator({ count: 1, scaleRange: [0.9, 0.5] }), /scaleRange must satisfy/);
  });

  test('plain backgrounds: every pixel outside the sprite\'s mask is one colour, which differs between images', async () => {
    needSprites();
    const gen = new ObjectImageGenerator({ count: 4, size: 32, seed: 3, backgrounds: 'plain' });
    const colours = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const img = await gen.generate(i);
      const counts = new Map<string, number>();
      let outside = 0;
      for (let p = 0; p < 32 * 32; p++) {
        if (img.mask[p]) continue;
        const key = Array.from(img.rgb.slice(3 * p, 3 * p + 3)).join(',');
        counts.set(key, (counts.get(key) ?? 0) + 1);
        outside++;
      }
      // Sprite edges below the mask's alpha threshold blend into the background.
      const [colour, n] = [...counts.entries()].sort((a, b) => b[1] - a[1])[0]!;
      assert.ok(n >= 0.8 * outside, `image ${i}: ${n} of ${outside} pixels outside the sprite have its most common colour`);
      colours.add(colour);
    }
    assert.equal(colours.size, 4, 'each image draws its own colour');
  });

  test('the folder reads back through loadImageFolder and objects:DIR with the generator\'s labels and pixels', async () => {
    needSprites();
    const out = join(tmp, 'set');
    const opts = { count: 40, size: 32, seed: 2, valFraction: 0.25, backgrounds: 'procedural' as const, warn: () => {} };
    const summary = await writeObjectImages(out, opts);
    assert.deepEqual([summary.train, summary.val, summary.reused], [30, 10, false]);
    const manifest = JSON.parse(readFileSync(join(out, OBJECTS_MANIFEST), 'utf8')) as ObjectsManifest;
    assert.equal(manifest.options.sprites, 'pretrain');
    assert.deepEqual(manifest.classes.map((c) => c.folder), OBJECT_CLASS_FOLDERS);
    assert.equal(OBJECT_CLASS_FOLDERS[10], '10_road_vehicle');
    assert.equal(manifest.counts.train.reduce((a, b) => a + b, 0), 30);
    assert.equal(manifest.counts.val.reduce((a, b) => a + b, 0), 10);
    assert.ok(!existsSync(join(out, 'objects.partial.json')));

    const gen = new ObjectImageGenerator(opts);
    // Plain loadImageFolder: class folders sort in SCENE_CLASSES order, so labels are the classes (train holds all 18).
    const folder = await loadImageFolder(join(out, 'train'), { size: 32, cacheDir: null });
    assert.equal(folder.count, 30);
    assert.deepEqual(folder.classNames, OBJECT_CLASS_FOLDERS);
    for (let j = 0; j < folder.count; j++) {
      const i = Number.parseInt(folder.files[j]!.split('/').pop()!, 10);
      const img = await gen.generate(i);
      assert.equal(folder.labels[j], img.label, `${folder.files[j]}`);
      assert.deepEqual(folder.images.subarray(j * 32 * 32 * 3, (j + 1) * 32 * 32 * 3), img.rgb, `${folder.files[j]}: pixels`);
    }

    // objects:DIR: generation order, and val's labels are right although val holds classes 12-17 and 0-3 only.
    const dataset = DatasetConfig.parse({ name: `objects:${out}` });
    assert.ok(hasTestSplit(dataset));
    const train = await loadTrainingSet(dataset);
    assert.deepEqual([train.count, train.height, train.width, train.channels], [30, 32, 32, 3]);
    assert.deepEqual(Array.from(train.labels), Array.from({ length: 30 }, (_, i) => i % 18));
    assert.equal(dataFacts(train).numClasses, 18);
    const val = loadTestSet(dataset, 100)!;
    assert.equal(val.count, 10);
    assert.deepEqual(Array.from(val.labels), [12, 13, 14, 15, 16, 17, 0, 1, 2, 3]);
    assert.deepEqual(val.images.subarray(0, 32 * 32 * 3), (await gen.generate(30)).rgb);
    assert.equal(loadTestSet(dataset, 4)!.count, 4);
    assert.equal((await loadTrainingSet({ ...dataset, limit: 7 })).count, 7);
    const direct = (await loadObjectImages(out, 'val', { cacheDir: null }))!;
    assert.deepEqual(direct.files.slice(0, 2), [join(OBJECT_CLASS_FOLDERS[12]!, objectFileName(30)), join(OBJECT_CLASS_FOLDERS[13]!, objectFileName(31))]);

    // Missing folder, unfinished folder, wrong kind of name.
    await assert.rejects(loadTrainingSet(DatasetConfig.parse({ name: `objects:${join(tmp, 'nope')}` })), /--dataset \(dataset\.name\) objects:.*nope.* is not a folder/);
    const unfinished = join(tmp, 'unfinished');
    mkdirSync(join(unfinished, 'train', '00_mammal'), { recursive: true });
    await assert.rejects(loadTrainingSet(DatasetConfig.parse({ name: `objects:${unfinished}` })), /objects:.*unfinished: .* has no objects\.json/);
    assert.throws(() => DatasetConfig.parse({ name: 'objects:' }), /objects:DIR/);
  });

  test('same seed gives the same files; reruns reuse, refuse, overwrite, or clear an unfinished run', async () => {
    needSprites();
    const opts = { count: 20, size: 32, seed: 9, valFraction: 0.1, backgrounds: 'procedural' as const, warn: () => {} };
    const a = join(tmp, 'r1');
    const b = join(tmp, 'r2');
    await writeObjectImages(a, opts);
    await writeObjectImages(b, opts);
    const file = (dir: string, i: number) => join(dir, i < 18 ? 'train' : 'val', OBJECT_CLASS_FOLDERS[i % 18]!, objectFileName(i));
    for (const i of [0, 7, 19]) assert.deepEqual(readFileSync(file(a, i)), readFileSync(file(b, i)), `image ${i}`);
    assert.deepEqual(readFileSync(join(a, OBJECTS_MANIFEST)), readFileSync(join(b, OBJECTS_MANIFEST)));

    // The same set again: nothing written.
    const before = readFileSync(file(a, 3));
    assert.equal((await writeObjectImages(a, opts)).reused, true);
    // Another set: refused, then replaced with overwrite.
    await assert.rejects(writeObjectImages(a, { ...opts, seed: 10 }), /already holds another objects set \(count 20, size 32, seed 9.*pass --overwrite/);
    assert.deepEqual(readFileSync(file(a, 3)), before, 'a refused run changed files');
    const replaced = await writeObjectImages(a, { ...opts, seed: 10, count: 19, overwrite: true });
    assert.equal(replaced.reused, false);
    assert.notDeepEqual(readFileSync(file(a, 3)), before);
    assert.ok(!existsSync(join(a, 'val', OBJECT_CLASS_FOLDERS[1]!, objectFileName(19))), 'an image of the old, larger set is left');

    // An interrupted run (no manifest, the partial marker) is cleared, stale files included.
    const b7 = readFileSync(file(b, 7));
    const stale = join(b, 'train', OBJECT_CLASS_FOLDERS[0]!, objectFileName(999));
    writeFileSync(stale, 'stale');
    rmSync(join(b, OBJECTS_MANIFEST));
    writeFileSync(join(b, 'objects.partial.json'), '{}');
    const warnings: string[] = [];
    const rerun = await writeObjectImages(b, { ...opts, warn: (m) => warnings.push(m) });
    assert.equal(rerun.reused, false);
    assert.ok(!existsSync(stale), 'a file of the interrupted run is left');
    assert.match(warnings.join('\n'), /unfinished set/);
    assert.deepEqual(readFileSync(file(b, 7)), b7);
    assert.ok(existsSync(join(b, OBJECTS_MANIFEST)) && !existsSync(join(b, 'objects.partial.json')));

    // A folder that is not ours is never cleared.
    const foreign = join(tmp, 'foreign');
    mkdirSync(join(foreign, 'train'), { recursive: true });
    writeFileSync(join(foreign, 'train', 'keep.png'), 'x');
    await assert.rejects(writeObjectImages(foreign, { ...opts, overwrite: true }), /not empty and is not an objects folder/);
    assert.ok(existsSync(join(foreign, 'train', 'keep.png')));
  });
});

describe('scenes use the transfer half', () => {
  test('default scenes draw only transfer sprites; sprites: all draws from every file', async () => {
    needSprites();
    const transfer = listClassFiles(DEFAULT_OBJECT_ROOTS, 'transfer');
    const pretrain = new Set(listClassFiles(DEFAULT_OBJECT_ROOTS, 'pretrain').flat());
    const gen = new SceneGenerator({ count: 10, size: 48, seed: 2, minObjects: 4, maxObjects: 5, backgrounds: 'procedural' });
    assert.equal(gen.options.sprites, 'transfer');
    SCENE_CLASSES.forEach((_, k) => assert.deepEqual(gen.spriteFiles(k), transfer[k]));
    let objects = 0;
    for (let i = 0; i < 10; i++) {
      for (const obj of (await gen.generate(i)).objects) {
        objects++;
        assert.ok(transfer[obj.categoryId - 1]!.includes(obj.file), `scene ${i}: ${obj.file} is not a transfer sprite of its class`);
        assert.ok(!pretrain.has(obj.file));
      }
    }
    assert.ok(objects >= 25, `only ${objects} objects`);
    const all = new SceneGenerator({ count: 1, sprites: 'all', backgrounds: 'procedural' });
    assert.deepEqual(all.spriteFiles(0), listClassFiles()[0]);
  });
});
