// bf16 mixed precision on the native backend (--precision bf16): convolutions
// (forward, backward-data, backward-weights) and matmuls with bf16 inputs and
// f32 accumulation against tfjs-cpu's f32 kernels, at bf16's tolerance but
// tight enough to catch a wrong kernel, and provably not f32; the check that
// refuses bf16 on another backend or a CPU without AVX512-BF16; the run config
// and flag; a tiny training run in bf16 whose loss falls.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import * as tf from '../src/core/tf.js';
import type { Tensor, Tensor4D } from '@tensorflow/tfjs-core';
import { nativeAddon } from '../src/backend/native_addon.js';
import { readCpuFlags, resolvePrecision, usePrecision } from '../src/backend/precision.js';
import { pretrainConfig } from '../src/cli/pretrain.js';
import { parseRunConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';
import { randomTensor, runOn, setupNative } from './helpers.js';

type GradFn = (...args: Tensor[]) => Tensor;
type Pad = 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]];

const rms = (v: ArrayLike<number>) => Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0) / Math.max(1, v.length));
/** ||a - b|| / ||b||. */
const relativeError = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let num = 0;
  for (let i = 0; i < a.length; i++) num += (a[i]! - b[i]!) ** 2;
  return Math.sqrt(num / a.length) / Math.max(rms(b), 1e-30);
};

/**
 * bf16's tolerance: inputs rounded to 8 significant bits (relative 2^-9) and
 * f32 sums give a normwise relative error of a few 1e-3, so: at most 1e-2
 * overall, and no element off by more than 3e-2 of the output's RMS (+1e-2
 * of itself). A wrong kernel (layout, transposition, missing term) is off by
 * the order of the values themselves.
 */
function assertBf16Close(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  const scale = rms(expected);
  const rel = relativeError(actual, expected);
  assert.ok(rel < 1e-2, `${what}: relative error ${rel.toExponential(2)} (bf16 allows < 1e-2)`);
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!);
    if (!(err <= 3e-2 * scale + 1e-2 * Math.abs(expected[i]!))) {
      assert.fail(`${what}: element ${i} is ${actual[i]}, expected ${expected[i]} (output RMS ${scale.toExponential(2)})`);
    }
  }
}

/**
 * `fn` on tfjs-cpu (f32 reference), on native in f32 and in bf16: bf16 is
 * within bf16's tolerance of the reference and differs from native f32 by a
 * bf16-sized amount (so it really ran in bf16), while native f32 matches the
 * reference to f32 precision.
 */
async function assertBf16MatchesCpu(fn: () => Tensor | Tensor[], what: string): Promise<void> {
  const expected = await runOn('cpu', fn);
  usePrecision('f32', 'native');
  const f32 = await runOn('native', fn);
  usePrecision('bf16', 'native');
  let bf16: Float32Array[];
  try {
    bf16 = await runOn('native', fn);
  } finally {
    usePrecision('f32', 'native');
  }
  expected.forEach((e, i) => {
    const label = `${what}[${i}]`;
    assertBf16Close(bf16[i]!, e, `${label} bf16`);
    const f32Error = relativeError(f32[i]!, e);
    const bf16VsF32 = relativeError(bf16[i]!, f32[i]!);
    assert.ok(f32Error < 1e-5, `${label}: native f32 relative error ${f32Error.toExponential(2)}`);
    assert.ok(bf16VsF32 > 2e-4, `${label}: bf16 differs from f32 by only ${bf16VsF32.toExponential(2)}: it did not run in bf16`);
  });
}

const bf16Here = () => nativeAddon().info().bf16;

