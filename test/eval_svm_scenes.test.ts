// The svm protocol on a scene folder (--scenes, src/eval/feature_input.ts):
// multi-hot labels from the COCO annotations, the protocol through
// app/evaluate.ts on a tiny 3-channel checkpoint, the feature cache keyed by
// the scenes themselves, and the refusals (single-label protocols, a grey
// backbone, a folder without annotations).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { evaluate } from '../src/app/evaluate.js';
import { useBackend } from '../src/backend/select.js';
import type { CocoDataset } from '../src/data/coco.js';
import { missingPackages } from '../src/data/packages.js';
import { writeScenes } from '../src/data/scenes.js';
import { FeatureInputOptions, prepareFeatures } from '../src/eval/feature_input.js';
import { svmProtocol } from '../src/eval/protocols/svm.js';
import { loadBackbone } from '../src/io/backbone.js';
import { writeBackboneCheckpoint } from './backbone_checkpoint.js';

const tmp = mkdtempSync(join(tmpdir(), 'selfsup-svm-scenes-'));
const quiet = () => undefined;

/** A random-init checkpoint (ResNet-18 width 4, CIFAR stem) taking `channels`-channel images, alone in its folder. */
function writeCheckpoint(name: string, channels: number): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  return writeBackboneCheckpoint(join(dir, 'last.safetensors'), { channels, seed: 5 });
}

/** 48 train + 12 val scenes of 32 px with 3-4 objects each: every one of the 18 classes is in at least 3 training scenes (seed 3). */
const sceneOptions = (seed: number) => ({ count: 60, size: 32, seed, valFraction: 0.2, backgrounds: 'procedural' as const, minObjects: 3, maxObjects: 4, warn: quiet });

const scenesA = join(tmp, 'scenes-a');
const scenesB = join(tmp, 'scenes-b');
let rgb = '';
let grey = '';

before(async () => {
  await useBackend('native');
  const missing = missingPackages(['tuxpaintStamps', 'openclipart']);
  assert.equal(missing.length, 0, `synthetic scenes need Debian packages: apt-get install ${missing.join(' ')}`);
  await writeScenes(scenesA, sceneOptions(3));
  await writeScenes(scenesB, sceneOptions(4));
  rgb = writeCheckpoint('rgb', 3);
  grey = writeCheckpoint('grey', 1);
});
after(() => rmSync(tmp, { recursive: true, force: true }));

/** The multi-hot rows of a split's first `n` images as the COCO file says: the categories by id, a 1 per category present. */
function expectedMultiHot(dir: string, split: 'train' | 'val', n: number): { rows: Uint8Array; names: string[] } {
  const coco = JSON.parse(readFileSync(join(dir, 'annotations', `instances_${split}.json`), 'utf8')) as CocoDataset;
  const categories = [...coco.categories].sort((a, b) => a.id - b.id);
  const K = categories.length;
  const rows = new Uint8Array(n * K);
  coco.images.slice(0, n).forEach((image, i) => {
    for (const a of coco.annotations) if (a.image_id === image.id) rows[i * K + categories.findIndex((c) => c.id === a.category_id)] = 1;
  });
  return { rows, names: categories.map((c) => c.name) };
}

const input = (o: Record<string, unknown>) => FeatureInputOptions.parse({ stage: 'res4', ...o });

describe('feature input from a scene folder', () => {
  test('multi-hot labels are the annotations\' categories per image; --limit and --test-limit take the first scenes; labels are -1', async () => {
    const loaded = loadBackbone(rgb);
    try {
      const f = await prepareFeatures(loaded, input({ scenes: scenesA, limit: 40, testLimit: 10, cache: false }), quiet);
      const train = expectedMultiHot(scenesA, 'train', 40);
      const test = expectedMultiHot(scenesA, 'val', 10);
      assert.equal(f.numClasses, 18);
      assert.deepEqual(f.classNames, train.names);
      assert.equal(f.dataset, `scenes:${scenesA}`);
      assert.equal(f.dim, 16, 'res4 of a width-4 ResNet-18');
      assert.equal(f.train.labels.length, 40);
      assert.equal(f.test.labels.length, 10);
      assert.equal(f.train.features.length, 40 * 16);
      assert.ok(f.train.labels.every((l) => l === -1) && f.test.labels.every((l) => l === -1));
      assert.deepEqual(f.train.multiLabels, train.rows);
      assert.deepEqual(f.test.multiLabels, test.rows);
      assert.ok(train.rows.some((v) => v === 1) && test.rows.some((v) => v === 1));
    } finally {
      loaded.backbone.dispose();
    }
  });

  test('the feature cache: a second read hits it; another scene folder, or the same folder with other scenes, misses it', async () => {
    const loaded = loadBackbone(rgb);
    const features = join(tmp, 'rgb', 'features');
    const files = () => (existsSync(features) ? readdirSync(features).filter((n) => n.startsWith('scenes')).length : 0);
    const read = async (dir: string) => {
      const f = await prepareFeatures(loaded, input({ scenes: dir, limit: 20, testLimit: 6 }), quiet);
      return { cached: [f.train.cached, f.test.cached], train: f.train.features };
    };
    try {
      const before = files();
      const first = await read(scenesA);
      assert.deepEqual(first.cached, [false, false]);
      assert.equal(files(), before + 2);
      const again = await read(scenesA);
      assert.deepEqual(again.cached, [true, true]);
      assert.deepEqual(again.train, first.train);
      assert.deepEqual((await read(scenesB)).cached, [false, false], 'another folder');
      assert.equal(files(), before + 4);
      // The same path with the other folder's scenes: the key's image digest changes.
      const c = join(tmp, 'scenes-c');
      cpSync(scenesA, c, { recursive: true });
      assert.deepEqual((await read(c)).cached, [false, false]);
      assert.deepEqual((await read(c)).cached, [true, true]);
      rmSync(c, { recursive: true });
      cpSync(scenesB, c, { recursive: true });
      const replaced = await read(c);
      assert.deepEqual(replaced.cached, [false, false], 'the same folder holding other scenes');
      assert.notDeepEqual(replaced.train, first.train);
    } finally {
      loaded.backbone.dispose();
    }
  });
});

