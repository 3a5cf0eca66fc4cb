// Image folders: labels from subfolders, a corrupt file skipped and reported
// once, a cache that is reused until a file changes and survives a crash at
// any point of its write, and symbolic links followed (loops ended, broken
// links reported).
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { CACHE_WRITE_STEPS, loadImageFolder, type CacheWriteStep, type ImageFolder } from '../src/data/image_folder.js';

const root = mkdtempSync(join(tmpdir(), 'selfsup-folder-'));
const images = join(root, 'images');
const cacheDir = join(root, 'cache');
after(() => rmSync(root, { recursive: true, force: true }));

async function solid(file: string, rgb: [number, number, number], width = 40, height = 30): Promise<void> {
  const img = sharp({ create: { width, height, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } });
  await (file.endsWith('.jpg') ? img.jpeg() : file.endsWith('.webp') ? img.webp({ lossless: true }) : img.png()).toFile(file);
}

before(async () => {
  mkdirSync(join(images, 'cats'), { recursive: true });
  mkdirSync(join(images, 'dogs', 'nested'), { recursive: true });
  await solid(join(images, 'cats', 'a.png'), [255, 0, 0]);
  await solid(join(images, 'cats', 'b.webp'), [0, 255, 0], 17, 50);
  await solid(join(images, 'dogs', 'c.jpg'), [0, 0, 255]);
  await solid(join(images, 'dogs', 'nested', 'd.png'), [10, 20, 30]);
  writeFileSync(join(images, 'dogs', 'broken.png'), Buffer.from('\x89PNG\r\n\x1a\nthis is not a png'));
  writeFileSync(join(images, 'cats', 'notes.txt'), 'ignored: not an image');
});