describe('the bf16 check', () => {
  test("auto and f32 resolve to f32 on every backend; bf16 only on native with AVX512-BF16", () => {
    for (const backend of ['native', 'wasm', 'cpu', 'webgpu']) {
      assert.equal(resolvePrecision('auto', backend, new Set()), 'f32');
      assert.equal(resolvePrecision('f32', backend, new Set()), 'f32');
    }
    assert.equal(resolvePrecision('bf16', 'native', new Set(['avx512f', 'avx512_bf16'])), 'bf16');
  });

  test('bf16 on a CPU without AVX512-BF16 is an error that names the flag and the config field', () => {
    const noBf16 = new Set(['fpu', 'sse4_2', 'avx2', 'avx512f', 'avx512bw', 'avx512_vnni']);
    assert.throws(() => resolvePrecision('bf16', 'native', noBf16), (e: Error) => {
      assert.match(e.message, /--precision bf16/);
      assert.match(e.message, /'precision'/);
      assert.match(e.message, /AVX512-BF16/);
      assert.match(e.message, /--precision f32/);
      return true;
    });
    // usePrecision checks before touching the addon.
    assert.throws(() => usePrecision('bf16', 'native', noBf16), /AVX512-BF16/);
  });

  test('bf16 on a backend other than native is an error that names the flag', () => {
    for (const backend of ['wasm', 'cpu', 'webgpu']) {
      assert.throws(() => resolvePrecision('bf16', backend, new Set(['avx512_bf16'])), (e: Error) => {
        assert.match(e.message, /--precision bf16 \(run config field 'precision'\) needs the native backend/);
        assert.ok(e.message.includes(`backend is ${backend}`), e.message);
        return true;
      });
    }
  });

  test('the CPU flags come from /proc/cpuinfo', () => {
    const flags = readCpuFlags();
    if (flags === undefined) return; // not Linux
    assert.ok(flags.has('fpu') || flags.has('sse2'), [...flags].slice(0, 10).join(' '));
    assert.equal(readCpuFlags('/nonexistent/cpuinfo'), undefined);
  });

  test('the run config has precision auto | f32 | bf16 (default auto), and --precision sets it', () => {
    assert.equal(parseRunConfig({ out: 'x' }).precision, 'auto');
    assert.equal(parseRunConfig({ out: 'x', precision: 'bf16' }).precision, 'bf16');
    assert.throws(() => parseRunConfig({ out: 'x', precision: 'fp16' }), /precision/);
    assert.equal(pretrainConfig({ out: 'x', precision: 'bf16' }).precision, 'bf16');
    assert.equal(pretrainConfig({ out: 'x' }).precision, 'auto');
  });

  test('a bf16 run on the cpu backend fails before it makes its folder', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'selfsup-bf16-cpu-')), 'run');
    const config = parseRunConfig({ out, backend: 'cpu', precision: 'bf16', workers: 0, epochs: 1, batchSize: 8, dataset: { limit: 8 }, model: { width: 4 } });
    await assert.rejects(train(config, { quiet: true, log: () => undefined }), /--precision bf16 .*needs the native backend .*; this run's backend is cpu/);
    await tf.setBackend('cpu');
  });
});