describe('svm on --scenes through app/evaluate.ts', () => {
  test('multi-label mAP and CV mAP, no top-1, per-class positives from the annotations; the report names the scenes', async () => {
    const lines: string[] = [];
    const { report, path } = await evaluate({
      checkpoint: rgb,
      protocol: 'svm',
      options: { costs: '1,0.01,100' },
      input: { scenes: scenesA, stage: 'res4' },
      backend: 'native',
      log: (l) => lines.push(l),
    });
    assert.ok(path && existsSync(path));
    assert.deepEqual(Object.keys(report.metrics).sort(), ['cvMAP', 'mAP']);
    assert.ok(report.metrics.mAP! >= 0 && report.metrics.mAP! <= 100, `mAP ${report.metrics.mAP}`);
    assert.ok(report.metrics.cvMAP! >= 0 && report.metrics.cvMAP! <= 100, `CV mAP ${report.metrics.cvMAP}`);
    assert.equal(report.data.name, `scenes:${scenesA}`);
    assert.deepEqual([report.data.trainImages, report.data.testImages, report.data.stage, report.data.dim], [48, 12, 'res4', 16]);
    assert.equal(report.options.scenes, scenesA);
    assert.match(String(report.details!.labels), /^multi-label/);
    const train = expectedMultiHot(scenesA, 'train', 48);
    const test = expectedMultiHot(scenesA, 'val', 12);
    const column = (rows: Uint8Array, k: number) => Array.from({ length: rows.length / 18 }, (_, i) => rows[i * 18 + k]!).reduce((a, b) => a + b, 0);
    const perClass = report.details!.perClass as Array<{ class: number; name: string; cost: number; positives: number; testPositives: number; testAP: number | null }>;
    assert.equal(perClass.length, 18);
    for (const c of perClass) {
      assert.equal(c.name, train.names[c.class]);
      assert.equal(c.positives, column(train.rows, c.class));
      assert.equal(c.testPositives, column(test.rows, c.class));
      assert.equal(c.testAP === null, c.testPositives === 0);
      assert.ok([1, 0.01, 100].includes(c.cost));
    }
    const scored = perClass.filter((c) => c.testAP !== null);
    assert.ok(Math.abs(report.metrics.mAP! - scored.reduce((s, c) => s + c.testAP!, 0) / scored.length) < 1e-9);
    assert.ok(lines.some((l) => l.startsWith('svm class 18/18: chose cost')));
    const text = svmProtocol.format(report);
    assert.match(text, /^multi-label linear SVMs on res4 \(16-d\), 48 train -> 12 test images/);
    assert.match(text, /\(multi-label: no top-1\)/);
    assert.doesNotMatch(text, /top-1 \d/);
  });

  test('refusals: single-label protocols, a grey backbone, a folder without annotations, --data with --scenes', async () => {
    for (const protocol of ['knn', 'linear', 'retrieval']) {
      await assert.rejects(
        evaluate({ checkpoint: rgb, protocol, input: { scenes: scenesA, limit: 20, testLimit: 6 }, backend: 'native', save: false, log: quiet }),
        new RegExp(`^Error: ${protocol} needs one class per image; --scenes gives multi-label data: use svm$`),
      );
    }
    await assert.rejects(
      evaluate({ checkpoint: grey, protocol: 'svm', input: { scenes: scenesA }, backend: 'native', save: false, log: quiet }),
      /takes 1 channel; scenes are RGB: use a checkpoint pretrained on colour images \(e\.g\. the objects set\)/,
    );
    const bare = join(tmp, 'no-annotations');
    mkdirSync(join(bare, 'train', 'images'), { recursive: true });
    await assert.rejects(
      evaluate({ checkpoint: rgb, protocol: 'svm', input: { scenes: bare }, backend: 'native', save: false, log: quiet }),
      (err: Error) => err.message.includes(`--scenes ${bare} has no annotations (${join(bare, 'annotations', 'instances_train.json')} is missing)`),
    );
    await assert.rejects(
      evaluate({ checkpoint: rgb, protocol: 'svm', input: { scenes: scenesA, data: scenesB }, backend: 'native', save: false, log: quiet }),
      /--scenes .* and --data .* both name the evaluation data: give one/,
    );
  });
});
