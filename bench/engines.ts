// The engine benchmark: training-step throughput of the reference models on
// each tfjs backend and on PyTorch CPU, the ratios the 2x target of
// docs/architecture.md is judged by, and a per-kernel profile of one step.
//
//   npm run bench                              everything (models a,b,c)
//   npm run bench -- --models c --quick --no-profile --no-loader
//
// A step is forward, softmax cross-entropy, backward and the trainer's
// momentum-SGD update (lr 0.01, momentum 0.9, as torch.optim.SGD), finished by
// reading the loss; we report the median over timed steps after warm-up.
// PyTorch runs as a subprocess (bench/pytorch_server.ts) at 1 and 2 threads,
// and its better figure counts. Native and PyTorch steps are interleaved (one
// native step, then one PyTorch step at each thread count, round after round)
// so that the machine's speed drift hits both engines alike.
// bf16 (unless --no-bf16): native in bf16 precision (convolutions and matmuls
// in bfloat16, f32 accumulation; src/backend/precision.ts) right after each
// native f32 step, and PyTorch under torch.autocast('cpu', dtype=torch.bfloat16)
// after its f32 steps: rows native-bf16 and pytorch-bf16, ratios bf16/f32 and
// native-bf16/pytorch-bf16.
// Results go to bench/results/<timestamp>.json in the repository.
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command } from 'commander';
import * as tf from '../src/core/tf.js';
import type { Scalar, Tensor, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { BACKEND_NAMES, useBackend, type BackendName } from '../src/backend/select.js';
import { resolvePrecision, usePrecision, type ResolvedPrecision } from '../src/backend/precision.js';
import { positiveInt } from '../src/app/flags.js';
import { Mulberry32 } from '../src/core/random.js';
import { ConvNet, ResNet, normal } from '../src/nn/index.js';
import { writeFileAtomic } from '../src/core/files.js';
import { SGD, namedParameters } from '../src/train/optimizers.js';
import { detcoPipeline, loadFashionMnist, measureLoaderThroughput, twoViewPipeline, type PipelineSpec, type ThroughputResult } from '../src/data/index.js';
import { PytorchServer, pytorchUnavailable } from './pytorch_server.js';
import { median, repoRoot } from './rows.js';
import { profileStep, profileTable, type StepProfile } from './profile.js';
import { runMethodSteps, type MethodStepFlags } from './method_steps.js';

/** The bench models. `size`x`size`x`inChannels` inputs, `numClasses` classes. */
interface ModelSpec {
  key: string;
  id: string;
  label: string;
  arch: 'resnet' | 'convnet';
  depth?: 18;
  stem?: 'cifar';
  width?: number;
  batch: number;
  size: number;
  inChannels: number;
  numClasses: number;
}

const MODELS: ModelSpec[] = [
  { key: 'a', id: 'resnet18-w64', label: 'ResNet-18, CIFAR stem, width 64', arch: 'resnet', depth: 18, stem: 'cifar', width: 64, batch: 64, size: 32, inChannels: 3, numClasses: 10 },
  { key: 'b', id: 'resnet18-w16', label: 'ResNet-18, CIFAR stem, width 16', arch: 'resnet', depth: 18, stem: 'cifar', width: 16, batch: 128, size: 32, inChannels: 3, numClasses: 10 },
  { key: 'c', id: 'convnet3', label: '3-conv CNN (32, 64, 128)', arch: 'convnet', batch: 64, size: 32, inChannels: 3, numClasses: 10 },
];

interface Timing {
  imagesPerSec: number;
  msPerStep: number;
  stepsMs: number[];
  threads?: number;
  parameters?: number;
  /** Tensors left behind per step; anything but 0 is a leak. */
  tensorLeakPerStep?: number;
  note?: string;
}
type EngineResult = Timing | { skipped: string };

interface BenchOptions {
  models: string;
  backends: string;
  steps: number;
  warmup: number;
  wasmSteps: number;
  batch?: number;
  quick?: boolean;
  budget: number;
  pytorch: boolean;
  /** false with --no-bf16. */
  bf16: boolean;
  profile: string | false;
  json?: boolean;
  loader: boolean;
  loaderWorkers: string;
}

const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);
const fmt = (x: number, digits = 1) => x.toFixed(digits);

