// Attention maps (src/eval/attention.ts, src/eval/protocols/attention.ts):
// the energy map, the upsampling convention, the colour map, the energy share
// on object masks, and the protocol's PNG grid on Fashion-MNIST and on a
// hand-made scene folder, with its errors.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '../src/core/tf.js';
import type { Tensor4D } from '@tensorflow/tfjs-core';
import { useBackend } from '../src/backend/select.js';
import { encodeRle, type CocoDataset } from '../src/data/coco.js';
import { FASHION_MNIST_STATS } from '../src/data/recipes.js';
import {
  attentionEnergy,
  blendOverlay,
  checkStage,
  composeGrid,
  energyMap,
  maskEnergyShare,
  networkInput,
  normalizePerImage,
  toRgbBytes,
  unionMask,
  upsampleBilinear,
  viridis,
  VIRIDIS,
} from '../src/eval/attention.js';
import { AttentionOptions, attentionProtocol } from '../src/eval/protocols/attention.js';
import type { ProtocolInput } from '../src/eval/protocol.js';
import type { LoadedBackbone } from '../src/io/backbone.js';
import { CheckpointConfig } from '../src/io/checkpoint.js';
import { ResNet } from '../src/nn/resnet.js';
import { assertClose, randomArray } from './helpers.js';
import { writeBackboneCheckpoint } from './backbone_checkpoint.js';

const tmp = mkdtempSync(join(tmpdir(), 'selfsup-attention-'));
before(async () => {
  await useBackend('native');
});
after(() => rmSync(tmp, { recursive: true, force: true }));

const quiet = () => undefined;

/** The test's run config: ResNet-18 width 4, CIFAR stem, Fashion-MNIST at 32 px. */
const config = (method: string) => CheckpointConfig.parse({ method, seed: 0, model: { arch: 'resnet18', width: 4, stem: 'cifar' }, dataset: {} });

/** A LoadedBackbone as io/backbone.ts's loadBackbone returns it, built by hand. */
function loadedBackbone(channels: number, seed = 3): LoadedBackbone {
  const backbone = new ResNet({ depth: 18, stem: 'cifar', width: 4, inChannels: channels, seed });
  backbone.eval();
  return {
    backbone,
    checkpoint: { path: join(tmp, 'main.safetensors'), sha256: null, method: 'detco', arch: 'resnet18 width 4 cifar stem', randomInit: false },
    config: config('detco'),
    data: { channels, numClasses: 10 },
  };
}

/** A checkpoint file whose backbone takes `channels`-channel images (what --compare reads). */
function writeCheckpoint(name: string, channels: number, seed: number): string {
  return writeBackboneCheckpoint(join(tmp, name), { channels, seed });
}

function backboneInput(loaded: LoadedBackbone, workDir: string | null): ProtocolInput {
  return { kind: 'backbone', loaded, workDir };
}

