// IDX parsing and Fashion-MNIST loading, including the broken files a user
// meets in practice: truncated downloads, the wrong file, mismatched counts.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { loadFashionMnist, FASHION_MNIST_DIR } from '../src/data/fashion_mnist.js';
import { parseIdx, readIdxFile } from '../src/data/idx.js';
import { missingPackages } from '../src/data/packages.js';

function idx(dims: number[], data?: Uint8Array): Uint8Array {
  const n = dims.reduce((a, b) => a * b, 1);
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 0x08;
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  const body = data ?? Uint8Array.from({ length: n }, (_, i) => i % 251);
  return Buffer.concat([header, body]);
}

const tmp = mkdtempSync(join(tmpdir(), 'selfsup-idx-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe('parseIdx', () => {
  test('reads dims and data', () => {
    const arr = parseIdx(idx([2, 3, 4]), 'x.idx', 3);
    assert.deepEqual(arr.dims, [2, 3, 4]);
    assert.equal(arr.data.length, 24);
    assert.equal(arr.data[23], 23);
  });

  test('truncated data names the file and the sizes', () => {
    const buf = idx([10, 28, 28]).subarray(0, 4 + 12 + 100);
    assert.throws(() => parseIdx(buf, 'train-images.idx'), /train-images\.idx: truncated: the header says 10x28x28 = 7840 bytes of data, the file has 100/);
  });

  test('truncated header', () => {
    assert.throws(() => parseIdx(idx([10, 28, 28]).subarray(0, 9), 'f.idx'), /f\.idx: truncated IDX header/);
  });

  test('wrong magic', () => {
    const buf = Buffer.from(idx([3]));
    buf[0] = 0x1f;
    assert.throws(() => parseIdx(buf, 'bad.idx'), /bad\.idx: bad IDX magic 0x1f00/);
    const floats = Buffer.from(idx([3]));
    floats[2] = 0x0d;
    assert.throws(() => parseIdx(floats, 'f.idx'), /f\.idx: IDX element type 0x0d is not supported/);
  });

  test('wrong number of dimensions (labels passed as images)', () => {
    assert.throws(() => parseIdx(idx([5]), 'labels.idx', 3), /labels\.idx: bad IDX magic: expected 3 dimensions, the header says 1/);
  });

  test('trailing bytes', () => {
    const buf = Buffer.concat([idx([4]), Buffer.from([1, 2])]);
    assert.throws(() => parseIdx(buf, 't.idx'), /t\.idx: 2 bytes of trailing data/);
  });

  test('gzip files, and truncated gzip', () => {
    const file = join(tmp, 'ok.gz');
    writeFileSync(file, gzipSync(idx([2, 2])));
    assert.deepEqual(readIdxFile(file).dims, [2, 2]);
    const gz = gzipSync(idx([100, 28, 28]));
    const cut = join(tmp, 'cut.gz');
    writeFileSync(cut, gz.subarray(0, gz.length >> 1));
    assert.throws(() => readIdxFile(cut), new RegExp(`${cut}: corrupt or truncated gzip data`));
  });
});

describe('loadFashionMnist', () => {
  function fakeDir(name: string, images: number, labels: number, labelValue = 3): string {
    const dir = join(tmp, name);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 't10k-images-idx3-ubyte.gz'), gzipSync(idx([images, 28, 28])));
    writeFileSync(join(dir, 't10k-labels-idx1-ubyte'), idx([labels], new Uint8Array(labels).fill(labelValue)));
    return dir;
  }

  test('a small valid copy (gzipped images, raw labels)', () => {
    const set = loadFashionMnist({ dir: fakeDir('ok', 5, 5), split: 'test' });
    assert.equal(set.count, 5);
    assert.equal(set.channels, 1);
    assert.equal(set.images.length, 5 * 784);
    assert.deepEqual([...set.labels], [3, 3, 3, 3, 3]);
    assert.equal(set.classNames![3], 'Dress');
  });

  test('image and label counts must agree', () => {
    const dir = fakeDir('counts', 5, 4);
    assert.throws(() => loadFashionMnist({ dir, split: 'test' }), /t10k-labels-idx1-ubyte: 4 labels, but .*t10k-images-idx3-ubyte\.gz has 5 images/);
  });

  test('labels must be classes 0-9', () => {
    const dir = fakeDir('labels', 2, 2, 12);
    assert.throws(() => loadFashionMnist({ dir, split: 'test' }), /label 12 at index 0 is not a Fashion-MNIST class/);
  });

  test('a missing file is named', () => {
    assert.throws(() => loadFashionMnist({ dir: join(tmp, 'nowhere') }), /nowhere\/train-images-idx3-ubyte\.gz not found/);
  });

  test('the installed data set (Debian dataset-fashion-mnist)', () => {
    const missing = missingPackages(['fashionMnist']);
    assert.equal(missing.length, 0, `Fashion-MNIST is not installed: apt-get install ${missing.join(' ')}`);
    const train = loadFashionMnist({ dir: FASHION_MNIST_DIR });
    const testSet = loadFashionMnist({ split: 'test', limit: 100 });
    assert.equal(train.count, 60000);
    assert.equal(testSet.count, 100);
    const perClass = new Array(10).fill(0);
    for (const l of train.labels) perClass[l]++;
    assert.deepEqual(perClass, new Array(10).fill(6000));
    let sum = 0;
    for (const v of train.images.subarray(0, 784 * 1000)) sum += v;
    const mean = sum / (784 * 1000) / 255;
    assert.ok(Math.abs(mean - 0.286) < 0.02, `mean pixel ${mean}`);
  });
});
