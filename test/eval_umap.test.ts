// UMAP (src/eval/umap.ts, src/eval/protocols/umap.ts): trustworthiness by
// hand and against sklearn's formulation, the leave-one-out kNN vote, exact
// neighbours on both distance paths, a seeded UMAP of Gaussian blobs, the
// SVG plot and its PNG, the options, and the protocol on Fashion-MNIST.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { useBackend } from '../src/backend/select.js';
import { Rng } from '../src/core/random.js';
import { parseOrThrow } from '../src/core/schema.js';
import { FASHION_MNIST_DIR } from '../src/data/fashion_mnist.js';
import type { ProtocolInput } from '../src/eval/protocol.js';
import { UmapOptions, umapProtocol } from '../src/eval/protocols/umap.js';
import { knnAccuracy, knnVoteAccuracy, nearestNeighbours, svgSize, trustworthiness, umapEmbed, umapSvg, writeSvgPng } from '../src/eval/umap.js';
import type { LoadedBackbone } from '../src/io/backbone.js';
import { CheckpointConfig } from '../src/io/checkpoint.js';
import { ResNet } from '../src/nn/resnet.js';
import { assertClose } from './helpers.js';

const tmp = mkdtempSync(join(tmpdir(), 'selfsup-umap-'));
before(async () => {
  await useBackend('native');
});
after(() => rmSync(tmp, { recursive: true, force: true }));

const quiet = () => undefined;

/** `count` points per class around centres `gap` apart along the axes of `dim`-d space, unit Gaussian noise. */
function blobs(classes: number, count: number, dim: number, gap: number, seed: number): { x: Float32Array; labels: Int32Array } {
  const r = Rng.seeded(seed);
  const n = classes * count;
  const x = new Float32Array(n * dim);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % classes;
    labels[i] = c;
    for (let d = 0; d < dim; d++) x[i * dim + d] = (d === c ? gap : 0) + r.normal();
  }
  return { x, labels };
}

function randomPoints(n: number, dim: number, seed: number): Float32Array {
  const r = Rng.seeded(seed);
  return Float32Array.from({ length: n * dim }, () => r.normal());
}

/** sklearn.manifold.trustworthiness, transcribed: full distance matrices, argsort, the inverted index (float64, brute force). */
function sklearnTrustworthiness(x: Float32Array, dx: number, y: Float32Array, dy: number, k: number): number {
  const n = x.length / dx;
  const dist = (a: Float32Array, d: number, i: number, j: number) => {
    let s = 0;
    for (let t = 0; t < d; t++) s += (a[i * d + t]! - a[j * d + t]!) ** 2;
    return s;
  };
  let t = 0;
  for (let i = 0; i < n; i++) {
    const others = [...Array(n).keys()].filter((j) => j !== i);
    const byX = [...others].sort((a, b) => dist(x, dx, i, a) - dist(x, dx, i, b) || a - b);
    const inverted = new Map(byX.map((j, r) => [j, r + 1]));
    const byY = [...others].sort((a, b) => dist(y, dy, i, a) - dist(y, dy, i, b) || a - b).slice(0, k);
    for (const j of byY) t += Math.max(0, inverted.get(j)! - k);
  }
  return 1 - (t * 2) / (n * k * (2 * n - 3 * k - 1));
}

