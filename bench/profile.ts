// A training step's per-kernel profile (tf.profile), for the engine
// benchmark's models and the methods benchmark's steps: time by kernel, by
// kernel and input shapes, and each convolution direction's GFLOP/s against
// the backend's own f32 matmul.
import { performance } from 'node:perf_hooks';
import * as tf from '../src/core/tf.js';
import { convDirection, convFlops, type ConvDirection } from './conv_flops.js';

export interface KernelProfileRow {
  kernel: string;
  ms: number;
  percent: number;
  calls: number;
  /** Input shapes of the costliest call signature. */
  inputShapes: string;
}

/** One kernel at one set of input shapes. */
export interface SignatureProfileRow {
  kernel: string;
  inputShapes: string;
  ms: number;
  calls: number;
}

/** One convolution direction's share of a profiled step. */
export interface ConvDirectionRow {
  direction: ConvDirection;
  calls: number;
  ms: number;
  gflop: number;
  gflops: number;
}

export interface StepProfile {
  totalMs: number;
  kernels: KernelProfileRow[];
  /** The costliest kernel-and-shape signatures, most expensive first. */
  signatures: SignatureProfileRow[];
  conv: ConvDirectionRow[];
  /** The backend's f32 GFLOP/s on one large square matmul: the attainable peak the convolutions are judged against. */
  matmulPeakGflops: number;
}

/** Best-of-five GFLOP/s of an n x n x n f32 matmul on the current backend. */
export function matmulPeakGflops(n = 2048): number {
  const a = tf.randomNormal([n, n]);
  const b = tf.randomNormal([n, n]);
  try {
    let best = Infinity;
    for (let i = 0; i < 6; i++) {
      const t0 = performance.now();
      const c = tf.matMul(a, b);
      c.dataSync();
      c.dispose();
      if (i > 0) best = Math.min(best, performance.now() - t0);
    }
    return (2 * n ** 3) / (best * 1e6);
  } finally {
    a.dispose();
    b.dispose();
  }
}

const shapesOf = (shapes: Array<number[] | undefined>) => shapes.map((s) => (s ? `[${s.join(',')}]` : '-')).join(' ');

/** Profiles one call of `step` (which must dispose what it makes) and aggregates the kernels it ran. */
export async function profileStep(step: () => void, signatures = 20): Promise<StepProfile> {
  const info = await tf.profile(() => {
    step();
    return tf.scalar(0);
  });
  (info.result as tf.Tensor).dispose();
  const byName = new Map<string, { ms: number; calls: number }>();
  const bySignature = new Map<string, SignatureProfileRow>();
  const byDirection = new Map<ConvDirection, { calls: number; ms: number; flops: number }>();
  for (const k of info.kernels) {
    const ms = Number(k.kernelTimeMs) || 0;
    const direction = convDirection(k.name);
    const flops = convFlops(k.name, k.inputShapes, k.outputShapes);
    if (direction && flops !== undefined) {
      const d = byDirection.get(direction) ?? { calls: 0, ms: 0, flops: 0 };
      byDirection.set(direction, { calls: d.calls + 1, ms: d.ms + ms, flops: d.flops + flops });
    }
    const entry = byName.get(k.name) ?? { ms: 0, calls: 0 };
    byName.set(k.name, { ms: entry.ms + ms, calls: entry.calls + 1 });
    const inputShapes = shapesOf(k.inputShapes);
    const key = `${k.name} ${inputShapes}`;
    const sig = bySignature.get(key) ?? { kernel: k.name, inputShapes, ms: 0, calls: 0 };
    bySignature.set(key, { ...sig, ms: sig.ms + ms, calls: sig.calls + 1 });
  }
  const totalMs = [...byName.values()].reduce((s, e) => s + e.ms, 0);
  const sortedSignatures = [...bySignature.values()].sort((a, b) => b.ms - a.ms);
  const kernels = [...byName]
    .map(([kernel, e]) => ({
      kernel,
      ms: e.ms,
      percent: totalMs > 0 ? (100 * e.ms) / totalMs : 0,
      calls: e.calls,
      inputShapes: sortedSignatures.find((s) => s.kernel === kernel)?.inputShapes ?? '',
    }))
    .sort((a, b) => b.ms - a.ms);
  const conv = [...byDirection].map(([direction, d]) => ({ direction, calls: d.calls, ms: d.ms, gflop: d.flops / 1e9, gflops: d.ms > 0 ? d.flops / (d.ms * 1e6) : 0 }));
  return { totalMs, kernels, signatures: sortedSignatures.slice(0, signatures), conv, matmulPeakGflops: matmulPeakGflops() };
}

const fmt = (x: number, digits = 1) => x.toFixed(digits);

/** The profile as text: `title`, the costliest kernels, kernel-and-shape signatures, and GFLOP/s per convolution direction. */
export function profileTable(title: string, profile: StepProfile): string {
  const lines = [`\nper-kernel profile: ${title} (${fmt(profile.totalMs)} ms in kernels)`];
  lines.push(`  ${'kernel'.padEnd(28)}${'ms'.padStart(10)}${'%'.padStart(7)}${'calls'.padStart(7)}   costliest input shapes`);
  for (const k of profile.kernels.slice(0, 15)) {
    lines.push(`  ${k.kernel.padEnd(28)}${fmt(k.ms).padStart(10)}${fmt(k.percent).padStart(7)}${String(k.calls).padStart(7)}   ${k.inputShapes}`);
  }
  lines.push('\ncostliest kernels by input shapes:');
  for (const s of profile.signatures.slice(0, 15)) {
    lines.push(`  ${s.kernel.padEnd(28)}${fmt(s.ms).padStart(10)}${String(s.calls).padStart(7)}   ${s.inputShapes}`);
  }
  lines.push(`\nconvolutions by direction, against ${fmt(profile.matmulPeakGflops, 0)} GFLOP/s (the backend's f32 2048^3 matmul, best of 5):`);
  for (const d of profile.conv) {
    lines.push(`  conv ${d.direction.padEnd(17)}${fmt(d.ms).padStart(9)} ms${fmt(d.gflop, 2).padStart(9)} GFLOP${fmt(d.gflops, 0).padStart(7)} GFLOP/s  (${fmt((100 * d.gflops) / profile.matmulPeakGflops, 0)}% of peak)`);
  }
  return lines.join('\n');
}
