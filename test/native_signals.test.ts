// Signals arriving while oneDNN runs must not corrupt the heap. Its JIT gemm
// moves the stack pointer into heap scratch; before the kernels deferred
// asynchronous signals (native/src/common.h, SignalsDeferred), a loop of
// [256,784]x[784,256] matmuls under --cpu-prof (SIGPROF many times a second)
// aborted with "corrupted size vs. prev_size" in 3 of 3 runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));

test('native matmuls and convolutions survive a profiler sampling them (SIGPROF)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'selfsup-signals-'));
  try {
    const script = `
      const tf = await import(${JSON.stringify(join(here, '../src/core/tf.js'))});
      const { useBackend } = await import(${JSON.stringify(join(here, '../src/backend/select.js'))});
      if ((await useBackend('native')) !== 'native') throw new Error('no native backend');
      const a = tf.randomNormal([256, 784]);
      const b = tf.randomNormal([784, 256]);
      const x = tf.randomNormal([8, 32, 32, 16]);
      const w = tf.randomNormal([3, 3, 16, 16]);
      for (let i = 0; i < 300; i++) {
        tf.tidy(() => {
          tf.matMul(a, b).dataSync();
          tf.conv2d(x, w, 1, 'same').dataSync();
        });
      }
      process.stdout.write('done');
    `;
    const r = spawnSync(process.execPath, ['--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-interval', '100', '--input-type=module', '-e', script], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(r.status, 0, `exit ${r.status} (signal ${r.signal}): ${r.stderr.slice(-500)}`);
    assert.equal(r.stdout, 'done');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
