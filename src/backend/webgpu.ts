// The `webgpu` backend: tfjs-backend-webgpu in Node through Dawn (the npm
// `webgpu` package). This is the GPU path; every training kernel exists there.
//
// Finding an adapter, in order:
// 1. Dawn's default backend (Vulkan on Linux) at the core feature level: a real GPU.
// 2. The same in WebGPU compatibility mode.
// 3. Dawn's OpenGL backend in compatibility mode, which on a GPU-less Linux box
//    is Mesa's llvmpipe through surfaceless EGL: slow, but a functional test of
//    the whole path. (Debian bookworm's lavapipe is too old for Dawn's Vulkan.)
// SELFSUP_WEBGPU_FLAGS (comma-separated Dawn options, e.g. `backend=vulkan`)
// replaces that search with one explicit choice.
import * as tf from '../core/tf.js';

interface GpuLike {
  requestAdapter(options?: Record<string, unknown>): Promise<AdapterLike | null>;
  getPreferredCanvasFormat?: () => string;
  wgslLanguageFeatures?: unknown;
}
interface AdapterLike {
  info?: { vendor?: string; architecture?: string; device?: string; description?: string };
}

/** One way of asking Dawn for an adapter. */
interface Attempt {
  flags: string[];
  options: Record<string, unknown>;
  what: string;
}

let registration: Promise<boolean> | undefined;
let unavailable: string | undefined;
let adapterDescription: string | undefined;

/** Why `webgpu` cannot be used here (undefined when it can, or before registerWebGpuBackend ran). */
export function webgpuUnavailableReason(): string | undefined {
  return unavailable;
}

/** The adapter tfjs-backend-webgpu runs on, e.g. "llvmpipe (OpenGL, compatibility mode)". */
export function webgpuAdapterDescription(): string | undefined {
  return adapterDescription;
}

/**
 * Makes `navigator.gpu` a Dawn GPU and registers tfjs-backend-webgpu on it.
 * Resolves false, never throws, when no adapter exists; webgpuUnavailableReason()
 * then says why. Leaves the active backend as it was, when one was set.
 */
export function registerWebGpuBackend(): Promise<boolean> {
  registration ??= doRegister().catch((e: unknown) => {
    unavailable = `webgpu: ${e instanceof Error ? e.message : String(e)}`;
    return false;
  });
  return registration;
}

function attempts(): Attempt[] {
  const forced = process.env['SELFSUP_WEBGPU_FLAGS'];
  if (forced) {
    const flags = forced.split(',').map((f) => f.trim()).filter(Boolean);
    return [
      { flags, options: {}, what: `Dawn flags ${flags.join(' ')}` },
      { flags, options: { featureLevel: 'compatibility' }, what: `Dawn flags ${flags.join(' ')}, compatibility mode` },
    ];
  }
  return [
    { flags: [], options: {}, what: 'default backend' },
    { flags: [], options: { featureLevel: 'compatibility' }, what: 'default backend, compatibility mode' },
    { flags: ['backend=opengl'], options: { featureLevel: 'compatibility' }, what: 'OpenGL, compatibility mode' },
  ];
}

async function doRegister(): Promise<boolean> {
  if (tf.findBackendFactory('webgpu') != null) return true; // registered elsewhere already

  let dawn: { create: (flags: string[]) => GpuLike; globals: Record<string, unknown> };
  try {
    dawn = (await import('webgpu')) as unknown as typeof dawn;
  } catch (e) {
    unavailable = `webgpu: the Dawn addon (npm package "webgpu") did not load: ${(e as Error).message}`;
    return false;
  }
  // Headless Linux has no X or Wayland display; Mesa's EGL then needs the
  // surfaceless platform for Dawn's OpenGL backend to find llvmpipe or a GPU.
  if (process.platform === 'linux' && !process.env['EGL_PLATFORM'] &&
      !process.env['DISPLAY'] && !process.env['WAYLAND_DISPLAY']) {
    process.env['EGL_PLATFORM'] = 'surfaceless';
  }

  const tried: string[] = [];
  let found: { gpu: GpuLike; attempt: Attempt; adapter: AdapterLike } | undefined;
  for (const attempt of attempts()) {
    try {
      const gpu = dawn.create(attempt.flags);
      const adapter = await gpu.requestAdapter(attempt.options);
      if (adapter) {
        found = { gpu, attempt, adapter };
        break;
      }
      tried.push(`${attempt.what}: no adapter`);
    } catch (e) {
      tried.push(`${attempt.what}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  if (!found) {
    unavailable = `webgpu: Dawn found no GPU adapter (${tried.join('; ')})`;
    return false;
  }

  const { gpu, attempt, adapter } = found;
  const name = adapter.info?.device || adapter.info?.description || adapter.info?.vendor || 'unknown adapter';
  adapterDescription = `${name} (${attempt.what})`;
  // tfjs-backend-webgpu asks for an adapter itself, with only a power
  // preference: hand it the options that worked.
  const navigatorGpu: GpuLike = {
    requestAdapter: (options) => gpu.requestAdapter({ ...options, ...attempt.options }),
    getPreferredCanvasFormat: () => gpu.getPreferredCanvasFormat?.() ?? 'bgra8unorm',
    wgslLanguageFeatures: gpu.wgslLanguageFeatures,
  };
  Object.assign(globalThis, dawn.globals);
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (g.navigator) {
    Object.defineProperty(g.navigator, 'gpu', { value: navigatorGpu, configurable: true, writable: true });
  } else {
    Object.defineProperty(globalThis, 'navigator', { value: { gpu: navigatorGpu }, configurable: true, writable: true });
  }

  await import('@tensorflow/tfjs-backend-webgpu');
  if (tf.findBackendFactory('webgpu') == null) {
    unavailable = 'webgpu: tfjs-backend-webgpu did not register (navigator.gpu not seen)';
    return false;
  }
  const previous = tf.engine().backendName as string | undefined;
  let ok = false;
  try {
    ok = await tf.setBackend('webgpu');
  } catch (e) {
    unavailable = `webgpu: tfjs-backend-webgpu failed on ${adapterDescription}: ${(e as Error).message}`;
  }
  if (previous && previous !== 'webgpu') await tf.setBackend(previous);
  if (!ok) {
    unavailable ??= `webgpu: tfjs-backend-webgpu failed to initialise on ${adapterDescription}`;
    tf.removeBackend('webgpu');
    return false;
  }
  unavailable = undefined;
  return true;
}