describe('loadImageFolder', () => {
  test('labels come from subfolders; a corrupt file is skipped with one warning', async () => {
    const warnings: string[] = [];
    const set = await loadImageFolder(images, { size: 16, cacheDir, warn: (m) => warnings.push(m) });
    assert.deepEqual(set.classNames, ['cats', 'dogs']);
    assert.deepEqual(set.files, ['cats/a.png', 'cats/b.webp', 'dogs/c.jpg', 'dogs/nested/d.png']);
    assert.deepEqual([...set.labels], [0, 0, 1, 1]);
    assert.equal(set.images.length, 4 * 16 * 16 * 3);
    assert.deepEqual([...set.images.subarray(0, 3)], [255, 0, 0]);
    assert.ok(Math.abs(set.images[2 * 768 + 2]! - 255) <= 2, 'JPEG blue survives');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /skipped 1 of 5 files/);
    assert.match(warnings[0]!, /dogs\/broken\.png: /);
    assert.equal(set.skipped.length, 1);
    assert.equal(set.cachedCount, 0);
  });

  test('the second load comes from the cache; changing a file re-decodes only it', async () => {
    const warnings: string[] = [];
    const again = await loadImageFolder(images, { size: 16, cacheDir, warn: (m) => warnings.push(m) });
    assert.equal(again.cachedCount, 4);
    assert.equal(warnings.length, 1, 'skipped files are still reported from the cache');
    assert.deepEqual(readdirSync(cacheDir).filter((f) => f.includes('.tmp-')), [], 'no temporary files left behind');

    await solid(join(images, 'cats', 'a.png'), [0, 0, 0]);
    utimesSync(join(images, 'cats', 'a.png'), new Date(), new Date(Date.now() + 5000));
    const changed = await loadImageFolder(images, { size: 16, cacheDir, warn: () => undefined });
    assert.equal(changed.cachedCount, 3);
    assert.deepEqual([...changed.images.subarray(0, 3)], [0, 0, 0]);

    rmSync(join(images, 'dogs', 'broken.png'));
    const fixed = await loadImageFolder(images, { size: 16, cacheDir, warn: () => assert.fail('nothing left to skip') });
    assert.equal(fixed.count, 4);
    assert.equal(fixed.cachedCount, 4);
  });

  test('a flat folder is unlabeled; grey output has one channel', async () => {
    const flat = join(root, 'flat');
    mkdirSync(flat, { recursive: true });
    await solid(join(flat, 'x.png'), [200, 200, 200]);
    await solid(join(flat, 'y.png'), [50, 50, 50]);
    const set = await loadImageFolder(flat, { size: [8, 12], channels: 1, cacheDir: null });
    assert.equal(set.classNames, undefined);
    assert.deepEqual([...set.labels], [-1, -1]);
    assert.equal(set.images.length, 2 * 8 * 12);
    assert.equal(set.images[0], 200);
  });

  test('a folder with nothing decodable is an error naming it', async () => {
    const bad = join(root, 'bad');
    mkdirSync(bad, { recursive: true });
    writeFileSync(join(bad, 'x.jpg'), 'nope');
    await assert.rejects(loadImageFolder(bad, { size: 8, cacheDir: null, warn: () => undefined }), /bad: none of its 1 images could be decoded/);
    await assert.rejects(loadImageFolder(join(root, 'missing'), { size: 8 }), /missing: not a folder/);
    assert.ok(!existsSync(join(bad, '.selfsup-cache')));
  });

  test('a cache write killed at any step: the next load is consistent or rebuilt, never another file\'s pixels', async () => {
    // One solid colour per file, so a pixel names its file.
    const colour = (n: number): [number, number, number] => [(n * 37) % 256, (n * 91 + 17) % 256, (n * 53 + 101) % 256];
    const dir = join(root, 'crash');
    const cache = join(root, 'crash-cache');
    const assertPixels = (set: ImageFolder, what: string) => {
      set.files.forEach((f, i) => {
        const n = Number(f.replace(/\D/g, ''));
        assert.deepEqual([...set.images.subarray(i * 48, i * 48 + 3)], colour(n), `${what}: ${f} has its own pixels`);
      });
    };
    const temps = () => readdirSync(cache).filter((f) => f.includes('.tmp-'));
    mkdirSync(dir, { recursive: true });
    for (let n = 0; n < 6; n++) await solid(join(dir, `img${n}.png`), colour(n));
    let next = 6;
    // Same count, other files: the old slots no longer line up with the new data file.
    const swapOne = async () => {
      const first = readdirSync(dir).sort()[0]!;
      rmSync(join(dir, first));
      await solid(join(dir, `img${next}.png`), colour(next));
      next++;
    };
    const load = (onCacheWrite?: (step: CacheWriteStep) => void) => loadImageFolder(dir, { size: 4, cacheDir: cache, onCacheWrite });
    assertPixels(await load(), 'first load');

    // The state the issue reproduced with a SIGKILL: the new data file renamed, the old manifest kept.
    const manifest = readdirSync(cache).find((f) => f.endsWith('.json'))!;
    copyFileSync(join(cache, manifest), join(root, 'old-manifest'));
    await swapOne();
    await load();
    copyFileSync(join(root, 'old-manifest'), join(cache, manifest));
    const afterTorn = await load();
    assertPixels(afterTorn, 'old manifest beside a new data file');
    assert.equal(afterTorn.cachedCount, 0, 'the unmatched data file is not trusted');

    for (const step of CACHE_WRITE_STEPS) {
      await swapOne();
      const killed = new Error(`killed at ${step}`);
      await assert.rejects(load((s) => { if (s === step) throw killed; }), killed);
      const after = await load();
      assertPixels(after, `after a kill at ${step}`);
      assert.equal(after.count, 6);
      assert.deepEqual(temps(), [], `after a kill at ${step}: its temporary files are removed`);
      const again = await load();
      assert.equal(again.cachedCount, 6, `after a kill at ${step}: the cache is whole again`);
      assertPixels(again, `after a kill at ${step}, reloaded`);
    }
  });

  test('temporary files: this key\'s from dead processes and any a day old are removed, live ones kept', async () => {
    const dir = join(root, 'temps');
    const cache = join(root, 'temps-cache');
    mkdirSync(dir, { recursive: true });
    await solid(join(dir, 'a.png'), [1, 2, 3]);
    await loadImageFolder(dir, { size: 4, cacheDir: cache });
    const key = readdirSync(cache).find((f) => f.endsWith('.json'))!.slice(0, -'.json'.length);
    const deadPid = 2 ** 22 + 12345; // above Linux's pid_max default: no such process
    const names = {
      dead: `${key}.json.tmp-${deadPid}-x`,
      ownKeyLive: `${key}.bin.tmp-1-y`, // pid 1 is alive: another process's write in flight
      otherKeyDead: `0123456789abcdef.bin.tmp-${deadPid}-z`, // another key: left alone until it is old
      otherKeyOld: `fedcba9876543210.json.tmp-${deadPid}-w`,
    };
    for (const n of Object.values(names)) writeFileSync(join(cache, n), 'partial');
    const old = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    utimesSync(join(cache, names.otherKeyOld), old, old);
    await loadImageFolder(dir, { size: 4, cacheDir: cache });
    assert.deepEqual(readdirSync(cache).filter((f) => f.includes('.tmp-')).sort(), [names.ownKeyLive, names.otherKeyDead].sort());
  });

  describe('symbolic links', () => {
    const linked = join(root, 'linked');
    const elsewhere = join(root, 'elsewhere');

    before(async () => {
      mkdirSync(join(linked, 'cats'), { recursive: true });
      mkdirSync(join(elsewhere, 'dogs'), { recursive: true });
      await solid(join(linked, 'cats', 'real.png'), [255, 0, 0]);
      for (let n = 0; n < 3; n++) {
        await solid(join(elsewhere, `cat${n}.png`), [0, 255, n]);
        symlinkSync(join(elsewhere, `cat${n}.png`), join(linked, 'cats', `link${n}.png`));
        await solid(join(elsewhere, 'dogs', `dog${n}.png`), [0, 0, 255 - n]);
      }
      symlinkSync(join(elsewhere, 'dogs'), join(linked, 'dogs')); // a linked class folder
      symlinkSync(join(elsewhere, 'gone.png'), join(linked, 'cats', 'broken.png'));
      symlinkSync(linked, join(linked, 'cats', 'loop')); // back to the top
      symlinkSync(join(linked, 'cats', 'self.png'), join(linked, 'cats', 'self.png')); // a link to itself
      writeFileSync(join(linked, 'cats', 'readme.txt'), 'not an image');
    });

    test('linked files and folders are read; broken links and loops are counted and reported', async () => {
      const warnings: string[] = [];
      const set = await loadImageFolder(linked, { size: 8, cacheDir: null, warn: (m) => warnings.push(m) });
      assert.deepEqual(set.classNames, ['cats', 'dogs']);
      assert.deepEqual(set.files, ['cats/link0.png', 'cats/link1.png', 'cats/link2.png', 'cats/real.png', 'dogs/dog0.png', 'dogs/dog1.png', 'dogs/dog2.png']);
      assert.deepEqual([...set.labels], [0, 0, 0, 0, 1, 1, 1]);
      assert.deepEqual([...set.images.subarray(0, 3)], [0, 255, 0]);
      assert.deepEqual([...set.images.subarray(6 * 192, 6 * 192 + 3)], [0, 0, 253]);
      assert.deepEqual(set.summary, { found: 11, used: 7, skipped: { 'not an image': 1, 'broken link': 1, 'link loop': 2 } });
      assert.deepEqual(set.skipped.map((s) => s.file).sort(), ['cats/broken.png', 'cats/loop', 'cats/self.png']);
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /skipped 3 of 10 files \(1 broken link, 2 link loop\)/);
      assert.match(warnings[0]!, /cats\/broken\.png: broken link/);
      assert.match(warnings[0]!, /cats\/loop: link loop/);
    });

    test('a folder that is itself a link, and two links to one folder', async () => {
      const top = join(root, 'top-link');
      symlinkSync(linked, top);
      const twice = join(root, 'twice');
      mkdirSync(twice);
      symlinkSync(join(elsewhere, 'dogs'), join(twice, 'a'));
      symlinkSync(join(elsewhere, 'dogs'), join(twice, 'b'));
      const viaLink = await loadImageFolder(top, { size: 8, cacheDir: null, warn: () => undefined });
      assert.equal(viaLink.count, 7);
      const set = await loadImageFolder(twice, { size: 8, cacheDir: null, warn: () => undefined });
      assert.deepEqual(set.files, ['a/dog0.png', 'a/dog1.png', 'a/dog2.png']);
      assert.deepEqual(set.summary.skipped, { 'folder listed twice': 1 });
    });
  });
});