function timing(stepsMs: number[], batch: number, extra: Partial<Timing> = {}): Timing {
  const msPerStep = median(stepsMs);
  return { imagesPerSec: (batch * 1000) / msPerStep, msPerStep, stepsMs, ...extra };
}

function buildModel(spec: ModelSpec): ResNet | ConvNet {
  const { inChannels, numClasses } = spec;
  return spec.arch === 'resnet'
    ? new ResNet({ depth: spec.depth, stem: spec.stem, width: spec.width, inChannels, numClasses, seed: 0 })
    : new ConvNet({ inChannels, numClasses, seed: 0 });
}

/** A model, its optimizer and a fixed batch on the active backend; `step()` runs one training step. */
function trainingStep(spec: ModelSpec, batch: number) {
  const model = buildModel(spec).train();
  const optimizer = new SGD(namedParameters(model), { momentum: 0.9 });
  const x = normal([batch, spec.size, spec.size, spec.inChannels], 1, new Mulberry32(1)) as Tensor4D;
  const labels = tf.tidy(() => tf.oneHot(tf.tensor1d(Array.from({ length: batch }, (_, i) => i % spec.numClasses), 'int32'), spec.numClasses));
  const params = model.parameters();
  const loss = (): Scalar => tf.losses.softmaxCrossEntropy(labels as Tensor2D, model.logits(x));
  return {
    parameters: model.numParameters(),
    step(): Tensor {
      const { value, grads } = tf.variableGrads(loss, params);
      optimizer.step(grads, 0.01);
      tf.dispose(grads);
      value.dataSync();
      return value;
    },
    dispose() {
      model.dispose();
      optimizer.dispose();
      x.dispose();
      labels.dispose();
    },
  };
}

const PYTORCH_THREADS = [1, 2];

/** PyTorch's figure: the thread count whose steps have the lower median. */
function bestPytorch(stepsByThreads: Map<number, number[]>, batch: number, parameters: number): Timing {
  const [threads, stepsMs] = [...stepsByThreads].reduce((a, b) => (median(b[1]) < median(a[1]) ? b : a));
  return timing(stepsMs, batch, { threads, parameters });
}

/** PyTorch alone (when native is not timed): warm-up, then `steps` steps at each thread count. */
async function timePytorch(spec: ModelSpec, batch: number, steps: number, warmup: number): Promise<EngineResult> {
  const server = new PytorchServer(pytorchScript(), spec, batch);
  try {
    const parameters = await server.ready();
    const stepsByThreads = new Map<number, number[]>();
    for (const t of PYTORCH_THREADS) {
      await server.steps(t, warmup);
      stepsByThreads.set(t, await server.steps(t, steps));
      log(`${spec.id} on pytorch (${t} thr): ${stepsByThreads.get(t)!.map((ms) => fmt(ms)).join(', ')} ms`);
    }
    return bestPytorch(stepsByThreads, batch, parameters);
  } catch (err) {
    return { skipped: `failed: ${err instanceof Error ? err.message : String(err)}` };
  } finally {
    server.close();
  }
}

/**
 * Native and PyTorch on the same model, step by step in turns (see the header):
 * each round times one native step, then one PyTorch step at each thread
 * count; PyTorch's figure is its better thread count's. With `bf16` (a reason
 * string when bf16 is not timed), each round also times one native step in
 * bf16 precision right after the f32 one, and PyTorch steps under bf16
 * autocast after its f32 ones: rows native-bf16 and pytorch-bf16.
 */
