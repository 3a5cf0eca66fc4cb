// Checkpoints: the safetensors writer and reader, atomic replacement under a
// crash, and the errors a corrupt, truncated or mismatched file gets.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as tf from '../src/core/tf.js';
import { parseRunConfig, type RunConfig } from '../src/train/config.js';
import { assertCompatible } from '../src/train/setup.js';
import { loadBackbone, restoreBackbone } from '../src/io/backbone.js';
import {
  readCheckpoint,
  restoreMethod,
  restoreOptimizer,
  saveCheckpoint,
  type CheckpointState,
} from '../src/io/checkpoint.js';
import { SGD, namedParameters } from '../src/train/optimizers.js';
import { decodeSafetensors, encodeSafetensors } from '../src/io/safetensors.js';
import { fashionMethod } from './method_runs.js';

await tf.setBackend('cpu');

const concat = (chunks: Uint8Array[]) => Buffer.concat(chunks.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength)));

function tinyConfig(dir: string, over: Record<string, unknown> = {}): RunConfig {
  return parseRunConfig({ out: dir, model: { width: 2 }, ...over });
}

function state(config: RunConfig, step = 3): CheckpointState {
  return {
    config,
    position: { step, epoch: 0, batch: step },
    data: { channels: 1, numClasses: 10, seed: 0, datasetCount: 64, batchSize: 16, stepsPerEpoch: 4 },
    metrics: [],
    epoch: { sums: { loss: 6.9 }, batches: 3, images: 48, seconds: 0.3 },
    elapsed: 1.5,
  };
}

test('safetensors round trip: F32, I32 and U8 tensors and string metadata', () => {
  const tensors = {
    'b.weight': { dtype: 'F32' as const, shape: [2, 3], data: Float32Array.from([1.5, -2, 3e-8, Infinity, 0, -0]) },
    'a.count': { dtype: 'I32' as const, shape: [], data: Int32Array.from([-7]) },
    'c.mask': { dtype: 'U8' as const, shape: [3], data: Uint8Array.from([1, 0, 255]) },
  };
  const bytes = concat(encodeSafetensors(tensors, { note: 'héllo', n: '3' }));
  const headerLength = Number(bytes.readBigUInt64LE(0));
  assert.equal(headerLength % 8, 0, 'header padded to 8 bytes');
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString());
  assert.deepEqual(header['a.count'], { dtype: 'I32', shape: [], data_offsets: [0, 4] });
  assert.deepEqual(header['b.weight'].data_offsets, [4, 28]);
  assert.equal(bytes.length, 8 + headerLength + 4 + 24 + 3);
  const back = decodeSafetensors(bytes);
  assert.deepEqual(back.tensors['b.weight'], tensors['b.weight']);
  assert.deepEqual(back.tensors['a.count'], tensors['a.count']);
  assert.deepEqual(back.tensors['c.mask'], tensors['c.mask']);
  assert.equal(back.metadata.note, 'héllo');
  assert.match(back.metadata.sha256!, /^[0-9a-f]{64}$/);
});