describe('trustworthiness', () => {
  test('by hand: 5 points in 1-D, the embedding swaps two neighbours', () => {
    // X = 0, 1, 3, 7, 15 (gaps 1, 2, 4, 8: no ties within a row). Y swaps the places of points 1 and 2: 0, 3, 1, 7, 15.
    // n = 5, and for k = 1 and k = 2 the factor 2 / (n k (2n - 3k - 1)) is 2 / 30 = 1/15.
    // k = 1, each point's nearest in Y and that point's rank r among its neighbours in X:
    //   0 -> 2 (Y dist 1), in X from 0: 1 (1), 2 (3): r = 2, r - k = 1
    //   1 -> 2 (Y dist 2; 0 is 3 away), in X from 1: 0 (1), 2 (2): r = 2, +1
    //   2 -> 0 (Y dist 1), in X from 3: 1 (2), 0 (3): r = 2, +1
    //   3 -> 1 (Y dist 4), in X from 7: 2 (4), 1 (6): r = 2, +1
    //   4 -> 3 (Y dist 8), its nearest in X too: r = 1, 0
    //   T(1) = 1 - 4/15 = 11/15.
    // k = 2: Y's pairs are {2, 1}, {2, 0}, {0, 1}, {1, 2}, {3, 1}; all are X's two nearest except point 4's
    //   1 (X from 15: 3 (8), 2 (12), 1 (14), so r = 3, r - k = 1): T(2) = 1 - 1/15 = 14/15.
    const x = Float32Array.from([0, 1, 3, 7, 15]);
    const y = Float32Array.from([0, 3, 1, 7, 15]);
    assertClose([trustworthiness(x, 1, y, 1, 1)], [11 / 15], { atol: 1e-12, rtol: 0 });
    assertClose([trustworthiness(x, 1, y, 1, 2)], [14 / 15], { atol: 1e-12, rtol: 0 });
    assertClose([sklearnTrustworthiness(x, 1, y, 1, 1), sklearnTrustworthiness(x, 1, y, 1, 2)], [11 / 15, 14 / 15], { atol: 1e-12, rtol: 0 });
  });

  test('is 1 for an identical embedding, and for a scaled and rotated copy', () => {
    const x = randomPoints(60, 2, 1);
    assert.equal(trustworthiness(x, 2, x, 2, 5), 1);
    const c = Math.cos(0.7);
    const s = Math.sin(0.7);
    const moved = new Float32Array(x.length);
    for (let i = 0; i < 60; i++) {
      moved[2 * i] = 3 * (c * x[2 * i]! - s * x[2 * i + 1]!) + 5;
      moved[2 * i + 1] = 3 * (s * x[2 * i]! + c * x[2 * i + 1]!) - 2;
    }
    assert.equal(trustworthiness(x, 2, moved, 2, 5), 1);
    // The GEMM path (more than 16 dimensions) against itself.
    const high = randomPoints(60, 40, 2);
    assert.equal(trustworthiness(high, 40, high, 40, 5), 1);
  });

  test("matches sklearn's formulation on random data, both distance paths", () => {
    const y = randomPoints(80, 2, 3);
    for (const dim of [3, 40]) {
      const x = randomPoints(80, dim, 4 + dim);
      for (const k of [1, 5, 12]) {
        const t = trustworthiness(x, dim, y, 2, k);
        assert.ok(t < 0.9, `random data is not trustworthy (${t})`);
        assertClose([t], [sklearnTrustworthiness(x, dim, y, 2, k)], { atol: 1e-9, rtol: 0 }, `dim ${dim}, k ${k}`);
      }
    }
  });

  test('errors on a bad k or mismatched sizes', () => {
    const x = randomPoints(10, 2, 5);
    assert.throws(() => trustworthiness(x, 2, x, 2, 5), /1 <= k < n \/ 2 \(n = 10\), got 5/);
    assert.throws(() => trustworthiness(x, 2, x, 2, 0), /got 0/);
    assert.throws(() => trustworthiness(x, 2, x.subarray(0, 18), 2, 2), /10 original points but 9 embedded/);
  });
});

describe('nearest neighbours and the kNN vote', () => {
  test('exact neighbours, nearest first, on both distance paths (GEMM above 16 dimensions)', () => {
    for (const dim of [2, 40]) {
      const n = 70;
      const x = randomPoints(n, dim, 10 + dim);
      const k = 7;
      const near = nearestNeighbours(x, dim, k);
      for (let i = 0; i < n; i++) {
        const d = [...Array(n).keys()]
          .filter((j) => j !== i)
          .map((j) => ({ j, d: Math.sqrt([...Array(dim).keys()].reduce((s, t) => s + (x[i * dim + t]! - x[j * dim + t]!) ** 2, 0)) }))
          .sort((a, b) => a.d - b.d || a.j - b.j)
          .slice(0, k);
        assert.deepEqual([...near.indices.subarray(i * k, (i + 1) * k)], d.map((e) => e.j), `dim ${dim}, point ${i}`);
        assertClose(near.distances.subarray(i * k, (i + 1) * k), d.map((e) => e.d), { atol: 1e-4, rtol: 1e-4 });
      }
    }
    assert.throws(() => nearestNeighbours(randomPoints(5, 2, 1), 2, 5), /k must be an integer in 1..4 \(5 points\), got 5/);
  });

  test('leave-one-out majority vote on a hand-made embedding', () => {
    // Two clusters of 3 and a class-0 stray inside class 1's: k = 3. Class 0's points vote 0, 0 and a
    // far class-1 point (2 of 3: right); class 1's see two of their own and the stray (right); the stray
    // sees three class-1 points (wrong). 6 of 7.
    const points = Float32Array.from([0, 0, 1, 0, 0, 1, 10, 0, 11, 0, 10, 1, 10.5, 0.5]);
    const labels = Int32Array.from([0, 0, 0, 1, 1, 1, 0]);
    const a = knnAccuracy(points, 2, labels, 3);
    assertClose([a.accuracy], [(100 * 6) / 7], { atol: 1e-9, rtol: 0 });
    assert.deepEqual([...a.predictions], [0, 0, 0, 1, 1, 1, 1]);
    // Ties (k = 2) go to the nearer voters. On a line: A 0 (class 0), B 1 (class 1), C 3 (0), D 4 (0).
    //   A: B (1, class 1), C (3, class 0): a tie, B is nearer -> 1, wrong
    //   B: A (1), C (2), both class 0 -> 0, wrong
    //   C: D (1, class 0), B (2, class 1): a tie -> 0, right;  D: C (1, class 0), B (3, class 1) -> 0, right
    // 50%; ties to the lower class would give 75%.
    const line = Float32Array.from([0, 0, 1, 0, 3, 0, 4, 0]);
    const t = knnAccuracy(line, 2, Int32Array.from([0, 1, 0, 0]), 2);
    assert.deepEqual([...t.predictions], [1, 0, 0, 0]);
    assert.equal(t.accuracy, 50);
    // Equal votes and equal total distance: the lower class.
    const even = knnVoteAccuracy({ k: 2, indices: Int32Array.from([1, 2, 0, 2, 0, 1]), distances: Float64Array.from([1, 1, 1, 1, 1, 1]) }, Int32Array.from([2, 1, 0]), 2);
    assert.deepEqual([...even.predictions], [0, 0, 1]);
  });
});

