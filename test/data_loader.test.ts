// The loader: same seed gives the same batches (whatever the worker count),
// shuffling covers each sample once per epoch, drop_last, and clean shutdown.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { arrayImageSet } from '../src/data/image_set.js';
import { Loader, type LoaderOptions } from '../src/data/loader.js';
import type { Batch } from '../src/data/pipeline.js';
import { Rng } from '../src/core/random.js';
import { detcoPipeline, twoViewPipeline } from '../src/data/recipes.js';

const r = Rng.seeded(11);
const set = arrayImageSet(
  Uint8Array.from({ length: 50 * 28 * 28 }, () => r.int(0, 255)),
  { count: 50, height: 28, width: 28, channels: 1 },
  Array.from({ length: 50 }, (_, i) => i % 10),
);

async function collect(options: LoaderOptions, epochs = [0, 1], pipeline = detcoPipeline()): Promise<Batch[]> {
  const loader = new Loader(set, pipeline, options);
  const out: Batch[] = [];
  try {
    for (const e of epochs) for await (const b of loader.epoch(e)) out.push(b);
  } finally {
    await loader.close();
  }
  return out;
}

function assertSameBatches(a: Batch[], b: Batch[], what: string): void {
  assert.equal(a.length, b.length, what);
  a.forEach((x, i) => {
    const y = b[i]!;
    assert.deepEqual(x.indices, y.indices, `${what}: batch ${i} indices`);
    assert.deepEqual(x.labels, y.labels, `${what}: batch ${i} labels`);
    for (const name of Object.keys(x.tensors)) assert.deepEqual(x.tensors[name]!.data, y.tensors[name]!.data, `${what}: batch ${i} ${name}`);
    for (const name of Object.keys(x.aux)) assert.deepEqual(x.aux[name], y.aux[name], `${what}: batch ${i} ${name}`);
  });
}

