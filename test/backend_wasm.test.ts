// The `wasm` backend: our gradient kernels against tfjs-cpu, finite
// differences on wasm, and a small conv net that trains there.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import type { Tensor, Tensor4D, Variable } from '@tensorflow/tfjs-core';
import { registerWasmBackend, wasmLoadError } from '../src/backend/wasm.js';
import { assertClose, assertGradientMatchesFiniteDifferences, randomArray, randomTensor, rng } from './helpers.js';

type Pad = 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]];
type Pair = [number, number];

const TOL = { atol: 1e-4, rtol: 1e-4 };

before(async () => {
  assert.ok(await registerWasmBackend(), `wasm backend did not load: ${wasmLoadError()?.message}`);
});
after(async () => {
  await tf.setBackend('cpu');
});

/** Runs fn on `backend` from the same host data; returns the output's values. */
async function on(backend: string, fn: () => Tensor): Promise<Float32Array> {
  await tf.setBackend(backend);
  assert.equal(tf.getBackend(), backend);
  return tf.tidy(() => Float32Array.from(fn().dataSync() as ArrayLike<number>));
}

async function assertWasmMatchesCpu(fn: () => Tensor, what: string, tol = TOL): Promise<void> {
  const expected = await on('cpu', fn);
  const actual = await on('wasm', fn);
  assertClose(actual, expected, tol, what);
}

function convOutShape(x: number[], f: number[], strides: Pair, pad: Pad, dilations: Pair = [1, 1], depthwise = false): number[] {
  const info = tf.backend_util.computeConv2DInfo(
    x as [number, number, number, number], f as [number, number, number, number], strides, dilations, pad, undefined, depthwise);
  return info.outShape;
}

interface ConvCase { x: number[]; f: number[]; strides: Pair; pad: Pad }
const convCases: ConvCase[] = [
  { x: [2, 7, 7, 3], f: [3, 3, 3, 4], strides: [1, 1], pad: 'same' },
  { x: [2, 8, 8, 3], f: [3, 3, 3, 5], strides: [2, 2], pad: 'same' },
  { x: [3, 9, 7, 2], f: [3, 2, 2, 4], strides: [2, 2], pad: 'valid' },
  { x: [1, 11, 10, 4], f: [5, 5, 4, 3], strides: [2, 3], pad: 'same' },
  { x: [2, 8, 8, 4], f: [1, 1, 4, 6], strides: [2, 2], pad: 'same' }, // ResNet shortcut
  { x: [2, 6, 7, 2], f: [3, 3, 2, 3], strides: [2, 1], pad: [[0, 0], [1, 2], [0, 1], [0, 0]] },
  { x: [1, 5, 5, 1], f: [3, 3, 1, 2], strides: [3, 3], pad: [[0, 0], [3, 3], [4, 2], [0, 0]] }, // pads over the kernel size
  { x: [4, 5, 6, 1], f: [5, 6, 1, 2], strides: [1, 1], pad: 'valid' }, // kernel = image
];

