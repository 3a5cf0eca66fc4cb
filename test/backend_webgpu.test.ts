// The `webgpu` backend (tfjs-backend-webgpu on Dawn). Runs wherever Dawn finds
// an adapter, a software one included (llvmpipe through OpenGL in
// compatibility mode); skipped, with the reason, where none exists.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import type { Tensor, Tensor4D } from '@tensorflow/tfjs-core';
import { registerWebGpuBackend, webgpuAdapterDescription, webgpuUnavailableReason } from '../src/backend/webgpu.js';
import { assertClose, randomArray } from './helpers.js';

const available = await registerWebGpuBackend();
const skip = available ? false : `no WebGPU adapter here: ${webgpuUnavailableReason() ?? 'unknown reason'}`;

after(async () => {
  await tf.setBackend('cpu');
  // Destroys the Dawn device, so nothing keeps the process alive.
  if (available) tf.removeBackend('webgpu');
});

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const a = { v: randomArray(size([37, 19]), 1), s: [37, 19] };
const b = { v: randomArray(size([19, 11]), 2), s: [19, 11] };
const x = { v: randomArray(size([2, 9, 10, 3]), 3), s: [2, 9, 10, 3] };
const f = { v: randomArray(size([3, 3, 3, 5]), 4), s: [3, 3, 3, 5] };

/** matmul, a strided conv, and the conv's input and filter gradients. */
function compute(): Tensor[] {
  const at = tf.tensor(a.v, a.s);
  const bt = tf.tensor(b.v, b.s);
  const xt = tf.tensor4d(x.v, x.s as [number, number, number, number]);
  const ft = tf.tensor4d(f.v, f.s as [number, number, number, number]);
  const loss = (xx: Tensor, ff: Tensor) => tf.conv2d(xx as Tensor4D, ff as Tensor4D, 2, 'same').square().sum().mul(0.5);
  const [dx, df] = tf.grads(loss)([xt, ft]);
  return [tf.matMul(at, bt), tf.conv2d(xt, ft, 2, 'same'), dx!, df!];
}

/** Reads asynchronously: synchronous reads on webgpu need OffscreenCanvas, which Node lacks. */
async function valuesOn(backend: string): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  assert.equal(tf.getBackend(), backend);
  const outs = tf.tidy(compute);
  const values = await Promise.all(outs.map(async (t) => Float32Array.from(await t.data() as ArrayLike<number>)));
  tf.dispose(outs);
  return values;
}

test('webgpu matmul and conv (forward and gradients) match tfjs-cpu', { skip, timeout: 60_000 }, async () => {
  console.log(`webgpu adapter: ${webgpuAdapterDescription()}`);
  const actual = await valuesOn('webgpu');
  const expected = await valuesOn('cpu');
  const names = ['matMul', 'conv2d', 'd conv / dx', 'd conv / dfilter'];
  expected.forEach((e, i) => assertClose(actual[i]!, e, { atol: 1e-3, rtol: 1e-3 }, names[i]));
});

test('webgpu unavailability always comes with a reason', () => {
  if (available) {
    assert.equal(webgpuUnavailableReason(), undefined);
    assert.ok(webgpuAdapterDescription());
  } else {
    assert.match(webgpuUnavailableReason() ?? '', /webgpu/);
  }
});
