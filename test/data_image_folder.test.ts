// Image folders: labels from subfolders, a corrupt file skipped and reported
// once, and a cache that is reused until a file changes.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import sharp from 'sharp';
import { loadImageFolder } from '../src/data/image_folder.js';

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
});