describe('wasm Conv2D gradient kernels match tfjs-cpu', () => {
  convCases.forEach((c, i) => {
    const dyShape = convOutShape(c.x, c.f, c.strides, c.pad);
    const label = `x ${c.x} f ${c.f} strides ${c.strides} pad ${JSON.stringify(c.pad)}`;
    test(`Conv2DBackpropFilter: ${label}`, async () => {
      await assertWasmMatchesCpu(() => tf.engine().runKernel('Conv2DBackpropFilter',
        { x: randomTensor(c.x, 10 + i), dy: randomTensor(dyShape, 20 + i) },
        { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', filterShape: c.f }) as Tensor, 'dW');
    });
    test(`Conv2DBackpropInput: ${label}`, async () => {
      await assertWasmMatchesCpu(() => tf.engine().runKernel('Conv2DBackpropInput',
        { dy: randomTensor(dyShape, 20 + i), filter: randomTensor(c.f, 30 + i) },
        { strides: c.strides, pad: c.pad, dataFormat: 'NHWC', inputShape: c.x }) as Tensor, 'dx');
    });
  });
});

interface DwCase { x: number[]; f: number[]; strides: Pair; pad: Pad; dilations: Pair }
const dwCases: DwCase[] = [
  { x: [2, 7, 7, 3], f: [3, 3, 3, 1], strides: [1, 1], pad: 'same', dilations: [1, 1] },
  { x: [2, 8, 9, 3], f: [3, 3, 3, 2], strides: [2, 2], pad: 'same', dilations: [1, 1] },
  { x: [1, 9, 8, 2], f: [2, 3, 2, 1], strides: [2, 2], pad: 'valid', dilations: [1, 1] },
  { x: [2, 7, 6, 2], f: [3, 3, 2, 3], strides: [1, 2], pad: [[0, 0], [2, 1], [1, 0], [0, 0]], dilations: [1, 1] },
  { x: [2, 9, 9, 2], f: [3, 3, 2, 2], strides: [1, 1], pad: 'valid', dilations: [2, 2] },
  { x: [1, 10, 9, 3], f: [3, 2, 3, 1], strides: [1, 1], pad: 'same', dilations: [2, 3] },
];

/** The dilated filter written out with zeros, so dilation-1 kernels can serve as reference. */
function expandFilter(f: Float32Array, shape: number[], [dh, dw]: Pair): { values: Float32Array; shape: number[] } {
  const [kh, kw, c, m] = shape as [number, number, number, number];
  const eh = (kh - 1) * dh + 1;
  const ew = (kw - 1) * dw + 1;
  const out = new Float32Array(eh * ew * c * m);
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      for (let k = 0; k < c * m; k++) out[((i * dh) * ew + j * dw) * c * m + k] = f[(i * kw + j) * c * m + k]!;
    }
  }
  return { values: out, shape: [eh, ew, c, m] };
}

describe('wasm Conv2D gradient kernels in NCHW match tfjs-cpu', () => {
  const xs = [2, 3, 7, 6]; // NCHW
  const fs = [3, 3, 3, 4];
  const dyShape = [2, 4, 4, 3]; // stride 2, SAME
  test('Conv2DBackpropFilter', async () => {
    await assertWasmMatchesCpu(() => tf.engine().runKernel('Conv2DBackpropFilter',
      { x: randomTensor(xs, 90), dy: randomTensor(dyShape, 91) },
      { strides: [2, 2], pad: 'same', dataFormat: 'NCHW', filterShape: fs }) as Tensor, 'dW');
  });
  test('Conv2DBackpropInput', async () => {
    await assertWasmMatchesCpu(() => tf.engine().runKernel('Conv2DBackpropInput',
      { dy: randomTensor(dyShape, 91), filter: randomTensor(fs, 92) },
      { strides: [2, 2], pad: 'same', dataFormat: 'NCHW', inputShape: xs }) as Tensor, 'dx');
  });
});

describe('wasm depthwise gradient kernels match tfjs-cpu', () => {
  dwCases.forEach((c, i) => {
    const dyShape = convOutShape(c.x, c.f, c.strides, c.pad, c.dilations, true);
    const label = `x ${c.x} f ${c.f} strides ${c.strides} pad ${JSON.stringify(c.pad)} dilations ${c.dilations}`;
    const dilated = c.dilations[0] > 1 || c.dilations[1] > 1;
    const xv = randomArray(c.x.reduce((a, b) => a * b), 40 + i);
    const dyv = randomArray(dyShape.reduce((a, b) => a * b), 50 + i);
    const fv = randomArray(c.f.reduce((a, b) => a * b), 60 + i);
    const ef = expandFilter(fv, c.f, c.dilations);

    test(`DepthwiseConv2dNativeBackpropFilter: ${label}`, async () => {
      const actual = await on('wasm', () => tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter',
        { x: tf.tensor(xv, c.x), dy: tf.tensor(dyv, dyShape) },
        { strides: c.strides, pad: c.pad, dilations: c.dilations, filterShape: c.f }) as Tensor);
      // tfjs-cpu's kernel ignores dilations (tfjs's gradient refuses them), so
      // for dilated cases take its undilated gradient for the zero-expanded
      // filter at the taps that exist.
      const expected = await on('cpu', () => {
        const g = tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter',
          { x: tf.tensor(xv, c.x), dy: tf.tensor(dyv, dyShape) },
          { strides: c.strides, pad: c.pad, dilations: [1, 1], filterShape: ef.shape }) as Tensor;
        return dilated ? tf.stridedSlice(g, [0, 0, 0, 0], g.shape, [c.dilations[0], c.dilations[1], 1, 1]) : g;
      });
      assertClose(actual, expected, TOL, 'dW');
    });

    test(`DepthwiseConv2dNativeBackpropInput: ${label}`, async () => {
      const actual = await on('wasm', () => tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput',
        { dy: tf.tensor(dyv, dyShape), filter: tf.tensor(fv, c.f) },
        { strides: c.strides, pad: c.pad, dilations: c.dilations, inputShape: c.x }) as Tensor);
      const expected = await on('cpu', () => tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput',
        { dy: tf.tensor(dyv, dyShape), filter: tf.tensor(ef.values, ef.shape) },
        { strides: c.strides, pad: c.pad, dilations: [1, 1], inputShape: c.x }) as Tensor);
      assertClose(actual, expected, TOL, 'dx');
    });
  });
});