describe('Loader', () => {
  test('same seed, identical batches, in-process and with 1 or 2 workers', async () => {
    const base = { batchSize: 16, seed: 5 };
    const inProcess = await collect({ ...base, workers: 0 });
    assertSameBatches(inProcess, await collect({ ...base, workers: 0 }), '0 workers twice');
    assertSameBatches(inProcess, await collect({ ...base, workers: 2 }), '0 vs 2 workers');
    assertSameBatches(inProcess, await collect({ ...base, workers: 1, prefetch: 1 }), '0 vs 1 worker');
    const other = await collect({ ...base, seed: 6, workers: 0 });
    assert.notDeepEqual(other[0]!.tensors.view1!.data, inProcess[0]!.tensors.view1!.data, 'another seed gives other views');
  });

  test('shuffles each epoch differently, visiting every sample once', async () => {
    const batches = await collect({ batchSize: 16, seed: 1, workers: 0 }, [0, 1], twoViewPipeline('mocov2'));
    assert.equal(batches.length, 8, '4 batches per epoch, the last with 2 samples');
    assert.deepEqual(batches.map((b) => b.indices.length), [16, 16, 16, 2, 16, 16, 16, 2]);
    const epoch0 = batches.slice(0, 4).flatMap((b) => [...b.indices]);
    const epoch1 = batches.slice(4).flatMap((b) => [...b.indices]);
    assert.deepEqual([...epoch0].sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i));
    assert.notDeepEqual(epoch0, epoch1);
    for (const b of batches) b.indices.forEach((i, k) => assert.equal(b.labels[k], i % 10));
    assert.deepEqual(batches[0]!.tensors.view1!.shape, [16, 32, 32, 1]);
  });

  test('drop_last and no shuffling', async () => {
    const batches = await collect({ batchSize: 16, shuffle: false, dropLast: true, workers: 1 }, [0], twoViewPipeline('simclr'));
    assert.equal(batches.length, 3);
    assert.deepEqual([...batches[1]!.indices], Array.from({ length: 16 }, (_, i) => 16 + i));
    assert.deepEqual(batches.map((b) => b.index), [0, 1, 2]);
  });

  test('an epoch can visit a given order (a method\'s sampler, repeats allowed); a bad order is an error', async () => {
    const order = Int32Array.from({ length: 50 }, (_, i) => (i * 7) % 10);
    const loader = new Loader(set, twoViewPipeline('simclr'), { batchSize: 16, workers: 0 });
    try {
      const seen: number[] = [];
      for await (const b of loader.epoch(0, 2, order)) seen.push(...b.indices);
      assert.deepEqual(seen, [...order.subarray(32)]);
      const bad = async (o: Int32Array) => {
        for await (const b of loader.epoch(0, 0, o)) void b;
      };
      await assert.rejects(bad(order.subarray(1)), /an epoch order must hold 50 indices in 0-49/);
      await assert.rejects(bad(Int32Array.from({ length: 50 }, () => 50)), /an epoch order must hold 50 indices in 0-49/);
    } finally {
      await loader.close();
    }
  });

  test('resuming mid-epoch gives the batches an uninterrupted run sees', async () => {
    const full = await collect({ batchSize: 8, seed: 2, workers: 0 }, [3]);
    for (const workers of [0, 2]) {
      const loader = new Loader(set, detcoPipeline(), { batchSize: 8, seed: 2, workers });
      const resumed: Batch[] = [];
      for await (const b of loader.epoch(3, 4)) resumed.push(b);
      await loader.close();
      assertSameBatches(resumed, full.slice(4), `resume with ${workers} workers`);
    }
  });

  test('breaking out of an epoch early, then closing, leaves nothing running', async () => {
    const loader = new Loader(set, detcoPipeline(), { batchSize: 8, workers: 2, prefetch: 4 });
    let n = 0;
    for await (const b of loader.epoch(0)) {
      assert.equal(b.indices.length, 8);
      if (++n === 2) break;
    }
    // The next epoch still works after an abandoned one.
    for await (const b of loader.epoch(1)) {
      assert.equal(b.epoch, 1);
      break;
    }
    await loader.close();
    await assert.rejects(async () => {
      for await (const b of loader.epoch(2)) void b;
    }, /used after close/);
  });

  test('an unclosed, idle loader does not keep the process alive', () => {
    // In a child process: read one epoch with a worker thread, never close the
    // loader, and the process must still exit by itself. The scenario is a
    // script file, not `node --input-type=module -e`, because worker threads
    // inherit the parent's execArgv and reject --input-type.
    const url = (file: string) => JSON.stringify(new URL(`../src/${file}`, import.meta.url).href);
    const script = `
      import { arrayImageSet } from ${url('data/image_set.js')};
      import { Loader } from ${url('data/loader.js')};
      import { Rng } from ${url('core/random.js')};
      import { twoViewPipeline } from ${url('data/recipes.js')};
      const r = Rng.seeded(11);
      const set = arrayImageSet(
        Uint8Array.from({ length: 50 * 28 * 28 }, () => r.int(0, 255)),
        { count: 50, height: 28, width: 28, channels: 1 },
        Array.from({ length: 50 }, (_, i) => i % 10),
      );
      const loader = new Loader(set, twoViewPipeline('byol'), { batchSize: 10, workers: 1 });
      let batches = 0;
      for await (const b of loader.epoch(0)) batches++;
      process.stdout.write('batches ' + batches + '\\n');
    `;
    const dir = mkdtempSync(join(tmpdir(), 'selfsup-loader-exit-'));
    const file = join(dir, 'unclosed_loader.mjs');
    writeFileSync(file, script);
    const timeoutMs = 10_000;
    let child;
    try {
      child = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const output = `stdout: ${child.stdout.trim()}\nstderr: ${child.stderr.trim()}`;
    if ((child.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT') {
      assert.fail(`the child process was still alive after ${timeoutMs} ms, killed: the unclosed loader keeps the process alive\n${output}`);
    }
    assert.ifError(child.error);
    assert.equal(child.status, 0, `the child process exited with ${child.status ?? child.signal}\n${output}`);
    assert.match(child.stdout, /^batches 5$/m, `the child did not read the epoch\n${output}`);
  });

  test('bad options and pipelines fail at construction, with clear messages', () => {
    assert.throws(() => new Loader(set, detcoPipeline(), { batchSize: 0 }), /batchSize must be a positive integer/);
    assert.throws(() => new Loader(set, detcoPipeline(), { batchSize: 4, workers: -1 }), /workers must be an integer >= 0/);
    assert.throws(() => new Loader(set, detcoPipeline(), { batchSize: 64, dropLast: true }), /leaves no batch from 50 samples/);
    const dup = { outputs: [...twoViewPipeline('mocov2').outputs, twoViewPipeline('mocov2').outputs[0]!] };
    assert.throws(() => new Loader(set, dup, { batchSize: 4 }), /two outputs are named 'view1'/);
  });
});
