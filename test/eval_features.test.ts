// src/eval/features.ts and feature_cache.ts: shapes per stage, eval-mode
// behaviour (BN running statistics, so a row does not depend on its batch),
// preprocessing that matches the training views, tensor hygiene, the cache
// (keyed by the images themselves, not only where they came from).
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import * as tf from '../src/core/tf.js';
import { useBackend } from '../src/backend/select.js';
import { arrayImageSet, selectImages } from '../src/data/image_set.js';
import { FASHION_MNIST_STATS } from '../src/data/recipes.js';
import { estimateBatchNormStatistics, extractFeatures, prepareBatch } from '../src/eval/features.js';
import { cachedFeatures, featureCachePath, imageSetDigest, type FeatureCacheKey } from '../src/eval/feature_cache.js';
import { FeatureInputOptions, prepareFeatures } from '../src/eval/feature_input.js';
import { CheckpointConfig } from '../src/io/checkpoint.js';
import type { LoadedBackbone } from '../src/io/backbone.js';
import { buildBackbone } from '../src/nn/backbone.js';
import { BatchNorm2d, globalAvgPool, ResNet } from '../src/nn/index.js';
import { assertClose, bufferValues, randomArray } from './helpers.js';

before(async () => {
  await useBackend('native');
});

const images = (count: number, seed: number, side = 28, channels = 1) =>
  arrayImageSet(randomArray(count * side * side * channels, seed, 0, 1), { count, height: side, width: side, channels });

function tinyResNet(): ResNet {
  return new ResNet({ depth: 18, stem: 'cifar', width: 4, inChannels: 1, seed: 3 });
}

/** Non-trivial running statistics, so eval mode and train mode really differ. */
function perturbRunningStats(model: ResNet): void {
  let i = 0;
  for (const [name, v] of model.namedBuffers()) {
    const value = name.endsWith('running_mean') ? 0.1 * ((i++ % 5) - 2) : 1.5;
    tf.tidy(() => v.assign(tf.fill(v.shape, value)));
  }
}

describe('extractFeatures', () => {
  test('pooled features of each stage: [count, channels of the stage]', async () => {
    const model = tinyResNet();
    try {
      const set = images(5, 1);
      for (const [stage, dim] of [['res2', 4], ['res3', 8], ['res4', 16], ['res5', 32]] as const) {
        const f = await extractFeatures(model, set, { size: 32, batchSize: 2, stage });
        assert.equal(f.dim, dim, stage);
        assert.equal(f.features.length, 5 * dim, stage);
        assert.ok(f.features.every(Number.isFinite), stage);
      }
    } finally {
      model.dispose();
    }
  });

  test('eval mode: rows do not depend on the batch, BN stats are untouched, the mode is restored, no tensor leaks', async () => {
    const model = tinyResNet();
    try {
      perturbRunningStats(model);
      model.train();
      const set = images(6, 2);
      const stats = () => bufferValues(model);
      const statsBefore = stats();
      const tensorsBefore = tf.memory().numTensors;
      const one = await extractFeatures(model, set, { size: 32, batchSize: 1 });
      const all = await extractFeatures(model, set, { size: 32, batchSize: 6 });
      assert.equal(tf.memory().numTensors, tensorsBefore);
      assertClose(one.features, all.features, { atol: 1e-4, rtol: 1e-4 });
      assert.deepEqual(stats(), statsBefore, 'running statistics are not updated');
      assert.ok(model.namedModules().every(([, m]) => m.training), 'training mode restored');

      // The same numbers as an explicit eval-mode forward on the prepared input.
      const input = new Float32Array(6 * 32 * 32);
      prepareBatch(set, 0, 6, 32, 'resize', FASHION_MNIST_STATS, input);
      model.eval();
      const expected = tf.tidy(() => globalAvgPool(model.forward(tf.tensor4d(input, [6, 32, 32, 1])).res5).dataSync());
      assertClose(all.features, expected, { atol: 1e-5 });
      // Train mode (batch statistics) gives other features: the test above is not vacuous.
      model.train();
      const trainMode = tf.tidy(() => globalAvgPool(model.forward(tf.tensor4d(input, [6, 32, 32, 1])).res5).dataSync());
      assert.ok(trainMode.some((v, i) => Math.abs(v - expected[i]!) > 1e-3));
    } finally {
      model.dispose();
    }
  });

  test('bad options name the problem', async () => {
    const model = tinyResNet();
    try {
      await assert.rejects(extractFeatures(model, images(1, 3, 8, 3), { size: 8, batchSize: 1 }), /backbone takes 1-channel images, the set has 3/);
      await assert.rejects(extractFeatures(model, images(1, 3), { size: 32, batchSize: 0 }), /batchSize must be a positive integer/);
      await assert.rejects(
        extractFeatures(model, images(1, 3), { size: 32, batchSize: 1, stage: 'res9' as 'res5' }),
        /stage must be one of res2, res3, res4, res5/,
      );
      await assert.rejects(extractFeatures(model, images(1, 3), { size: 32, batchSize: 1, mean: [0.5] }), /both mean and std/);
    } finally {
      model.dispose();
    }
  });
});

