// The native backend recycles the storage of disposed tensors. Nothing a user
// or a tfjs-cpu kernel still holds may ever be recycled under them.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import { totalmem } from 'node:os';
import { poolBytes, type NativeBackend } from '../src/backend/native_backend.js';
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