async function timeNativeAndPytorch(spec: ModelSpec, batch: number, steps: number, warmup: number, budgetS: number, noBf16?: string) {
  const result: Record<string, EngineResult> = { native: { skipped: 'not timed' } };
  if (!noBf16) result['native-bf16'] = { skipped: 'not timed' };
  result.pytorch = { skipped: 'not timed' };
  if (!noBf16) result['pytorch-bf16'] = { skipped: 'not timed' };
  try {
    await useBackend('native');
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return { native: { skipped: why }, pytorch: await timePytorch(spec, batch, steps, warmup) };
  }
  const run = trainingStep(spec, batch);
  const server = new PytorchServer(pytorchScript(), spec, batch);
  const precisions: ResolvedPrecision[] = noBf16 ? ['f32'] : ['f32', 'bf16'];
  const nativeName = (p: ResolvedPrecision) => (p === 'bf16' ? 'native-bf16' : 'native');
  const torchName = (p: ResolvedPrecision) => (p === 'bf16' ? 'pytorch-bf16' : 'pytorch');
  try {
    const parameters = await server.ready();
    const nativeMs = new Map(precisions.map((p) => [p, [] as number[]]));
    const torchMs = new Map(precisions.map((p) => [p, new Map(PYTORCH_THREADS.map((t) => [t, [] as number[]]))]));
    const nativeStep = (precision: ResolvedPrecision) => {
      usePrecision(precision, 'native');
      const t0 = performance.now();
      run.step().dispose();
      return performance.now() - t0;
    };
    for (const p of precisions) {
      for (let i = 0; i < warmup; i++) log(`${spec.id} on ${nativeName(p)}: warm-up ${i + 1}/${warmup} ${fmt(nativeStep(p))} ms`);
    }
    for (const p of precisions) {
      for (const t of PYTORCH_THREADS) {
        log(`${spec.id} on ${torchName(p)} (${t} thr): warm-up ${(await server.steps(t, warmup, p === 'bf16')).map((ms) => fmt(ms)).join(', ')} ms`);
      }
    }
    const tensorsBefore = tf.memory().numTensors;
    const started = performance.now();
    let nativeSteps = 0;
    for (let round = 0; round < steps; round++) {
      const said: string[] = [];
      for (const p of precisions) {
        nativeMs.get(p)!.push(nativeStep(p));
        nativeSteps++;
        said.push(`${nativeName(p)} ${fmt(nativeMs.get(p)!.at(-1)!)} ms`);
      }
      for (const p of precisions) {
        const torch: string[] = [];
        for (const t of PYTORCH_THREADS) {
          const [ms] = await server.steps(t, 1, p === 'bf16');
          torchMs.get(p)!.get(t)!.push(ms!);
          torch.push(`${fmt(ms!)} ms at ${t} thr`);
        }
        said.push(`${torchName(p)} ${torch.join(', ')}`);
      }
      log(`${spec.id} round ${round + 1}/${steps}: ${said.join(', ')}`);
      if ((performance.now() - started) / 1000 > budgetS && round + 1 < steps) {
        log(`${spec.id}: over the ${budgetS} s budget, stopping at ${round + 1} rounds`);
        break;
      }
    }
    const leak = (tf.memory().numTensors - tensorsBefore) / nativeSteps;
    for (const p of precisions) {
      result[nativeName(p)] = timing(nativeMs.get(p)!, batch, { parameters: run.parameters, tensorLeakPerStep: leak });
      result[torchName(p)] = bestPytorch(torchMs.get(p)!, batch, parameters);
    }
  } catch (err) {
    const why = `failed: ${err instanceof Error ? err.message : String(err)}`;
    for (const p of precisions) {
      if (!isTiming(result[nativeName(p)])) result[nativeName(p)] = { skipped: why };
      result[torchName(p)] = { skipped: why };
    }
  } finally {
    usePrecision('f32', 'native');
    server.close();
    run.dispose();
  }
  return result;
}

