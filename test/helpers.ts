// Shared test utilities: deterministic random tensors, closeness assertions,
// running the same computation on two backends, and finite-difference checks.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as tf from '../src/core/tf.js';
import type { Tensor } from '@tensorflow/tfjs-core';
import { registerNativeBackend } from '../src/backend/native_backend.js';
import { nativeAddon } from '../src/backend/native_addon.js';
import type { Module } from '../src/nn/module.js';
import { Mulberry32 } from '../src/core/random.js';

/** Registers `native` (failing the test run loudly if the addon is missing). */
export async function setupNative(): Promise<void> {
  const ok = await registerNativeBackend();
  assert.ok(ok, 'the native addon did not load; run `npm run setup`');
  await tf.setBackend('cpu');
}

/** The values of every buffer of `module` (BN running statistics, queues, banks), in name order, for before/after comparisons. */
export function bufferValues(module: Module): number[][] {
  return module.namedBuffers().map(([, v]) => Array.from(v.dataSync()));
}

/** A seeded uniform [0, 1) source for test data (the project's Mulberry32 stream). */
export function rng(seed: number): () => number {
  const stream = new Mulberry32(seed);
  return () => stream.next();
}

/** Uniform values in [lo, hi). */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

export function randomTensor(shape: number[], seed: number, lo = -1, hi = 1): Tensor {
  return tf.tensor(randomArray(shape.reduce((a, b) => a * b, 1), seed, lo, hi), shape);
}

export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  { atol = 1e-4, rtol = 1e-4 } = {},
  what = 'values',
): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} != ${expected.length}`);
  let worst = -1;
  let worstErr = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    const err = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (!(err <= 0) && (worst < 0 || err > worstErr || Number.isNaN(err))) {
      worst = i;
      worstErr = err;
    }
  }
  if (worst >= 0) {
    assert.fail(`${what}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} (atol ${atol}, rtol ${rtol})`);
  }
}

/** Runs `fn` with `backend` active and returns every output's values. */
export async function runOn(backend: string, fn: () => Tensor | Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  // Read outside tidy: tidy walks every key of what it returns, typed arrays included.
  const outputs = tf.tidy(fn);
  const list = Array.isArray(outputs) ? outputs : [outputs];
  const values = list.map((t) => Float32Array.from(t.dataSync() as ArrayLike<number>));
  tf.dispose(list);
  return values;
}

/** Asserts that `fn` gives the same outputs on `native` as on tfjs-cpu. */
export async function assertNativeMatchesCpu(
  fn: () => Tensor | Tensor[],
  tolerance: { atol?: number; rtol?: number } = {},
  what = 'output',
): Promise<void> {
  const expected = await runOn('cpu', fn);
  const actual = await runOn('native', fn);
  assert.equal(actual.length, expected.length);
  actual.forEach((a, i) => assertClose(a, expected[i]!, tolerance, `${what}[${i}]`));
}

/**
 * Central finite differences of scalar `f` at `x`, compared with tfjs autograd
 * on the active backend, at `samples` randomly chosen coordinates.
 */
export function assertGradientMatchesFiniteDifferences(
  f: (x: Tensor) => Tensor,
  x: Tensor,
  { eps = 1e-2, atol = 2e-3, rtol = 2e-2, samples = 12, seed = 7 } = {},
): void {
  const analytic = tf.tidy(() => tf.grad(f)(x).dataSync() as Float32Array);
  const base = x.dataSync() as Float32Array;
  const r = rng(seed);
  for (let s = 0; s < Math.min(samples, base.length); s++) {
    const i = Math.floor(r() * base.length);
    const at = (delta: number) =>
      tf.tidy(() => {
        const v = Float32Array.from(base);
        v[i] = v[i]! + delta;
        return f(tf.tensor(v, x.shape)).dataSync()[0]!;
      });
    const numeric = (at(eps) - at(-eps)) / (2 * eps);
    const a = analytic[i]!;
    assert.ok(
      Math.abs(a - numeric) <= atol + rtol * Math.abs(numeric),
      `gradient at flat index ${i}: autograd ${a}, finite difference ${numeric}`,
    );
  }
}

/** Counts calls of one addon function, so a test knows the native kernel ran and not the fallback. */
export function countCalls(name: string): () => number {
  const addon = nativeAddon() as unknown as Record<string, (...args: unknown[]) => unknown>;
  const original = addon[name]!;
  let calls = 0;
  addon[name] = (...args: unknown[]) => {
    calls++;
    return original(...args);
  };
  return () => calls;
}

/**
 * Runs the Node script `args[0]` with `args[1..]` in a child process, polls
 * `ready` (every 100 ms, for at most two minutes) and then sends SIGINT;
 * returns its exit code (or the signal that ended it), stdout and stderr.
 * `ready` should prove the command's loop, and so its signal handler, runs.
 */
export async function interruptWhen(args: string[], ready: () => boolean): Promise<{ code: number | NodeJS.Signals | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) => child.on('exit', (c, signal) => resolve(c ?? signal)));
  const started = Date.now();
  while (!ready() && Date.now() - started < 120_000) await new Promise((r) => setTimeout(r, 100));
  child.kill('SIGINT');
  return { code: await exited, stdout, stderr };
}

/**
 * Runs the ES module `script` in a child Node process, sends it SIGINT once its
 * stdout is exactly `marker`, and returns its exit code (or the signal that
 * ended it) and what it printed after the marker.
 */
export async function interruptAfter(script: string, marker: string): Promise<{ code: number | NodeJS.Signals | null; rest: string }> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => {
    output += c.toString();
    if (output === marker) child.kill('SIGINT');
  });
  const code = await new Promise<number | NodeJS.Signals | null>((resolve) => child.on('exit', (c, signal) => resolve(c ?? signal)));
  return { code, rest: output.startsWith(marker) ? output.slice(marker.length) : output };
}