describe('attention helpers', () => {
  test('the energy map is the mean over channels of the squared activation', () => {
    // [1, 1, 2, 3]: pixel 0 is (1, -2, 3), pixel 1 is (0, 0.5, -4).
    const a = tf.tensor4d([1, -2, 3, 0, 0.5, -4], [1, 1, 2, 3]);
    const e = energyMap(a);
    assert.deepEqual(e.shape, [1, 1, 2, 1]);
    assertClose(e.dataSync(), [(1 + 4 + 9) / 3, (0 + 0.25 + 16) / 3], { atol: 1e-6 });
    tf.dispose([a, e]);
  });

  test('bilinear upsampling uses half-pixel centres (align_corners=false): 2x2 -> 4x4 by hand', () => {
    // Output pixel i samples source (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to the
    // edge: a row [0, 4] becomes [0, 1, 3, 4], and rows mix the same way.
    const m = tf.tensor4d([0, 4, 8, 12], [1, 2, 2, 1]);
    const up = upsampleBilinear(m, 4, 4);
    assert.deepEqual(up.shape, [1, 4, 4, 1]);
    assertClose(up.dataSync(), [0, 1, 3, 4, 2, 3, 5, 6, 6, 7, 9, 10, 8, 9, 11, 12], { atol: 1e-5 });
    // align_corners=true would give 0, 4/3, 8/3, 4 along the first row: the convention is not moot.
    const corners = tf.image.resizeBilinear(m, [4, 4], true);
    assertClose(corners.dataSync().slice(0, 4), [0, 4 / 3, 8 / 3, 4], { atol: 1e-5 });
    tf.dispose([m, up, corners]);
  });

  test('viridis: the table endpoints, interpolation between stops, clamping', () => {
    assert.deepEqual(viridis(0), [68, 1, 84]);
    assert.deepEqual(viridis(1), [253, 231, 37]);
    assert.deepEqual(VIRIDIS[0], [68, 1, 84]);
    assert.deepEqual(VIRIDIS.at(-1), [253, 231, 37]);
    assert.deepEqual(viridis(-3), viridis(0));
    assert.deepEqual(viridis(7), viridis(1));
    assert.deepEqual(viridis(0.5), [0x21, 0x91, 0x8c]);
    assertClose(viridis(0.05), [(0x44 + 0x48) / 2, (0x01 + 0x24) / 2, (0x54 + 0x75) / 2], { atol: 1e-9 });
  });

  test('per-image normalisation to [0, 1], a flat map to 0; blending; grey stays grey', () => {
    const maps = Float32Array.from([1, 3, 2, 5, 7, 7, 7, 7]);
    assertClose(normalizePerImage(maps, 4), [0, 0.5, 0.25, 1, 0, 0, 0, 0], { atol: 1e-7 });
    const grey = toRgbBytes(Float32Array.from([0, 0.5, 1]), 3, 1);
    assert.deepEqual([...grey], [0, 0, 0, 128, 128, 128, 255, 255, 255]);
    const rgb = Uint8Array.from([100, 100, 100, 0, 0, 0]);
    assert.deepEqual([...blendOverlay(rgb, Float32Array.from([0, 1]), 0)], [...rgb], 'alpha 0 is the image');
    assert.deepEqual([...blendOverlay(rgb, Float32Array.from([0, 1]), 1)], [68, 1, 84, 253, 231, 37], 'alpha 1 is the colour map');
    assert.deepEqual([...blendOverlay(rgb, Float32Array.from([0, 1]), 0.5)], [84, 51, 92, 127, 116, 19]);
  });

  test('energy share in a mask: all inside = 1, uniform = the area share, all outside = 0', () => {
    // 8x8 image, mask a 4x4 square at (2, 2).
    const mask = new Uint8Array(64);
    for (let y = 2; y < 6; y++) for (let x = 2; x < 6; x++) mask[y * 8 + x] = 1;
    const inside = Float32Array.from(mask, (m) => (m ? 2.5 : 0));
    assert.deepEqual(maskEnergyShare(inside, mask), { energyShare: 1, areaShare: 0.25 });
    const uniform = new Float32Array(64).fill(0.3);
    const s = maskEnergyShare(uniform, mask);
    assert.ok(Math.abs(s.energyShare - 0.25) < 1e-9 && s.areaShare === 0.25);
    const outside = Float32Array.from(mask, (m) => (m ? 0 : 1));
    assert.equal(maskEnergyShare(outside, mask).energyShare, 0);
    assert.ok(Number.isNaN(maskEnergyShare(new Float32Array(64), mask).energyShare), 'no energy: undefined share');
    // The union of two overlapping instance masks, from COCO RLE.
    const a = new Uint8Array(64);
    const b = new Uint8Array(64);
    a.fill(1, 0, 16);
    b.fill(1, 8, 24);
    const ann = (id: number, m: Uint8Array) => ({ id, image_id: 1, category_id: 1, bbox: [0, 0, 8, 3] as [number, number, number, number], area: 16, iscrowd: 0 as const, segmentation: encodeRle(m, 8, 8) });
    const union = unionMask([ann(1, a), ann(2, b)], 8, 8);
    assert.equal(union.reduce((x, y) => x + y, 0), 24);
  });

  test('grid layout: cell (r, c) lands at rows r*h.., columns c*w..', () => {
    const cell = (v: number) => new Uint8Array(2 * 3 * 3).fill(v);
    const g = composeGrid([[cell(1), cell(2)], [cell(3), cell(4)]], 2, 3);
    assert.equal(g.width, 6);
    assert.equal(g.height, 4);
    const at = (y: number, x: number) => g.rgb[(y * 6 + x) * 3];
    assert.deepEqual([at(0, 0), at(1, 5), at(2, 2), at(3, 3)], [1, 2, 3, 4]);
  });

  test("attentionEnergy is the stage's energy upsampled, in eval mode; grey input is normalised with the Fashion-MNIST statistics", async () => {
    const loaded = loadedBackbone(1);
    try {
      const pixels = randomArray(2 * 32 * 32, 5, 0, 1);
      const x = networkInput(pixels, 32 * 32, 1, 1);
      assertClose(x.subarray(0, 3), Array.from(pixels.subarray(0, 3), (v) => (v - FASHION_MNIST_STATS.mean[0]!) / FASHION_MNIST_STATS.std[0]!), { atol: 1e-6 });
      loaded.backbone.train();
      const before = tf.memory().numTensors;
      const { energy, mapSize } = await attentionEnergy(loaded.backbone, x, [2, 32, 32, 1], 'res4');
      assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
      assert.ok(loaded.backbone.training, 'the mode is restored');
      assert.deepEqual(mapSize, [8, 8], 'res4 of a 32 px input with the CIFAR stem is 8x8');
      loaded.backbone.eval();
      const expected = tf.tidy(() => {
        const a = loaded.backbone.forward(tf.tensor4d(x, [2, 32, 32, 1]) as Tensor4D).res4;
        return tf.image.resizeBilinear(tf.mean(tf.square(a), 3, true) as Tensor4D, [32, 32], false, true).dataSync();
      });
      assertClose(energy, expected, { atol: 1e-5, rtol: 1e-4 });
      assert.ok(energy.every((v) => v >= 0) && energy.some((v) => v > 0));
    } finally {
      loaded.backbone.dispose();
    }
  });
});