/** `precision` bf16: native in bf16 precision (the native-bf16 row when PyTorch is not timed). */
async function timeTfjs(
  spec: ModelSpec, batch: number, backend: BackendName, steps: number, warmup: number, budgetS: number, precision: ResolvedPrecision = 'f32',
): Promise<EngineResult> {
  if (backend === 'cpu' && spec.arch === 'resnet') return { skipped: 'pure-JS cpu backend: hours per ResNet step' };
  try {
    await useBackend(backend);
    if (precision === 'bf16') usePrecision('bf16', backend);
  } catch (err) {
    return { skipped: err instanceof Error ? err.message : String(err) };
  }
  const run = trainingStep(spec, batch);
  try {
    const stepsMs: number[] = [];
    const started = performance.now();
    let tensorsBefore = 0;
    for (let i = 0; i < warmup + steps; i++) {
      if (i === warmup) tensorsBefore = tf.memory().numTensors;
      const t0 = performance.now();
      run.step().dispose();
      const ms = performance.now() - t0;
      if (i >= warmup) stepsMs.push(ms);
      log(`${spec.id} on ${backend}: ${i < warmup ? 'warm-up' : 'step'} ${i + 1}/${warmup + steps} ${fmt(ms)} ms`);
      if (stepsMs.length > 0 && (performance.now() - started) / 1000 > budgetS && i + 1 < warmup + steps) {
        log(`${spec.id} on ${backend}: over the ${budgetS} s budget, stopping at ${stepsMs.length} timed steps`);
        break;
      }
    }
    const leak = (tf.memory().numTensors - tensorsBefore) / stepsMs.length;
    const note = stepsMs.length < steps ? `only ${stepsMs.length} timed steps (budget)` : undefined;
    return timing(stepsMs, batch, { parameters: run.parameters, tensorLeakPerStep: leak, ...(note ? { note } : {}) });
  } catch (err) {
    return { skipped: `failed: ${err instanceof Error ? err.message : String(err)}` };
  } finally {
    if (precision === 'bf16') usePrecision('f32', backend);
    run.dispose();
  }
}

