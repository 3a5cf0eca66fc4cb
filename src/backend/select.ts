// Picks the tfjs backend: `native` (oneDNN) when the addon loads, else `wasm`,
// else `cpu`. `webgpu` only on request. Method code never asks which one runs.
import * as tf from '../core/tf.js';
import { nativeLoadError, registerNativeBackend } from './native_backend.js';

export const BACKEND_NAMES = ['native', 'wasm', 'webgpu', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export type BackendChoice = BackendName | 'auto';

/** Registers a backend with tfjs; resolves false when it cannot run here. */
const registrars: Record<BackendName, () => Promise<boolean>> = {
  native: () => registerNativeBackend(),
  wasm: async () => (await import('./wasm.js')).registerWasmBackend(),
  webgpu: async () => (await import('./webgpu.js')).registerWebGpuBackend(),
  cpu: async () => true,
};

/** Why a backend could not be registered, when its module can tell. */
const failureReasons: Record<BackendName, () => Promise<string | undefined>> = {
  native: async () => nativeLoadError()?.message,
  wasm: async () => (await import('./wasm.js')).wasmLoadError()?.message,
  webgpu: async () => (await import('./webgpu.js')).webgpuUnavailableReason(),
  cpu: async () => undefined,
};

async function tryBackend(name: BackendName): Promise<boolean> {
  try {
    if (!(await registrars[name]())) return false;
    return await tf.setBackend(name);
  } catch {
    return false;
  }
}

/**
 * Makes `choice` the active tfjs backend and returns its name. `auto` takes the
 * fastest that loads. An explicit choice that cannot load is an error that says why.
 */
export async function useBackend(choice: BackendChoice = 'auto'): Promise<BackendName> {
  if (choice === 'auto') {
    for (const name of ['native', 'wasm', 'cpu'] as const) {
      if (await tryBackend(name)) return name;
    }
    throw new Error('no tfjs backend could be initialised (tried native, wasm, cpu)');
  }
  if (!BACKEND_NAMES.includes(choice)) {
    throw new Error(`--backend: unknown backend "${String(choice)}"; choose one of auto, ${BACKEND_NAMES.join(', ')}`);
  }
  if (await tryBackend(choice)) return choice;
  const why = await failureReasons[choice]();
  throw new Error(`--backend ${choice}: the backend could not be initialised${why ? `: ${why}` : ''}`);
}