/** A scene folder by hand: `count` RGB images of 32x32, image k with one square object of side 8 + 8k at (4, 4). */
async function writeScenes(dir: string, count: number): Promise<number[]> {
  mkdirSync(join(dir, 'annotations'), { recursive: true });
  mkdirSync(join(dir, 'val', 'images'), { recursive: true });
  const coco: CocoDataset = { info: {}, licenses: [], images: [], annotations: [], categories: [{ id: 1, name: 'square', supercategory: 'shape' }] };
  const areas: number[] = [];
  await Promise.all(
    Array.from({ length: count }, async (_, k) => {
      const side = 8 + 8 * (k % 3);
      const mask = new Uint8Array(32 * 32);
      const rgb = new Uint8Array(32 * 32 * 3).fill(40);
      for (let y = 4; y < 4 + side; y++) {
        for (let x = 4; x < 4 + side; x++) {
          mask[y * 32 + x] = 1;
          rgb.fill(220, (y * 32 + x) * 3, (y * 32 + x) * 3 + 3);
        }
      }
      areas[k] = (side * side) / (32 * 32);
      const file = `${k}.png`;
      await sharp(rgb, { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(join(dir, 'val', 'images', file));
      coco.images[k] = { id: k + 1, file_name: file, width: 32, height: 32 };
      coco.annotations[k] = { id: k + 1, image_id: k + 1, category_id: 1, bbox: [4, 4, side, side], area: side * side, iscrowd: 0, segmentation: encodeRle(mask, 32, 32) };
    }),
  );
  writeFileSync(join(dir, 'annotations', 'instances_val.json'), JSON.stringify(coco));
  return areas;
}

describe('attention protocol', () => {
  test('Fashion-MNIST, with a --compare checkpoint: a PNG grid of rows x (1 + checkpoints) cells of 32 px, the image column grey', async () => {
    const loaded = loadedBackbone(1);
    const other = writeCheckpoint('moco.safetensors', 1, 9);
    const workDir = join(tmp, 'run', 'eval', 'attention-abc');
    try {
      const o = AttentionOptions.parse({ images: 3, compare: other });
      assert.deepEqual(o.compare, [other], 'a comma-separated string becomes a list');
      assert.equal(o.stage, 'res4');
      const result = await attentionProtocol.run(backboneInput(loaded, workDir), o, quiet);
      assert.equal(result.artifacts?.grid, join('attention-abc', 'attention.png'), 'relative to the report <run>/eval/attention-abc.json');
      const png = join(tmp, 'run', 'eval', result.artifacts!.grid!);
      const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
      assert.deepEqual([info.width, info.height, info.channels], [3 * 32, 3 * 32, 3]);
      for (let y = 0; y < 3 * 32; y++) {
        for (let x = 0; x < 32; x++) {
          const p = (y * info.width + x) * 3;
          assert.ok(data[p] === data[p + 1] && data[p] === data[p + 2], `image column pixel (${x}, ${y}) is grey`);
        }
      }
      // The map columns are coloured: some pixel has R, G and B apart.
      const coloured = (col: number) => {
        for (let y = 0; y < info.height; y++) for (let x = col * 32; x < (col + 1) * 32; x++) {
          const p = (y * info.width + x) * 3;
          if (data[p] !== data[p + 1] || data[p + 1] !== data[p + 2]) return true;
        }
        return false;
      };
      assert.ok(coloured(1) && coloured(2));
      assert.equal(result.metrics.images, 3);
      assert.equal(result.metrics.energyShare, undefined, 'no masks, no share');
      const columns = result.details!.columns as Array<{ method: string; mapSize: number[] }>;
      assert.deepEqual(columns.map((c) => c.method), ['detco', 'mocov2']);
      assert.deepEqual(columns[0]!.mapSize, [8, 8]);
      // Without a report folder nothing is written.
      const unsaved = await attentionProtocol.run(backboneInput(loaded, null), AttentionOptions.parse({ images: 1 }), quiet);
      assert.deepEqual(unsaved.artifacts, {});
    } finally {
      loaded.backbone.dispose();
    }
  });

  test('scenes: energy and area shares on the objects, and the grid with --scale', async () => {
    const dir = join(tmp, 'scenes');
    const areas = await writeScenes(dir, 2);
    const loaded = loadedBackbone(3);
    const workDir = join(tmp, 'scene-run', 'eval', 'attention-s');
    try {
      const result = await attentionProtocol.run(backboneInput(loaded, workDir), AttentionOptions.parse({ images: 5, scenes: dir, scale: 2 }), quiet);
      const m = result.metrics;
      assert.equal(m.images, 2, 'as many as the folder has');
      assert.ok(Math.abs(m.areaShare! - 100 * ((areas[0]! + areas[1]!) / 2)) < 1e-9, `area share ${m.areaShare}`);
      assert.ok(m.energyShare! > 0 && m.energyShare! < 100, `energy share ${m.energyShare}`);
      assert.ok(Math.abs(m.concentration! - m.energyShare! / m.areaShare!) < 1e-9);
      const meta = await sharp(join(tmp, 'scene-run', 'eval', result.artifacts!.grid!)).metadata();
      assert.deepEqual([meta.width, meta.height], [2 * 2 * 32, 2 * 2 * 32]);
      assert.match(result.data!.name!, /scenes .* \(val\)/);
      assert.match(attentionProtocol.format({ ...result, protocol: 'attention', checkpoint: loaded.checkpoint, data: { trainImages: 0, testImages: 2, ...result.data, name: 'x' }, options: {}, artifacts: result.artifacts ?? {}, backend: 'native', createdAt: '', seconds: 0 }), /energy on objects/);
    } finally {
      loaded.backbone.dispose();
    }
  });

  test('scenes with --measure: the share over more scenes than the grid shows, the per-scene shares the same whichever number the grid shows', async () => {
    const dir = join(tmp, 'scenes-40');
    const areas = await writeScenes(dir, 40);
    const loaded = loadedBackbone(3);
    try {
      const measured = await attentionProtocol.run(backboneInput(loaded, join(tmp, 'm-run', 'eval', 'a')), AttentionOptions.parse({ images: 2, measure: 40, scenes: dir }), quiet);
      const shown = await attentionProtocol.run(backboneInput(loaded, null), AttentionOptions.parse({ images: 40, scenes: dir }), quiet);
      assert.equal(measured.metrics.images, 40);
      assert.ok(Math.abs(measured.metrics.areaShare! - (100 * areas.reduce((a, b) => a + b, 0)) / 40) < 1e-9);
      const shares = (r: typeof measured) => (r.details!.columns as Array<{ energyShare: Array<number | null> }>)[0]!.energyShare;
      assert.equal(shares(measured).length, 40);
      assert.deepEqual(shares(measured), shares(shown), 'the same per-scene shares, whichever number is shown');
      assert.deepEqual((measured.details!.grid as { rows: number }).rows, 2);
      const meta = await sharp(join(tmp, 'm-run', 'eval', measured.artifacts!.grid!)).metadata();
      assert.deepEqual([meta.width, meta.height], [2 * 32, 2 * 32], 'two rows of image + map');
      await assert.rejects(attentionProtocol.run(backboneInput(loaded, null), AttentionOptions.parse({ measure: 4 }), quiet), /--measure needs --scenes/);
    } finally {
      loaded.backbone.dispose();
    }
  });

  test('errors name the bad input: stage, a scenes folder without annotations, a --compare of other channels', async () => {
    const bad = AttentionOptions.safeParse({ stage: 'res9' });
    assert.ok(!bad.success && /res9/.test(bad.error.message) && /res4/.test(bad.error.message));
    assert.throws(() => checkStage('conv1'), /unknown stage 'conv1'.*res2, res3, res4, res5/);
    assert.ok(!AttentionOptions.safeParse({ columns: 3 }).success, 'strict: unknown options are refused');
    const loaded = loadedBackbone(1);
    try {
      const empty = join(tmp, 'no-annotations');
      mkdirSync(empty, { recursive: true });
      await assert.rejects(
        attentionProtocol.run(backboneInput(loaded, null), AttentionOptions.parse({ scenes: empty }), quiet),
        (err: Error) => err.message.includes(`--scenes ${empty}`) && err.message.includes('instances_val.json'),
      );
      const rgb = writeCheckpoint('rgb.safetensors', 3, 4);
      await assert.rejects(
        attentionProtocol.run(backboneInput(loaded, null), AttentionOptions.parse({ compare: [rgb] }), quiet),
        (err: Error) => err.message.includes(`--compare ${rgb}`) && /3-channel images, --checkpoint's takes 1/.test(err.message),
      );
      const missing = join(tmp, 'nope');
      await assert.rejects(attentionProtocol.run(backboneInput(loaded, null), AttentionOptions.parse({ compare: missing }), quiet), new RegExp(`--compare: ${missing} does not exist`));
    } finally {
      loaded.backbone.dispose();
    }
  });
});