describe('estimateBatchNormStatistics', () => {
  test('running statistics become those of evenly spaced whole images; whole batches only; modes restored', () => {
    const model = tinyResNet();
    const reference = tinyResNet();
    try {
      perturbRunningStats(model);
      perturbRunningStats(reference);
      model.eval();
      const set = images(10, 4);
      const before = bufferValues(model);
      assert.equal(estimateBatchNormStatistics(model, set, { size: 32, batchSize: 5, limit: 5 }), 5);
      assert.notDeepEqual(bufferValues(model), before);
      assert.ok(model.namedModules().every(([, m]) => !m.training), 'eval mode restored');

      // One batch of images 0, 2, 4, 6, 8: running statistics = that batch's statistics (momentum 1).
      const input = new Float32Array(5 * 32 * 32);
      prepareBatch(selectImages(set, [0, 2, 4, 6, 8]), 0, 5, 32, 'resize', FASHION_MNIST_STATS, input);
      for (const [, m] of reference.namedModules()) if (m instanceof BatchNorm2d) m.momentum = 1;
      reference.train();
      tf.tidy(() => void reference.forward(tf.tensor4d(input, [5, 32, 32, 1])));
      assertClose(bufferValues(model).flat(), bufferValues(reference).flat(), { atol: 1e-5, rtol: 1e-4 });

      assert.equal(estimateBatchNormStatistics(model, set, { size: 32, batchSize: 4, limit: 100 }), 8, 'two batches of 4; the last 2 images dropped');
    } finally {
      model.dispose();
      reference.dispose();
    }
  });
});

describe('prepareBatch', () => {
  const set = arrayImageSet(Uint8Array.from({ length: 2 * 28 * 28 }, (_, i) => i % 251), { count: 2, height: 28, width: 28, channels: 1 });

  test('resize at the same size copies the pixels in [0, 1], then normalises', () => {
    const out = new Float32Array(28 * 28);
    prepareBatch(set, 1, 1, 28, 'resize', { mean: [0.5], std: [0.25] }, out);
    const expected = Array.from(set.images.subarray(784), (v) => (v / 255 - 0.5) / 0.25);
    assertClose(out, expected, { atol: 1e-5 });
  });

  test('pad: 28 -> 32 centres the image on a zero border (before normalisation)', () => {
    const out = new Float32Array(32 * 32);
    prepareBatch(set, 0, 1, 32, 'pad', null, out);
    for (let y = 0; y < 32; y++) {
      for (let x = 0; x < 32; x++) {
        const inside = y >= 2 && y < 30 && x >= 2 && x < 30;
        const expected = inside ? set.images[(y - 2) * 28 + (x - 2)]! / 255 : 0;
        assert.ok(Math.abs(out[y * 32 + x]! - expected) < 1e-6, `(${y}, ${x})`);
      }
    }
  });

  test('resize 28 -> 32 is the training views\' full-image crop: corners map to corners', () => {
    const out = new Float32Array(32 * 32);
    prepareBatch(set, 0, 1, 32, 'resize', null, out);
    assertClose([out[0]!, out[31]!, out[32 * 31]!, out[32 * 32 - 1]!], [0, 27, 27 * 28, 783 % 251].map((i) => set.images[i]! / 255), { atol: 1e-6 });
  });
});