test('safetensors reader reads a file written to the spec by someone else (no padding, no checksum)', () => {
  const header = Buffer.from(JSON.stringify({ x: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, __metadata__: { format: 'pt' } }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  const data = Buffer.from(Float32Array.from([0.25, -4]).buffer);
  const back = decodeSafetensors(Buffer.concat([len, header, data]));
  assert.deepEqual(Array.from(back.tensors.x!.data), [0.25, -4]);
  assert.equal(back.metadata.format, 'pt');
});

test('checkpoint round trip restores model, buffers and optimizer state', () => {
  const dir = mkdtempSync(join(tmpdir(), 'selfsup-ckpt-'));
  const config = tinyConfig(dir);
  const a = fashionMethod(config);
  const optA = new SGD(namedParameters(a), { momentum: 0.9 });
  // One step so the momentum buffers and BN running statistics are not at their initial values.
  const vars = a.parameters();
  const { value, grads } = tf.variableGrads(() => tf.mean(tf.square(a.backbone.features(tf.ones([2, 8, 8, 1])))) as tf.Scalar, vars);
  optA.step(grads, 0.1);
  tf.dispose([value, ...Object.values(grads)]);
  const path = join(dir, 'last.safetensors');
  saveCheckpoint(path, a, optA, state(config));

  const ckpt = readCheckpoint(path);
  assert.equal(ckpt.method, 'supervised');
  assert.deepEqual(ckpt.state.position, { step: 3, epoch: 0, batch: 3 });
  assert.deepEqual(ckpt.state.config, config);
  assert.equal(ckpt.state.epoch.batches, 3);
  const b = fashionMethod({ ...config, seed: 5 });
  const optB = new SGD(namedParameters(b), { momentum: 0.9 });
  restoreMethod(ckpt, b);
  restoreOptimizer(ckpt, optB);
  const sa = a.stateDict();
  const sb = b.stateDict();
  assert.ok('backbone.bn1.running_mean' in sb, 'BN running statistics are in the state dict');
  for (const name of Object.keys(sa)) assert.deepEqual(sb[name]!.dataSync(), sa[name]!.dataSync(), name);
  const stA = optA.state();
  const stB = optB.state();
  assert.deepEqual(Object.keys(stB).sort(), Object.keys(stA).sort());
  for (const k of Object.keys(stA)) assert.deepEqual(stB[k]!.dataSync(), stA[k]!.dataSync(), k);
  tf.dispose([...Object.values(stA), ...Object.values(stB)]);
});

test('corrupt, truncated and mismatched checkpoints get errors naming the file and the problem', () => {
  const dir = mkdtempSync(join(tmpdir(), 'selfsup-ckpt-'));
  const config = tinyConfig(dir);
  const method = fashionMethod(config);
  const path = join(dir, 'last.safetensors');
  saveCheckpoint(path, method, null, state(config));
  const good = readFileSync(path);

  const flipped = Buffer.from(good);
  flipped[flipped.length - 10]! ^= 0x40;
  const flippedPath = join(dir, 'flipped.safetensors');
  writeFileSync(flippedPath, flipped);
  assert.throws(() => readCheckpoint(flippedPath), (e: Error) => e.message.includes(flippedPath) && /checksum mismatch/.test(e.message));

  // A metadata change the JSON still parses is caught too.
  const edited = Buffer.from(good.toString('latin1').replace('batch\\":3', 'batch\\":2'), 'latin1');
  const editedPath = join(dir, 'edited.safetensors');
  writeFileSync(editedPath, edited);
  assert.throws(() => readCheckpoint(editedPath), /checksum mismatch/);

  const truncatedPath = join(dir, 'truncated.safetensors');
  writeFileSync(truncatedPath, good.subarray(0, good.length - 100));
  assert.throws(() => readCheckpoint(truncatedPath), (e: Error) => e.message.includes(truncatedPath) && /truncated/.test(e.message));
  writeFileSync(truncatedPath, good.subarray(0, 100));
  assert.throws(() => readCheckpoint(truncatedPath), /truncated: the header says/);
  writeFileSync(truncatedPath, good.subarray(0, 5));
  assert.throws(() => readCheckpoint(truncatedPath), /truncated/);
  assert.throws(() => readCheckpoint(join(dir, 'nope.safetensors')), /nope.safetensors: no such file/);

  const ckpt = readCheckpoint(path);
  assert.throws(() => assertCompatible(ckpt, { ...config, method: 'byol' }), /written by method 'supervised', this run uses 'byol'/);
  assert.throws(
    () => assertCompatible(ckpt, { ...config, model: { ...config.model, width: 4 } }),
    /holds a resnet18 width 2 cifar stem, this run builds a resnet18 width 4 cifar stem/,
  );
  const fewerClasses = fashionMethod(config, { numClasses: 5 });
  assert.throws(
    () => restoreMethod(ckpt, fewerClasses),
    (e: Error) => e.message.includes(path) && /classifier.weight has shape \[16,10\], the supervised model expects \[16,5\]/.test(e.message),
  );
  // Evaluation restores the backbone alone: the head may differ, the backbone may not.
  restoreBackbone(ckpt, fewerClasses.backbone);
  const saved = method.backbone.stateDict();
  for (const [name, t] of Object.entries(fewerClasses.backbone.stateDict())) assert.deepEqual(t.dataSync(), saved[name]!.dataSync(), name);
  const wider = fashionMethod({ ...config, model: { ...config.model, width: 4 } });
  assert.throws(
    () => restoreBackbone(ckpt, wider.backbone),
    (e: Error) => e.message.includes(path) && /backbone.conv1.weight has shape \[3,3,1,2\], the supervised backbone expects \[3,3,1,4\]/.test(e.message),
  );
  const noBackbone = readCheckpoint(path);
  for (const k of Object.keys(noBackbone.model)) if (k.startsWith('backbone.layer1')) delete noBackbone.model[k];
  assert.throws(() => restoreBackbone(noBackbone, fewerClasses.backbone), /does not match the supervised backbone: missing backbone.layer1/);
  // loadBackbone: the backbone alone, from the file or the run folder, in eval mode; or the architecture untrained.
  const loaded = loadBackbone(dir);
  assert.equal(loaded.checkpoint.path, path);
  assert.match(loaded.checkpoint.sha256!, /^[0-9a-f]{64}$/);
  assert.equal(loaded.backbone.training, false);
  for (const [name, t] of Object.entries(loaded.backbone.stateDict())) assert.deepEqual(t.dataSync(), saved[`${name}`]!.dataSync(), name);
  const untrained = loadBackbone(path, { randomInit: true });
  assert.equal(untrained.checkpoint.sha256, null);
  const fresh = fashionMethod(config);
  const init = fresh.backbone.stateDict();
  for (const [name, t] of Object.entries(untrained.backbone.stateDict())) assert.deepEqual(t.dataSync(), init[name]!.dataSync(), name);
  assert.throws(() => loadBackbone(join(dir, 'nope')), /--checkpoint: .*nope does not exist/);
  for (const m of [method, fewerClasses, wider, loaded.backbone, untrained.backbone, fresh]) m.dispose();
});

/**
 * A child process that saves a checkpoint (step 1), then starts saving step 2
 * and dies by SIGKILL in the middle of writing its bytes: fs.writeSync is
 * patched (and re-synced into the ESM bindings) to write part of a chunk and
 * then kill the process, as a power cut or an OOM kill would.
 */
function crashingWriter(path: string) {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const src = (f: string) => JSON.stringify(join(here, '..', 'src', f));
  const script = `
    import fs from 'node:fs';
    import { syncBuiltinESMExports } from 'node:module';
    import * as tf from ${src('core/tf.js')};
    import { parseRunConfig } from ${src('train/config.js')};
    import { buildMethod } from ${src('train/setup.js')};
    import { saveCheckpoint } from ${src('io/checkpoint.js')};
    await tf.setBackend('cpu');
    const config = parseRunConfig({ out: ${JSON.stringify(path)}, model: { width: 8 } });
    const method = buildMethod(config, { channels: 1, numClasses: 10, datasetSize: 64 });
    const state = { config, data: {}, metrics: [], epoch: { sums: {}, batches: 0, images: 0, seconds: 0 }, elapsed: 0 };
    saveCheckpoint(${JSON.stringify(path)}, method, null, { ...state, position: { step: 1, epoch: 0, batch: 1 } });
    const writeSync = fs.writeSync;
    let calls = 0;
    fs.writeSync = (fd, buffer, offset, length, ...rest) => {
      if (++calls === 3) {
        writeSync(fd, buffer, offset, Math.floor(length / 2), ...rest);
        process.kill(process.pid, 'SIGKILL');
      }
      return writeSync(fd, buffer, offset, length, ...rest);
    };
    syncBuiltinESMExports();
    saveCheckpoint(${JSON.stringify(path)}, method, null, { ...state, position: { step: 2, epoch: 0, batch: 2 } });
    process.stdout.write('the crash did not happen');`;
  return spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
}

test('a writer killed mid-write leaves the previous checkpoint loadable', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'selfsup-crash-'));
  const path = join(dir, 'last.safetensors');
  const child = crashingWriter(path);
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const signal = await new Promise((resolve) => child.on('exit', (_code, sig) => resolve(sig)));
  assert.equal(signal, 'SIGKILL', out);
  const leftovers = readdirSync(dir).filter((f) => f.includes('.tmp-'));
  assert.equal(leftovers.length, 1, 'the half-written temporary file is there');
  const ckpt = readCheckpoint(path);
  assert.equal(ckpt.state.position.step, 1, 'the previous checkpoint is intact');
  assert.throws(() => readCheckpoint(join(dir, leftovers[0]!)), /truncated/);
  // The next save clears what the dead writer left.
  const config = tinyConfig(dir);
  saveCheckpoint(path, fashionMethod(config), null, state(config));
  assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp-')), []);
  assert.equal(readCheckpoint(path).state.position.step, 3);
});

test('a state holding a NaN or an infinity is never written as a checkpoint; the previous file stays', () => {
  const dir = mkdtempSync(join(tmpdir(), 'selfsup-ckpt-nan-'));
  const config = tinyConfig(dir);
  const method = fashionMethod(config);
  const path = join(dir, 'last.safetensors');
  try {
    saveCheckpoint(path, method, null, state(config, 2));
    const before = readFileSync(path);
    const w = method.stateDict()['backbone.layer1.0.bn1.running_var']!;
    (w as tf.Variable).assign(tf.fill(w.shape, NaN));
    assert.throws(() => saveCheckpoint(path, method, null, state(config, 3)), /refusing to write a checkpoint: model\.backbone\.layer1\.0\.bn1\.running_var holds a non-finite value \(NaN at index 0\)/);
    assert.deepEqual(readFileSync(path), before);
  } finally {
    method.dispose();
  }
});