describe('UMAP embedding', () => {
  const { x, labels } = blobs(3, 50, 10, 10, 7);

  test('3 well-separated Gaussian blobs (150 points, 10-d): trustworthy and separable; a seed reproduces', async () => {
    const epochs: number[] = [];
    const settings = { nNeighbors: 15, minDist: 0.1, seed: 3, nEpochs: 200 };
    const a = await umapEmbed(x, 10, { ...settings, onEpoch: (e, total) => epochs.push(e, total) });
    assert.equal(a.embedding.length, 300);
    assert.ok(a.embedding.every(Number.isFinite));
    assert.equal(a.epochs, 200);
    assert.equal(epochs.at(-2), 200, 'the progress callback reaches the last epoch');
    assert.equal(epochs.at(-1), 200);
    const t = trustworthiness(x, 10, a.embedding, 2, 5);
    const acc = knnAccuracy(a.embedding, 2, labels, 20).accuracy;
    assert.ok(t > 0.9, `trustworthiness ${t}`);
    assert.ok(acc > 95, `kNN accuracy ${acc}`);
    const b = await umapEmbed(x, 10, settings);
    assert.deepEqual(b.embedding, a.embedding, 'the same seed gives the same embedding');
    const c = await umapEmbed(x, 10, { ...settings, seed: 4 });
    assert.notDeepEqual(c.embedding, a.embedding, 'another seed gives another one');
  });

  test('errors clearly on too few points or bad settings', async () => {
    await assert.rejects(umapEmbed(x.subarray(0, 100), 10, { nNeighbors: 15, minDist: 0.1, seed: 0 }), /10 points are too few for 15 neighbours/);
    await assert.rejects(umapEmbed(x, 10, { nNeighbors: 1, minDist: 0.1, seed: 0 }), /neighbors must be an integer >= 2, got 1/);
    await assert.rejects(umapEmbed(x, 10, { nNeighbors: 15, minDist: 2, seed: 0 }), /minDist must be in \[0, 1\]/);
  });
});

