// The native backend recycles the storage of disposed tensors. Nothing a user
// or a tfjs-cpu kernel still holds may ever be recycled under them.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import { totalmem } from 'node:os';
import { BufferPool, poolBytes, type NativeBackend } from '../src/backend/native_backend.js';
import { setupNative } from './helpers.js';

const N = 1 << 16; // above the pool's minimum length

/** Churns outputs of `length` elements through the pool (it is keyed by length). */
function churn(length = N): void {
  for (let i = 0; i < 4; i++) tf.tidy(() => { tf.mul(tf.add(tf.fill([length], 7), 1), 3); });
}

describe('native buffer recycling', () => {
  before(async () => {
    await setupNative();
    await tf.setBackend('native');
  });

  test('disposed kernel outputs are reused', () => {
    const backend = tf.backend() as NativeBackend;
    const a = tf.exp(tf.zeros([N]));
    a.dispose();
    assert.ok(backend.pool.pooledBytes >= N * 4, 'the disposed output went back to the pool');
    const b = tf.exp(tf.zeros([N]));
    assert.deepEqual(Array.from(b.dataSync().slice(0, 3)), [1, 1, 1]);
    b.dispose();
  });

  test('an array returned by dataSync is never recycled', () => {
    const t = tf.add(tf.fill([N], 1), 1);
    const values = t.dataSync();
    t.dispose();
    churn();
    assert.equal(values[0], 2);
    assert.equal(values[N - 1], 2);
  });

  test('a contiguous slice (a view in tfjs-cpu) survives its disposed source', () => {
    const source = tf.add(tf.fill([4, N], 5), 0);
    const slice = tf.slice(source, [1, 0], [1, N]);
    source.dispose();
    churn(4 * N);
    const v = slice.dataSync();
    assert.equal(v[0], 5);
    assert.equal(v[N - 1], 5);
    slice.dispose();
  });

  test('a reshaped tensor keeps its storage while the original is disposed', () => {
    const original = tf.add(tf.fill([N], 3), 0);
    const reshaped = tf.reshape(original, [2, N / 2]);
    original.dispose();
    churn();
    assert.equal(reshaped.dataSync()[N - 1], 3);
    reshaped.dispose();
  });
});

test('the pool budget: SELFSUP_POOL_MB in megabytes, else a quarter of the machine; a bad value names the variable', () => {
  assert.equal(poolBytes({ SELFSUP_POOL_MB: '512' }), 512 * 2 ** 20);
  assert.equal(poolBytes({ SELFSUP_POOL_MB: '0' }), 0);
  assert.equal(poolBytes({}), Math.floor(totalmem() / 4));
  assert.throws(() => poolBytes({ SELFSUP_POOL_MB: 'lots' }), /SELFSUP_POOL_MB must be a number of megabytes >= 0, got 'lots'/);
});

test('a full pool gives up the lengths used least recently, not the new ones (a detector makes new lengths every step)', () => {
  const n = BufferPool.minLength;
  const pool = new BufferPool(3 * n * 4 + 8 * 4 * 3); // room for three buffers of about n floats
  const a = new Float32Array(n);
  const b = new Float32Array(n + 8);
  const c = new Float32Array(n + 16);
  pool.give(a);
  pool.give(b);
  pool.give(c);
  assert.equal(pool.take(n), a, 'a length taken comes back');
  pool.give(a); // a is now the most recently used length; b is the least
  pool.give(new Float32Array(n + 4)); // over budget: b goes, and b alone makes room
  assert.equal(pool.take(n + 8), undefined, 'the least recently used length was dropped');
  assert.equal(pool.take(n + 16), c);
  assert.equal(pool.take(n), a);
  assert.ok(pool.take(n + 4) instanceof Float32Array, 'the new length was kept (the old pool turned it away)');
  assert.equal(pool.pooledBytes, 0);
  const huge = new Float32Array(4 * n);
  pool.give(huge);
  assert.equal(pool.pooledBytes, 0, 'a buffer larger than the whole budget is not kept');
});