describe('wasm UnsortedSegmentSum matches tfjs-cpu', () => {
  const ids = [0, 3, 3, -1, 1, 7, 0, 2]; // -1 and 7 (>= numSegments) are dropped
  test('rows of a matrix, ids out of range', async () => {
    await assertWasmMatchesCpu(
      () => tf.unsortedSegmentSum(randomTensor([8, 5], 70), tf.tensor1d(ids, 'int32'), 4), 'segment sums');
  });
  test('rank-3 data', async () => {
    await assertWasmMatchesCpu(
      () => tf.unsortedSegmentSum(randomTensor([8, 2, 3], 71), tf.tensor1d(ids, 'int32'), 5), 'segment sums');
  });
  test('int32 data', async () => {
    await assertWasmMatchesCpu(
      () => tf.unsortedSegmentSum(tf.tensor1d([1, 2, 3, 4, 5, 6, 7, 8], 'int32'), tf.tensor1d(ids, 'int32'), 4), 'segment sums');
  });
  test('the gradient of gather (which uses it) on wasm', async () => {
    const idx = [2, 0, 2, 1, 2];
    await assertWasmMatchesCpu(
      () => tf.grad((p: Tensor) => tf.gather(p, tf.tensor1d(idx, 'int32')).square().sum())(randomTensor([4, 3], 72)), 'd gather');
  });
});

describe('conv gradients on wasm agree with finite differences', () => {
  // Quadratic losses, for which central differences are exact up to rounding.
  const cases: Array<{ name: string; x: number[]; f: number[]; loss: (x: Tensor, f: Tensor) => Tensor }> = [
    {
      name: 'conv2d stride 2 SAME',
      x: [2, 7, 6, 3], f: [3, 3, 3, 4],
      loss: (x, f) => tf.conv2d(x as Tensor4D, f as Tensor4D, 2, 'same').square().sum().mul(0.5),
    },
    {
      name: 'conv2d stride 1 VALID, odd kernel',
      x: [2, 6, 7, 2], f: [2, 3, 2, 3],
      loss: (x, f) => tf.conv2d(x as Tensor4D, f as Tensor4D, 1, 'valid').square().sum().mul(0.5),
    },
    {
      name: 'depthwise stride 2 SAME, multiplier 2',
      x: [2, 7, 7, 3], f: [3, 3, 3, 2],
      loss: (x, f) => tf.depthwiseConv2d(x as Tensor4D, f as Tensor4D, 2, 'same').square().sum().mul(0.5),
    },
  ];
  for (const c of cases) {
    test(`${c.name}: d/dx and d/dfilter`, async () => {
      await tf.setBackend('wasm');
      tf.tidy(() => {
        const x = randomTensor(c.x, 80);
        const f = randomTensor(c.f, 81);
        assertGradientMatchesFiniteDifferences((v) => c.loss(v, f), x, { samples: 10 });
        assertGradientMatchesFiniteDifferences((v) => c.loss(x, v), f, { samples: 10 });
      });
    });
  }
});