describe('the SVG plot', () => {
  test('one circle per point, a legend entry per class, escaped names; sharp renders it at its size', async () => {
    const n = 37;
    const embedding = Float64Array.from(randomPoints(n, 2, 9));
    const labels = Int32Array.from({ length: n }, (_, i) => i % 4);
    const names = ['T-shirt/top', 'a <b> & "c"', 'two', 'three'];
    const svg = umapSvg(embedding, labels, { classNames: names, title: 'blobs & more' });
    assert.equal(svg.match(/<circle /g)?.length, n);
    assert.match(svg, /a &lt;b&gt; &amp; &quot;c&quot;/);
    assert.match(svg, /<title>blobs &amp; more<\/title>/);
    assert.equal(svg.match(/<text /g)?.length, 1 + 4, 'the title and one legend line per class');
    // Class 0 and 1 have different colours, and every point's circle carries its class's.
    const fills = [...svg.matchAll(/<circle [^>]*fill="([^"]+)"/g)].map((m) => m[1]);
    assert.notEqual(fills[0], fills[1]);
    assert.equal(fills[0], fills[4]);
    // Every circle is inside the plot area.
    for (const m of svg.matchAll(/<circle cx="([\d.]+)" cy="([\d.]+)"/g)) {
      assert.ok(Number(m[1]) >= 0 && Number(m[1]) <= 800 && Number(m[2]) >= 40 && Number(m[2]) <= 840, m[0]);
    }
    const file = join(tmp, 'plot.png');
    await writeSvgPng(file, svg);
    const meta = await sharp(readFileSync(file)).metadata();
    const size = svgSize(4);
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', size.width, size.height]);
    // 30 classes: golden-angle colours, all distinct, and a taller plot for the legend.
    const many = umapSvg(Float64Array.from([0, 0, 1, 1]), Int32Array.from([0, 29]));
    assert.equal(new Set([...many.matchAll(/<rect [^>]*fill="(hsl[^"]+)"/g)].map((m) => m[1])).size, 30);
    assert.ok(svgSize(60).height > svgSize(4).height);
    assert.throws(() => umapSvg(embedding, labels.subarray(1)), /37 points but 36 labels/);
  });
});

describe('umap protocol', () => {
  test('options: defaults, and bad values error clearly', () => {
    const o = UmapOptions.parse({});
    assert.deepEqual(o, { points: 2000, neighbors: 15, minDist: 0.1, seed: 0, stage: 'res5', batchSize: 256, png: true });
    const bad = (raw: unknown, pattern: RegExp) => assert.throws(() => parseOrThrow(UmapOptions, raw, 'umap options'), pattern);
    bad({ points: 0 }, /umap options is invalid:\n {2}points: Number must be greater than 0/);
    bad({ neighbors: 1 }, /neighbors: Number must be greater than or equal to 2/);
    bad({ minDist: 1.5 }, /minDist: Number must be less than or equal to 1/);
    bad({ seed: 0.5 }, /seed: Expected integer/);
    bad({ epochs: -3 }, /epochs: Number must be greater than 0/);
    bad({ stage: 'res6' }, /stage: Invalid enum value/);
    bad({ perplexity: 30 }, /Unrecognized key\(s\) in object: 'perplexity'/);
  });

  const haveData = existsSync(join(FASHION_MNIST_DIR, 't10k-images-idx3-ubyte.gz'));
  test('on Fashion-MNIST test images: the plot files, the numbers, the report paths', { skip: !haveData && 'no Fashion-MNIST' }, async () => {
    const backbone = new ResNet({ depth: 18, stem: 'cifar', width: 4, inChannels: 1, seed: 3 });
    backbone.eval();
    const loaded: LoadedBackbone = {
      backbone,
      checkpoint: { path: join(tmp, 'run', 'main.safetensors'), sha256: null, method: 'detco', arch: 'resnet18 width 4 cifar stem', randomInit: true },
      config: CheckpointConfig.parse({ method: 'detco', seed: 0, model: { arch: 'resnet18', width: 4, stem: 'cifar' }, dataset: {} }),
      data: { channels: 1, numClasses: 10 },
    };
    try {
      const workDir = join(tmp, 'run', 'eval', 'umap-abc');
      const input: ProtocolInput = { kind: 'backbone', loaded, workDir };
      const lines: string[] = [];
      const result = await umapProtocol.run(input, UmapOptions.parse({ points: 120, neighbors: 10, epochs: 60, stage: 'res4' }), (l) => lines.push(l));
      assert.equal(result.metrics.points, 120);
      assert.ok(result.metrics.trustworthiness! > 0 && result.metrics.trustworthiness! <= 1);
      for (const key of ['knnAccuracy', 'featureKnnAccuracy']) assert.ok(result.metrics[key]! >= 0 && result.metrics[key]! <= 100, key);
      assert.deepEqual(result.artifacts, { svg: join('umap-abc', 'umap.svg'), png: join('umap-abc', 'umap.png') });
      const svg = readFileSync(join(dirname(workDir), result.artifacts!.svg!), 'utf8');
      assert.equal(svg.match(/<circle /g)?.length, 120);
      assert.match(svg, /Ankle boot/);
      const meta = await sharp(join(dirname(workDir), result.artifacts!.png!)).metadata();
      assert.deepEqual([meta.width, meta.height], [svgSize(10).width, svgSize(10).height]);
      assert.ok(lines.some((l) => /umap: epoch 60\/60/.test(l)), lines.join('\n'));
      assert.deepEqual(result.data, { name: 'fashion-mnist', testImages: 120, stage: 'res4', dim: 16 });
      const text = umapProtocol.format({ protocol: 'umap', metrics: result.metrics, data: { ...result.data!, trainImages: 0, testImages: 120 }, artifacts: result.artifacts! } as never);
      assert.match(text, /trustworthiness T\(5\)/);
      // Not saving: no plot, the numbers still.
      const unsaved = await umapProtocol.run({ kind: 'backbone', loaded, workDir: null }, UmapOptions.parse({ points: 40, neighbors: 5, epochs: 20 }), quiet);
      assert.deepEqual(unsaved.artifacts, {});
      assert.equal(unsaved.metrics.points, 40);
      await assert.rejects(umapProtocol.run({ kind: 'backbone', loaded, workDir: null }, UmapOptions.parse({ points: 20 }), quiet), /20 test images are too few/);
    } finally {
      backbone.dispose();
    }
  });
});
