// Mixed precision on the native backend: `bf16` runs convolutions (forward and
// both gradients) and matmuls in bfloat16 with f32 accumulation. tfjs tensors
// stay float32, so master weights, optimizer state, BN statistics and losses
// stay f32; the addon converts a kernel's inputs to bf16 inside the call and
// writes f32 outputs. It is one process-wide mode of the addon.
import { readFileSync } from 'node:fs';
import { nativeAddon } from './native_addon.js';

export const PRECISIONS = ['auto', 'f32', 'bf16'] as const;
export type Precision = (typeof PRECISIONS)[number];
/** What a precision choice resolves to. */
export type ResolvedPrecision = 'f32' | 'bf16';

const FLAG = "--precision bf16 (run config field 'precision')";

let thisCpu: { flags: ReadonlySet<string> | undefined } | undefined;

/** The CPU's feature flags from /proc/cpuinfo (Linux; read once), or undefined where there is none. */
export function readCpuFlags(cpuinfo?: string): ReadonlySet<string> | undefined {
  if (cpuinfo === undefined) return (thisCpu ??= { flags: readCpuFlags('/proc/cpuinfo') }).flags;
  let text: string;
  try {
    text = readFileSync(cpuinfo, 'utf8');
  } catch {
    return undefined;
  }
  const line = text.split('\n').find((l) => /^flags\s*:/.test(l));
  return line === undefined ? undefined : new Set(line.slice(line.indexOf(':') + 1).trim().split(/\s+/));
}

/**
 * What `choice` resolves to on `backend`, or an error that names the flag
 * when it cannot run there. `auto` is f32 everywhere: bf16 is opt-in.
 * `cpuFlags` is the CPU's flag set (tests inject one); undefined when the
 * platform cannot tell, and then the addon's own check (oneDNN's ISA) decides.
 */
export function resolvePrecision(choice: Precision, backend: string, cpuFlags: ReadonlySet<string> | undefined = readCpuFlags()): ResolvedPrecision {
  if (choice === 'auto' || choice === 'f32') return 'f32';
  if (choice !== 'bf16') throw new Error(`--precision: unknown precision '${String(choice)}'; choose one of ${PRECISIONS.join(', ')}`);
  if (backend !== 'native') {
    throw new Error(`${FLAG} needs the native backend (oneDNN bf16 kernels); this run's backend is ${backend}. Use --backend native, or --precision f32`);
  }
  if (cpuFlags !== undefined && !cpuFlags.has('avx512_bf16')) {
    throw new Error(`${FLAG} needs a CPU with AVX512-BF16 (the avx512_bf16 flag in /proc/cpuinfo), which this CPU lacks; use --precision f32 (or auto)`);
  }
  return 'bf16';
}

/**
 * Resolves `choice` for `backend` (see resolvePrecision) and puts the native
 * addon in that precision; returns what runs. Other backends only ever run f32.
 */
export function usePrecision(choice: Precision, backend: string, cpuFlags?: ReadonlySet<string>): ResolvedPrecision {
  const precision = resolvePrecision(choice, backend, cpuFlags);
  if (backend === 'native') {
    const addon = nativeAddon();
    if (precision === 'bf16' && !addon.info().bf16) {
      throw new Error(`${FLAG}: oneDNN reports no AVX512-BF16 support on this CPU (ISA ${addon.info().isa}; is ONEDNN_MAX_CPU_ISA set?); use --precision f32 (or auto)`);
    }
    addon.setPrecision(precision);
  }
  return precision;
}

/** The native addon's current precision (f32 when the addon is not loaded). */
export function nativePrecision(): ResolvedPrecision {
  try {
    return nativeAddon().info().precision;
  } catch {
    return 'f32';
  }
}
