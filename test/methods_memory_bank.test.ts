// The instance-discrimination memory bank: unit-length rows, lookups by
// dataset index, sampled negatives, and the momentum update
// v <- normalise(m v + (1 - m) f) of Wu et al. eq. 7, applied after the step.
import { Mulberry32 } from '../src/core/random.js';
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import { MemoryBank } from '../src/methods/parts/memory_bank.js';
import { assertClose } from './helpers.js';

before(async () => {
  await tf.setBackend('cpu');
});

const rowNorms = (t: tf.Tensor) => Array.from(tf.tidy(() => tf.norm(t, 'euclidean', 1)).dataSync());

test('starts as random unit vectors in a buffer; get returns rows by dataset index', () => {
  const memory = new MemoryBank(10, 4, { seed: 1 });
  assert.deepEqual(memory.parameters(), []);
  assert.deepEqual(Object.keys(memory.stateDict()), ['bank']);
  assertClose(rowNorms(memory.bank), new Array(10).fill(1), { atol: 1e-5 }, 'row norms');
  const rows = memory.get(Int32Array.from([7, 2]));
  const all = memory.bank.arraySync() as number[][];
  assert.deepEqual(rows.arraySync(), [all[7], all[2]]);
  assert.throws(() => memory.get(Int32Array.from([10])), /index 10 is outside the bank of 10/);
  memory.dispose();
});

test('update: normalise(0.5 v + 0.5 f) on the given rows only, worked by hand', () => {
  const memory = new MemoryBank(3, 2);
  memory.loadStateDict({ bank: tf.tensor2d([[1, 0], [0, 1], [0.6, 0.8]]) });
  // Row 0: v = (1, 0), f = (0, 5) -> f/|f| = (0, 1) -> (0.5, 0.5) -> (1, 1)/sqrt(2).
  // Row 2: v = (0.6, 0.8), f = (-0.6, -0.8): opposite; with m = 0.75: (0.3, 0.4) -> (0.6, 0.8).
  memory.update(Int32Array.from([0]), tf.tensor2d([[0, 5]]));
  memory.update(Int32Array.from([2]), tf.tensor2d([[-0.6, -0.8]]), 0.75);
  const s = Math.SQRT1_2;
  assertClose(Array.from(memory.bank.dataSync()), [s, s, 0, 1, 0.6, 0.8], { atol: 1e-6 });
  // Two rows at once, momentum 0: the new features replace the old ones, normalised.
  memory.update(Int32Array.from([1, 0]), tf.tensor2d([[3, 4], [0, -2]]), 0);
  assertClose(Array.from(memory.bank.dataSync()), [0, -1, 0.6, 0.8, 0.6, 0.8], { atol: 1e-6 });
  assert.throws(() => memory.update(Int32Array.from([0, 1]), tf.tensor2d([[1, 0]])), /features must be \[2, 2\]/);
  memory.dispose();
});

test('stage keeps a detached copy and commit applies it once: the bank does not move during the step', () => {
  const memory = new MemoryBank(4, 2);
  memory.loadStateDict({ bank: tf.tensor2d([[1, 0], [1, 0], [1, 0], [1, 0]]) });
  const before = Array.from(memory.bank.dataSync());
  const features = tf.tensor2d([[0, 1], [0, 1]]) as Tensor2D;
  memory.stage(Int32Array.from([1, 3]), features);
  features.dispose(); // the bank holds its own copy
  assert.deepEqual(Array.from(memory.bank.dataSync()), before);
  const live = tf.memory().numTensors;
  memory.commit();
  memory.commit(); // nothing pending: a no-op
  assert.equal(tf.memory().numTensors, live - 1, 'the staged copy is freed');
  const s = Math.SQRT1_2;
  assertClose(Array.from(memory.bank.dataSync()), [1, 0, s, s, 1, 0, s, s], { atol: 1e-6 });
  memory.dispose();
});

test('sample draws count rows uniformly with replacement, reproducibly per seed', () => {
  const memory = new MemoryBank(50, 3, { seed: 2 });
  const a = memory.sample(1000, new Mulberry32(5));
  const b = memory.sample(1000, new Mulberry32(5));
  assert.deepEqual(a.shape, [1000, 3]);
  assert.deepEqual(Array.from(a.dataSync()), Array.from(b.dataSync()));
  // Every drawn row is a bank row, and (1000 draws from 50) nearly all rows appear.
  const bankRows = (memory.bank.arraySync() as number[][]).map((r) => r.join());
  const drawn = new Set((a.arraySync() as number[][]).map((r) => r.join()));
  assert.ok([...drawn].every((r) => bankRows.includes(r)));
  assert.ok(drawn.size >= 45, `${drawn.size} distinct rows`);
  tf.dispose([a, b]);
  memory.dispose();
});

test('bad construction is an error', () => {
  assert.throws(() => new MemoryBank(0, 4), /positive integers/);
  assert.throws(() => new MemoryBank(4, 4, { momentum: 1 }), /momentum must be in \[0, 1\)/);
});