describe('feature cache', () => {
  const key: FeatureCacheKey = { checkpoint: 'abc', stage: 'res5', split: 'fashion-mnist:test', count: 3, data: 'd1', size: 32, fit: 'resize', mean: [0.286], std: [0.353] };
  const value = { features: Float32Array.from([1, 2, 3, 4, 5, 6]), dim: 2 };

  test('computes once, then reads the file; another key or a damaged file computes again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'selfsup-features-'));
    try {
      let calls = 0;
      const compute = async () => {
        calls++;
        return { features: value.features.slice(), dim: value.dim };
      };
      const a = await cachedFeatures(dir, key, compute);
      const b = await cachedFeatures(dir, key, compute);
      assert.equal(calls, 1);
      assert.equal(a.cached, false);
      assert.equal(b.cached, true);
      assert.deepEqual(Array.from(b.features), Array.from(value.features));
      assert.equal(b.dim, 2);
      assert.deepEqual(readdirSync(dir), [featureCachePath(dir, key).slice(dir.length + 1)], 'one file, no temporaries left');

      await cachedFeatures(dir, { ...key, checkpoint: 'abd' }, compute);
      assert.equal(calls, 2, 'another checkpoint is another file');

      writeFileSync(featureCachePath(dir, key), 'SSFEAT01 garbage');
      const c = await cachedFeatures(dir, key, compute);
      assert.equal(calls, 3);
      assert.equal(c.cached, false);
      assert.equal((await cachedFeatures(dir, key, compute)).cached, true, 'the damaged file was replaced');

      const off = await cachedFeatures(null, key, compute);
      assert.equal(off.cached, false);
      assert.equal(calls, 4);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the digest of the data is part of the key: same tag and count, other pixels or labels, another file', () => {
    const a = images(4, 1);
    const b = images(4, 2);
    assert.equal(imageSetDigest(a), imageSetDigest(images(4, 1)));
    assert.notEqual(imageSetDigest(a), imageSetDigest(b));
    const relabelled = { ...a, labels: Int32Array.from([0, 0, 0, 1]) };
    assert.notEqual(imageSetDigest(a), imageSetDigest(relabelled));
    assert.notEqual(featureCachePath('/d', { ...key, data: imageSetDigest(a) }), featureCachePath('/d', { ...key, data: imageSetDigest(b) }));
  });

  test('prepareFeatures: a folder whose images were all replaced at the same path is a cache miss with the fresh features', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'selfsup-features-folder-'));
    const xdg = process.env.XDG_CACHE_HOME;
    process.env.XDG_CACHE_HOME = join(dir, 'xdg'); // loadImageFolder's default cache
    const folder = join(dir, 'images');
    const write = async (shift: number) => {
      for (const cls of ['a', 'b']) {
        mkdirSync(join(folder, cls), { recursive: true });
        for (let n = 0; n < 5; n++) {
          const file = join(folder, cls, `${n}.png`);
          const v = (shift + n * 40 + (cls === 'a' ? 0 : 20)) % 256;
          await sharp({ create: { width: 16, height: 16, channels: 3, background: { r: v, g: 255 - v, b: (v * 3) % 256 } } }).png().toFile(file);
          utimesSync(file, new Date(), new Date(Date.now() + shift * 1000));
        }
      }
    };
    const config = CheckpointConfig.parse({ method: 'simclr', seed: 1, model: { width: 4 }, dataset: { name: `folder:${folder}`, size: 16 } });
    const loaded: LoadedBackbone = {
      backbone: buildBackbone(config.model, 3, 1),
      checkpoint: { path: join(dir, 'run', 'last.ckpt'), sha256: 'c0ffee', method: 'simclr', arch: 'test', randomInit: false },
      config,
      data: { channels: 3, numClasses: 2 },
    };
    loaded.backbone.eval();
    const run = (cache = true) => prepareFeatures(loaded, FeatureInputOptions.parse({ cache }), () => undefined);
    try {
      await write(0);
      const first = await run();
      assert.equal(first.train.cached, false);
      assert.equal((await run()).train.cached, true, 'the same images: read from the cache');

      await write(100);
      const replaced = await run();
      assert.equal(replaced.train.cached, false, 'every image replaced: not read from the cache');
      assert.equal(replaced.test.cached, false);
      const fresh = await run(false);
      assert.deepEqual(Array.from(replaced.train.features), Array.from(fresh.train.features));
      assert.deepEqual(Array.from(replaced.test.features), Array.from(fresh.test.features));
      assert.notDeepEqual(Array.from(replaced.train.features), Array.from(first.train.features));
    } finally {
      loaded.backbone.dispose();
      if (xdg === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = xdg;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