/** Bright-left vs bright-right 16x16 images under noise: class 1 is brighter on the right. */
function leftRightBatch(n: number, seed: number): { x: Float32Array; y: Float32Array } {
  const r = rng(seed);
  const x = new Float32Array(n * 16 * 16);
  const y = new Float32Array(n * 2);
  for (let i = 0; i < n; i++) {
    const label = i % 2;
    y[i * 2 + label] = 1;
    const row = Math.floor(r() * 12);
    for (let h = 0; h < 16; h++) {
      for (let w = 0; w < 16; w++) {
        const bright = (label === 1) === (w >= 8) && Math.abs(h - row - 2) <= 2;
        x[(i * 16 + h) * 16 + w] = (bright ? 0.8 : 0) + 0.3 * (r() - 0.5);
      }
    }
  }
  return { x, y };
}

/** conv3x3 -> depthwise3x3/2 -> conv3x3/2 -> flatten -> dense, trained with momentum SGD. */
export async function trainSmallNet(backend: string, steps: number, batch = 32): Promise<{ losses: number[]; msPerStep: number; leaked: number }> {
  await tf.setBackend(backend);
  const init = (shape: number[], fanIn: number, seed: number): Variable =>
    tf.variable(tf.tensor(randomArray(shape.reduce((a, b) => a * b), seed, -1, 1).map((v) => v * Math.sqrt(3 / fanIn)), shape));
  const w1 = init([3, 3, 1, 8], 9, 1);
  const w2 = init([3, 3, 8, 1], 9, 2);
  const w3 = init([3, 3, 8, 16], 72, 3);
  const w4 = init([4 * 4 * 16, 2], 4 * 4 * 16, 4);
  const b4 = tf.variable(tf.zeros([2]));
  const opt = tf.train.momentum(0.1, 0.9);
  const losses: number[] = [];
  const { x: xv, y: yv } = leftRightBatch(batch * steps, 99);
  const px = 16 * 16;
  let ms = 0;
  let dataIdsAfterFirst = 0;
  for (let s = 0; s < steps; s++) {
    if (s === 1) dataIdsAfterFirst = tf.engine().backend.numDataIds();
    const x = tf.tensor4d(xv.subarray(s * batch * px, (s + 1) * batch * px), [batch, 16, 16, 1]);
    const y = tf.tensor2d(yv.subarray(s * batch * 2, (s + 1) * batch * 2), [batch, 2]);
    const t0 = performance.now();
    const loss = opt.minimize(() => {
      const h1 = tf.relu(tf.conv2d(x, w1 as Tensor4D, 1, 'same'));
      const h2 = tf.relu(tf.depthwiseConv2d(h1, w2 as Tensor4D, 2, 'same'));
      const h3 = tf.relu(tf.conv2d(h2, w3 as Tensor4D, 2, 'same'));
      const logits = tf.matMul(tf.reshape(h3, [batch, 4 * 4 * 16]), w4).add(b4);
      return tf.losses.softmaxCrossEntropy(y, logits) as tf.Scalar;
    }, true)!;
    losses.push(loss.dataSync()[0]!);
    ms += performance.now() - t0;
    assert.equal(tf.getBackend(), backend, 'training left its backend');
    tf.dispose([x, y, loss]);
  }
  // Every intermediate of the composed gradient kernels must be freed.
  const leaked = tf.engine().backend.numDataIds() - dataIdsAfterFirst;
  tf.dispose([w1, w2, w3, w4, b4]);
  opt.dispose();
  return { losses, msPerStep: ms / steps, leaked };
}

test('a small conv net trains on wasm (momentum SGD, loss falls)', async () => {
  const steps = 30;
  const { losses, msPerStep, leaked } = await trainSmallNet('wasm', steps);
  assert.equal(leaked, 0, `${leaked} wasm buffers leaked over ${steps - 1} training steps`);
  const mean = (a: number[]) => a.reduce((p, q) => p + q, 0) / a.length;
  const first = mean(losses.slice(0, 3));
  const last = mean(losses.slice(-5));
  console.log(`wasm small net: ${msPerStep.toFixed(1)} ms/step; loss ${first.toFixed(3)} -> ${last.toFixed(3)}`);
  assert.ok(losses.every(Number.isFinite), `non-finite loss: ${losses}`);
  assert.ok(last < 0.5 * first, `loss did not fall clearly: first ${first}, last ${last} (${losses.map((l) => l.toFixed(3)).join(' ')})`);
});