/** Why native bf16 is not timed (--no-bf16, no native, a CPU without AVX512-BF16), or undefined when it is. */
function bf16Skipped(opts: BenchOptions, backends: BackendName[]): string | undefined {
  if (!opts.bf16) return '--no-bf16';
  if (!backends.includes('native')) return 'native is not timed';
  try {
    resolvePrecision('bf16', 'native');
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

const pytorchScript = () => path.join(repoRoot(), 'bench', 'pytorch_step.py');

/** Per-kernel time of one training step, after one warm-up step. */
async function profileModelStep(spec: ModelSpec, batch: number): Promise<StepProfile> {
  const run = trainingStep(spec, batch);
  try {
    run.step().dispose();
    return await profileStep(() => run.step().dispose());
  } finally {
    run.dispose();
  }
}

function isTiming(r: EngineResult | undefined): r is Timing {
  return r !== undefined && 'imagesPerSec' in r;
}

function ratio(results: Record<string, EngineResult>, a: string, b: string): number | undefined {
  const ra = results[a];
  const rb = results[b];
  return isTiming(ra) && isTiming(rb) ? ra.imagesPerSec / rb.imagesPerSec : undefined;
}

function table(spec: ModelSpec, batch: number, results: Record<string, EngineResult>): string {
  const lines = [`\n${spec.id} (${spec.key}): ${spec.label}, batch ${batch}, ${spec.size}x${spec.size}x${spec.inChannels}`];
  lines.push(`  ${'engine'.padEnd(20)}${'images/s'.padStart(10)}${'ms/step'.padStart(11)}${'steps'.padStart(7)}`);
  for (const [engine, r] of Object.entries(results)) {
    const name = (engine === 'pytorch' || engine === 'pytorch-bf16') && isTiming(r) ? `${engine} (${r.threads} thr)` : engine;
    if (!isTiming(r)) {
      lines.push(`  ${name.padEnd(20)}skipped: ${r.skipped}`);
      continue;
    }
    const notes = [r.note, r.tensorLeakPerStep ? `leaks ${fmt(r.tensorLeakPerStep)} tensors/step` : undefined].filter(Boolean);
    lines.push(`  ${name.padEnd(20)}${fmt(r.imagesPerSec).padStart(10)}${fmt(r.msPerStep).padStart(11)}${String(r.stepsMs.length).padStart(7)}${notes.length ? `   ${notes.join('; ')}` : ''}`);
  }
  const ratios = Object.entries(modelRatios(results)).map(([k, v]) => `${k} ${fmt(v, 2)}x`);
  if (ratios.length) lines.push(`  throughput ratios: ${ratios.join(', ')}`);
  const params = new Set(Object.values(results).filter(isTiming).map((r) => r.parameters));
  if (params.size > 1) lines.push(`  WARNING: engines disagree on the parameter count: ${[...params].join(' vs ')}`);
  return lines.join('\n');
}

function modelRatios(results: Record<string, EngineResult>): Record<string, number> {
  const out: Record<string, number> = {};
  const engines = Object.keys(results).filter((e) => !['pytorch', 'native-bf16', 'pytorch-bf16'].includes(e));
  for (const e of engines) {
    const r = ratio(results, e, 'pytorch');
    if (r !== undefined) out[`${e}/pytorch`] = r;
  }
  for (const e of engines.filter((e) => e !== 'native')) {
    const r = ratio(results, 'native', e);
    if (r !== undefined) out[`native/${e}`] = r;
  }
  // bf16: native's speed-up over its own f32 steps, and native against PyTorch, both in bf16.
  for (const [name, a, b] of [['bf16/f32', 'native-bf16', 'native'], ['native-bf16/pytorch-bf16', 'native-bf16', 'pytorch-bf16']] as const) {
    const r = ratio(results, a, b);
    if (r !== undefined) out[name] = r;
  }
  return out;
}

function pickModels(list: string): ModelSpec[] {
  return list.split(',').map((name) => {
    const spec = MODELS.find((m) => m.key === name.trim() || m.id === name.trim());
    if (!spec) throw new Error(`--models: unknown model "${name}"; choose from ${MODELS.map((m) => `${m.key} (${m.id})`).join(', ')}`);
    return spec;
  });
}

function pickBackends(list: string): BackendName[] {
  return list.split(',').map((name) => {
    const b = name.trim() as BackendName;
    if (!BACKEND_NAMES.includes(b)) throw new Error(`--backends: unknown backend "${name}"; choose from ${BACKEND_NAMES.join(', ')}`);
    return b;
  });
}

async function runBench(opts: BenchOptions): Promise<void> {
  const models = pickModels(opts.models);
  const backends = pickBackends(opts.backends);
  const profileSpec = opts.profile === false ? undefined : pickModels(opts.profile)[0];
  const steps = opts.quick ? Math.min(opts.steps, 5) : opts.steps;
  const wasmSteps = opts.quick ? Math.min(opts.wasmSteps, 5) : opts.wasmSteps;
  const say = (text: string) => (opts.json ? process.stderr : process.stdout).write(`${text}\n`);

  const noPytorch = opts.pytorch ? pytorchUnavailable() : '--no-pytorch';
  if (noPytorch && opts.pytorch) say(`note: PyTorch skipped: ${noPytorch}`);
  const noBf16 = bf16Skipped(opts, backends);
  if (noBf16 && opts.bf16) say(`note: bf16 skipped: ${noBf16}`);

  // Engines take turns over all models, wasm last: its multi-gigabyte heap
  // slows every later native step in the same process.
  const results = new Map(models.map((spec) => [spec.key, {} as Record<string, EngineResult>]));
  const batchOf = (spec: ModelSpec) => opts.batch ?? spec.batch;
  const timeBackend = async (backend: BackendName) => {
    for (const spec of models) {
      const n = backend === 'wasm' ? wasmSteps : steps;
      results.get(spec.key)![backend] = await timeTfjs(spec, batchOf(spec), backend, n, opts.warmup, opts.budget);
      if (backend === 'native' && !noBf16) {
        results.get(spec.key)!['native-bf16'] = await timeTfjs(spec, batchOf(spec), backend, n, opts.warmup, opts.budget, 'bf16');
      }
    }
  };
  const interleaved = !noPytorch && backends.includes('native');
  if (interleaved) {
    for (const spec of models) Object.assign(results.get(spec.key)!, await timeNativeAndPytorch(spec, batchOf(spec), steps, opts.warmup, opts.budget, noBf16));
  }
  for (const backend of backends.filter((b) => b !== 'wasm' && !(interleaved && b === 'native'))) await timeBackend(backend);
  if (!interleaved) {
    for (const spec of models) {
      results.get(spec.key)!.pytorch = noPytorch ? { skipped: noPytorch } : await timePytorch(spec, batchOf(spec), steps, opts.warmup);
    }
  }

  let profile: ({ model: string; batch: number; backend: string } & StepProfile) | undefined;
  if (profileSpec) {
    const batch = batchOf(profileSpec);
    for (const backend of backends.filter((b) => !(b === 'cpu' && profileSpec.arch === 'resnet'))) {
      try {
        await useBackend(backend);
      } catch {
        continue;
      }
      log(`profiling one ${profileSpec.id} step on ${backend}`);
      try {
        profile = { model: profileSpec.id, batch, backend, ...(await profileModelStep(profileSpec, batch)) };
      } catch (err) {
        say(`\nper-kernel profile failed on ${backend}: ${err instanceof Error ? err.message : String(err)}`);
      }
      break;
    }
  }
  const loader = opts.loader
    ? await benchLoader(opts, models.map((spec) => ({ model: spec, results: results.get(spec.key)! })), say)
    : undefined;
  if (backends.includes('wasm')) await timeBackend('wasm');

  const report = models.map((spec) => {
    const r = results.get(spec.key)!;
    say(table(spec, batchOf(spec), r));
    return { model: spec, batch: batchOf(spec), results: r, ratios: modelRatios(r) };
  });
  if (profile && profileSpec) say(profileTable(`one ${profileSpec.id} training step, batch ${profile.batch}, on ${profile.backend}`, profile));

  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = path.join(repoRoot(), 'bench', 'results', `${stamp}.json`);
  const json = {
    timestamp: new Date().toISOString(),
    host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version, platform: `${os.platform()} ${os.arch()}` },
    options: { ...opts, steps, wasmSteps },
    models: report.map(({ model, batch, results, ratios }) => ({ ...model, batch, results, ratios })),
    profile,
    loader,
  };
  const text = `${JSON.stringify(json, null, 2)}\n`;
  writeFileAtomic(file, text);
  say(`\nresults written to ${path.relative(process.cwd(), file)}\n`);
  if (opts.json) {
    process.stdout.write(text);
    return;
  }
  for (const { model, ratios } of report) {
    for (const name of ['native/pytorch', ...(opts.bf16 ? ['bf16/f32', 'native-bf16/pytorch-bf16'] : [])]) {
      const r = ratios[name];
      say(`${name} ${model.id}: ${r === undefined ? 'n/a' : `${fmt(r, 2)}x`}`);
    }
  }
}

interface LoaderRow extends ThroughputResult {
  pipeline: string;
  /** Loader views/s over the training images/s of ResNet-18 width 16 (model b) on native. */
  trainingRatio?: number;
}

/**
 * Loader throughput in views/s for the MoCo v2 two-view and the DetCo
 * pipelines, on Fashion-MNIST. The bar is 3x the training throughput of
 * ResNet-18 at width 16, so the data never starves the model.
 */
async function benchLoader(
  opts: BenchOptions,
  report: Array<{ model: ModelSpec; results: Record<string, EngineResult> }>,
  say: (text: string) => void,
): Promise<LoaderRow[] | { skipped: string }> {
  let dataset;
  try {
    dataset = await loadFashionMnist({ split: 'train', limit: 20000 });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    say(`\nloader throughput skipped: ${why}`);
    return { skipped: why };
  }
  const native = report.find((r) => r.model.key === 'b')?.results.native;
  const trainingRate = native && isTiming(native) ? native.imagesPerSec : undefined;
  const pipelines: Array<[string, PipelineSpec]> = [
    ['fashion-mnist two-view (MoCo v2)', twoViewPipeline('mocov2')],
    ['DetCo: 2 global views + 2 jigsaw sets of 9', detcoPipeline()],
  ];
  const rows: LoaderRow[] = [];
  for (const [name, pipeline] of pipelines) {
    for (const workers of opts.loaderWorkers.split(',').map(Number)) {
      log(`loader: ${name}, ${workers} workers`);
      const r = await measureLoaderThroughput({ dataset, pipeline, batchSize: 256, workers, batches: opts.quick ? 8 : 20 });
      rows.push({ pipeline: name, ...r, trainingRatio: trainingRate ? r.viewsPerSecond / trainingRate : undefined });
    }
  }
  const lines = rows.map((r) =>
    `  ${r.pipeline.padEnd(44)} ${String(r.workers).padStart(7)} ${fmt(r.viewsPerSecond, 0).padStart(10)} ${fmt(r.samplesPerSecond, 0).padStart(10)}` +
    `${r.trainingRatio === undefined ? '' : `${fmt(r.trainingRatio, 1).padStart(9)}x`}`,
  );
  say(
    `\nloader throughput (batch 256, 32x32 views, 16x16 jigsaw patches)${trainingRate ? `; ratio = views/s over ResNet-18 w16 training images/s on native (${fmt(trainingRate)})` : ''}\n` +
      `  ${'pipeline'.padEnd(44)} ${'workers'.padStart(7)} ${'views/s'.padStart(10)} ${'samples/s'.padStart(10)}${trainingRate ? '    ratio' : ''}\n${lines.join('\n')}`,
  );
  return rows;
}

async function main(): Promise<void> {
  const program = new Command('bench')
    .description('training-step throughput (images/s) on each backend and on PyTorch CPU, with a per-kernel profile')
    .showHelpAfterError()
    .option('--models <list>', `models: ${MODELS.map((m) => `${m.key} = ${m.id} (${m.label}, batch ${m.batch})`).join('; ')}`, 'a,b,c')
    .option('--backends <list>', 'tfjs backends to time, those that load', 'native,wasm')
    .option('--steps <n>', 'timed steps per engine; the median is reported', positiveInt, 10)
    .option('--warmup <n>', 'untimed steps first', positiveInt, 2)
    .option('--wasm-steps <n>', 'timed steps on wasm, which is slow', positiveInt, 5)
    .option('--batch <n>', "override every model's batch size (quick checks)", positiveInt)
    .option('--quick', 'fewer steps (5 timed)')
    .option('--budget <seconds>', 'stop timing an engine on a model after this long (keeps at least one timed step)', positiveInt, 600)
    .option('--no-pytorch', 'skip the PyTorch CPU reference')
    .option('--no-bf16', "skip the bf16 rows: native in bf16 precision and PyTorch's CPU bf16 autocast")
    .option('--profile <model>', 'model whose training step is profiled per kernel on the first backend that loads', 'a')
    .option('--no-profile', 'skip the per-kernel profile')
    .option('--json', 'print the JSON results on stdout (tables go to stderr)')
    .option('--no-loader', 'skip the data-loader throughput section')
    .option('--loader-workers <list>', 'worker counts to time the loader with', '0,1,2')
    .option('--methods', "one training step of every method against PyTorch (bench/method_steps.ts) instead of the engine table")
    .option('--rows <list>', 'with --methods: the methods to time (default: all)')
    .option('--rounds <n>', 'with --methods: timed interleaved rounds per method', positiveInt, 5)
    .option('--profile-methods <list>', 'with --methods: also profile one step of these methods per kernel and input shapes')
    .parse();
  const opts = program.opts<BenchOptions & MethodStepFlags>();
  if (opts.methods) return runMethodSteps(opts);
  await runBench(opts);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