describe('native bf16 kernels match tfjs-cpu at bf16 precision', () => {
  before(setupNative);

  interface Case { x: [number, number, number, number]; k: [number, number]; oc: number; stride: number; pad: Pad; dilation?: number }
  const cases: Case[] = [
    { x: [2, 8, 8, 3], k: [3, 3], oc: 16, stride: 1, pad: 'same' },
    { x: [2, 9, 9, 16], k: [3, 3], oc: 32, stride: 2, pad: 'same' },
    // Winograd in f32; direct in bf16 (oneDNN 2.6 has no bf16 Winograd).
    { x: [2, 8, 8, 64], k: [3, 3], oc: 64, stride: 1, pad: 'same' },
    { x: [2, 6, 6, 32], k: [1, 1], oc: 48, stride: 2, pad: 'valid' },
    { x: [1, 9, 9, 8], k: [3, 3], oc: 8, stride: 1, pad: 'same', dilation: 2 },
    { x: [1, 13, 13, 3], k: [7, 7], oc: 16, stride: 2, pad: [[0, 0], [3, 3], [3, 3], [0, 0]] },
    // Padding 2 in backward-data: the backward-data primitive, not a forward one.
    { x: [2, 10, 10, 32], k: [3, 3], oc: 32, stride: 1, pad: 'valid' },
    { x: [2, 4, 4, 128], k: [3, 3], oc: 128, stride: 1, pad: 'same' },
    // Backward-weights on maps of 16 pixels or fewer with 256+ channels: im2col and one matmul.
    { x: [2, 4, 4, 256], k: [3, 3], oc: 272, stride: 1, pad: 'same' },
    { x: [2, 8, 7, 256], k: [3, 3], oc: 256, stride: 2, pad: 'same' },
  ];
  const label = (c: Case) => `x${c.x.join('x')} k${c.k.join('x')} oc${c.oc} s${c.stride} ${JSON.stringify(c.pad)} d${c.dilation ?? 1}`;

  for (const [i, c] of cases.entries()) {
    const x = () => randomTensor(c.x, 10 + i) as Tensor4D;
    const w = () => randomTensor([c.k[0], c.k[1], c.x[3], c.oc], 20 + i) as Tensor4D;
    const d = c.dilation ?? 1;
    test(`conv2d forward, backward-data and backward-weights ${label(c)}`, async (t) => {
      if (!bf16Here()) return t.skip('no AVX512-BF16 here');
      await assertBf16MatchesCpu(() => tf.conv2d(x(), w(), c.stride, c.pad, 'NHWC', d), 'forward');
      if (d === 1) {
        await assertBf16MatchesCpu(() => {
          const dy = randomTensor(tf.conv2d(x(), w(), c.stride, c.pad).shape, 40 + i) as Tensor4D;
          return tf.grads(((a: Tensor4D, b: Tensor4D) => tf.sum(tf.mul(tf.conv2d(a, b, c.stride, c.pad), dy))) as GradFn)([x(), w()]);
        }, 'dx, dw');
      }
    });
  }

  test('fused bias + relu and depthwise', async (t) => {
    if (!bf16Here()) return t.skip('no AVX512-BF16 here');
    await assertBf16MatchesCpu(
      () => tf.fused.conv2d({ x: randomTensor([2, 8, 8, 16], 1) as Tensor4D, filter: randomTensor([3, 3, 16, 32], 2) as Tensor4D, strides: 1, pad: 'same', bias: randomTensor([32], 3), activation: 'relu' }),
      'fused',
    );
    await assertBf16MatchesCpu(() => {
      const f = (a: Tensor4D, b: Tensor4D) => tf.depthwiseConv2d(a, b, 1, 'same');
      const x = randomTensor([2, 9, 9, 32], 4) as Tensor4D;
      const w = randomTensor([3, 3, 32, 1], 5) as Tensor4D;
      const dy = randomTensor(f(x, w).shape, 6);
      return [f(x, w), ...tf.grads(((a: Tensor4D, b: Tensor4D) => tf.sum(tf.mul(f(a, b), dy))) as GradFn)([x, w])];
    }, 'depthwise');
  });

  const matmuls: Array<[number[], number[], boolean, boolean]> = [
    [[64, 513], [513, 129], false, false],
    [[96, 40], [96, 24], true, false],
    [[40, 96], [24, 96], false, true],
    [[96, 40], [24, 96], true, true],
    [[4, 16, 32], [4, 32, 8], false, false],
    [[1, 16, 32], [3, 32, 24], false, false],
    [[3, 32, 16], [1, 24, 32], true, true],
  ];
  for (const [i, [sa, sb, ta, tb]] of matmuls.entries()) {
    test(`matmul ${sa} x ${sb} transposeA=${ta} transposeB=${tb}`, async (t) => {
      if (!bf16Here()) return t.skip('no AVX512-BF16 here');
      await assertBf16MatchesCpu(() => tf.matMul(randomTensor(sa, i), randomTensor(sb, 100 + i), ta, tb), 'matmul');
    });
  }

  test('matmul with fused bias + relu, and its gradients', async (t) => {
    if (!bf16Here()) return t.skip('no AVX512-BF16 here');
    await assertBf16MatchesCpu(
      () => tf.fused.matMul({ a: randomTensor([32, 48], 1), b: randomTensor([48, 40], 2), bias: randomTensor([40], 3), activation: 'relu' }),
      'fused matmul',
    );
    await assertBf16MatchesCpu(() => {
      const f = (a: Tensor, b: Tensor) => tf.sum(tf.mul(tf.matMul(a, b, false, true), randomTensor([24, 40], 9)));
      return tf.grads(f as GradFn)([randomTensor([24, 64], 7), randomTensor([40, 64], 8)]);
    }, 'matmul grads');
  });

  test('the tolerance catches a wrong kernel: a transposed filter, a shifted output', async (t) => {
    if (!bf16Here()) return t.skip('no AVX512-BF16 here');
    const x = () => randomTensor([2, 8, 8, 16], 1) as Tensor4D;
    const w = () => randomTensor([3, 3, 16, 16], 2) as Tensor4D;
    const [expected] = await runOn('cpu', () => tf.conv2d(x(), w(), 1, 'same'));
    usePrecision('bf16', 'native');
    try {
      const [right] = await runOn('native', () => tf.conv2d(x(), w(), 1, 'same'));
      // In/out channels swapped: what a wrong weight layout would compute.
      const [swapped] = await runOn('native', () => tf.conv2d(x(), tf.transpose(w(), [0, 1, 3, 2]) as Tensor4D, 1, 'same'));
      assertBf16Close(right!, expected!, 'right');
      assert.throws(() => assertBf16Close(swapped!, expected!, 'swapped'), /relative error/);
      const shifted = Float32Array.from(right!, (_, i) => right![(i + 16) % right!.length]!);
      assert.throws(() => assertBf16Close(shifted, expected!, 'shifted'), /relative error/);
      // One element wrong by a tenth of the output's scale.
      const one = Float32Array.from(right!);
      one[100] = one[100]! + 0.1 * rms(expected!);
      assert.throws(() => assertBf16Close(one, expected!, 'one'), /element 100/);
    } finally {
      usePrecision('f32', 'native');
    }
  });

  test('bf16 runs oneDNN bf16 kernels (not reference ones) in all three directions; f32 keeps Winograd', (t) => {
    if (!bf16Here()) return t.skip('no AVX512-BF16 here');
    const addon = nativeAddon();
    // n h w c kh kw oc oh ow sh sw dh dw pt pl pb pr groups relu: ResNet-18 width-64 shapes at batch 4
    const shapes = [
      [4, 32, 32, 64, 3, 3, 64, 32, 32, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
      [4, 32, 32, 64, 3, 3, 128, 16, 16, 2, 2, 1, 1, 1, 1, 1, 1, 1, 0],
      [4, 32, 32, 64, 1, 1, 128, 16, 16, 2, 2, 1, 1, 0, 0, 0, 0, 1, 0],
      [4, 4, 4, 512, 3, 3, 512, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
      [4, 32, 32, 3, 3, 3, 64, 32, 32, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
    ];
    const directions = ['forward', 'backwardData', 'backwardWeights'] as const;
    try {
      usePrecision('bf16', 'native');
      for (const dims of shapes) {
        for (const dir of directions) {
          const impl = addon.conv2dImplementation(dims, dir);
          assert.match(impl, / bf16$/, `${dims} ${dir}: ${impl}`);
          assert.doesNotMatch(impl, /ref|wino/, `${dims} ${dir}: ${impl}`);
        }
      }
      assert.match(addon.conv2dImplementation(shapes[3]!, 'backwardWeights'), /^im2col\+matmul:brg.* bf16$/);
      assert.match(addon.matmulImplementation([1, 1, 64, 512, 10, 0, 0, 0]), /^brg.*bf16 bf16$/);
      assert.equal(addon.info().precision, 'bf16');
    } finally {
      usePrecision('f32', 'native');
    }
    assert.equal(addon.info().precision, 'f32');
    assert.match(addon.conv2dImplementation(shapes[0]!, 'forward'), / f32$/);
    if (/avx512/.test(addon.conv2dImplementation(shapes[0]!))) assert.match(addon.conv2dImplementation(shapes[0]!), /wino/);
    assert.throws(() => addon.setPrecision('fp16' as 'f32'), /expected 'f32' or 'bf16'/);
  });
});

test('a tiny supervised run in bf16: the loss falls, convolutions ran in bf16, config.yaml records it, f32 comes back after', async (t) => {
  await setupNative();
  if (!bf16Here()) return t.skip('no AVX512-BF16 here');
  const addon = nativeAddon() as unknown as Record<string, (...args: unknown[]) => unknown>;
  const precisionOfConvs = new Set<string>();
  for (const name of ['conv2d', 'conv2dBackwardData', 'conv2dBackwardWeights']) {
    const original = addon[name]!;
    addon[name] = (...args: unknown[]) => {
      precisionOfConvs.add(nativeAddon().info().precision);
      return original(...args);
    };
  }
  const out = join(mkdtempSync(join(tmpdir(), 'selfsup-bf16-')), 'run');
  const config = parseRunConfig({
    out,
    backend: 'native',
    precision: 'bf16',
    workers: 0,
    epochs: 3,
    batchSize: 64,
    dataset: { limit: 512 },
    model: { width: 8 },
    optimizer: { lr: 0.2 },
    onlineKnn: { every: 0 },
    preciseBn: { images: 0 },
  });
  const lines: string[] = [];
  const result = await train(config, { quiet: true, log: (l) => lines.push(l) });
  const losses = result.metrics.map((m) => m.loss);
  assert.ok(losses.every(Number.isFinite), `epoch losses ${losses.join(' ')}`);
  assert.ok(losses.at(-1)! < losses[0]! - 0.2, `epoch losses ${losses.map((l) => l.toFixed(3)).join(' ')}`);
  assert.deepEqual([...precisionOfConvs], ['bf16']);
  assert.equal((parseYaml(readFileSync(join(out, 'config.yaml'), 'utf8')) as { precision: string }).precision, 'bf16');
  assert.ok(lines.some((l) => /backend native \(bf16\)/.test(l)), lines.join('\n'));
  assert.equal(nativeAddon().info().precision, 'f32', 'the run restores the precision it found');
});
