// The method-step benchmark, `npm run bench -- --methods` (bench/engines.ts):
// one training step of every registered method at the methods-benchmark
// setting (ResNet-18, CIFAR stem, width 16, 32x32 one-channel Fashion-MNIST
// views, batch 256, each method's default options: its heads, queues, banks
// and views), timed against the same step written in PyTorch
// (bench/pytorch_methods.py).
//
// A step is what the trainer's (src/train/loop.ts trainStep) is: the batch to
// tensors, beforeStep, variableGrads of the loss, every term read,
// transformGradients, the gradients' finiteness check, the momentum-SGD step
// (the run config's defaults: momentum 0.9, weight decay 5e-4 off BN and
// biases) and afterStep (EMA updates, queue and bank commits). The batch is
// fixed random data of the pipeline's shapes (the step, not the data
// pipeline, whose views/s are measured separately). Steps run at epoch 1 of a
// 5-epoch, 78-steps-per-epoch run: past SwAV's first-epoch prototype freeze,
// and DeepCluster's pseudo-labels are random (its clustering runs once an
// epoch, not per step, so it is left out on both sides).
//
// Rounds interleave, as the engine bench does: one selfsup step, then one
// PyTorch step at 1 and at 2 threads, round after round; PyTorch's figure is
// its better thread count's median. With several methods, each runs in a
// child process of its own (this script again, with --rows <method>), so its
// peak RSS (process.resourceUsage().maxRSS) is its own and one method's heap
// cannot slow the next.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import * as tf from '../src/core/tf.js';
import { useBackend } from '../src/backend/select.js';
import { nativeAddon } from '../src/backend/native_addon.js';
import { Mulberry32 } from '../src/core/random.js';
import { writeFileAtomic } from '../src/core/files.js';
import { allocateBatch, loadFashionMnist, measureLoaderThroughput, recipeOptions, viewsPerSample, type Batch, type PipelineSpec, type ThroughputResult } from '../src/data/index.js';
import type { DeepCluster } from '../src/methods/deepcluster.js';
import type { MethodContext } from '../src/methods/method.js';
import { createMethod, methodNames, methodSpec, resolveMethodOptions } from '../src/methods/registry.js';
import { buildBackbone } from '../src/nn/backbone.js';
import { OptimizerConfig } from '../src/train/config.js';
import { trainStep } from '../src/train/loop.js';
import { worldCommunicator } from '../src/dist/communicator.js';
import { createOptimizer, namedParameters } from '../src/train/optimizers.js';
import { PytorchServer, pytorchUnavailable } from './pytorch_server.js';
import { forwardedArgs, median, repoRoot } from './rows.js';
import { profileStep, profileTable, type StepProfile } from './profile.js';

/** The flags of bench/engines.ts this mode reads. */
export interface MethodStepFlags {
  methods?: boolean;
  /** Comma-separated methods; default every registered one. */
  rows?: string;
  /** Timed interleaved rounds per method. */
  rounds: number;
  warmup: number;
  /** Overrides the batch of 256 (quick checks). */
  batch?: number;
  /** Seconds of timed rounds per method before it stops early (at least one round is kept). */
  budget: number;
  pytorch: boolean;
  loader: boolean;
  /** Comma-separated methods whose step is profiled per kernel and shape after the timings. */
  profileMethods?: string;
  json?: boolean;
}

/** The methods-benchmark setting (bench/methods.ts's defaults). */
export const SETTING = { width: 16, batch: 256, size: 32, channels: 1, numClasses: 10, datasetSize: 20000, seed: 0, epochs: 5, workers: 1 };
/** Steps run as at epoch 1 of a 5-epoch run of 20,000 images at batch 256. */
const STEPS_PER_EPOCH = Math.floor(SETTING.datasetSize / SETTING.batch);
const PYTORCH_THREADS = [1, 2];
/** Set in a child process: where it writes its one row. */
const CHILD_OUT = 'SELFSUP_METHOD_STEPS_OUT';

const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);
const fmt = (x: number, digits = 1) => x.toFixed(digits);

export interface MethodStepSetting {
  width?: number;
  batch?: number;
  datasetSize?: number;
  seed?: number;
  /** Method options other than the defaults (ablations). */
  options?: Record<string, unknown>;
}

/** What PyTorch is told to build: the resolved options and the exact input shapes (NCHW) and labels of our batch. */
export interface PytorchMethodSpec {
  method: string;
  options: Record<string, unknown>;
  width: number;
  channels: number;
  numClasses: number;
  datasetSize: number;
  batch: number;
  /** Pipeline output -> [N, C, H, W]. */
  inputs: Record<string, [number, number, number, number]>;
  /** Aux label arrays the loss reads -> their length and class count. */
  labels: Record<string, { size: number; classes: number }>;
  /** The step the timed steps start from (epoch 1's first). */
  firstStep: number;
  epoch: number;
  totalSteps: number;
  lr: number;
  momentum: number;
  weightDecay: number;
}

/** One method's step on the active backend, built as the trainer builds it, on a fixed random batch of its pipeline's shapes. */
export interface MethodStep {
  name: string;
  parameters: number;
  pipeline: PipelineSpec;
  pytorchSpec: PytorchMethodSpec;
  /** Runs one step; its loss. */
  step(): number;
  dispose(): void;
}

/** Classes of each aux label array a pipeline output carries. */
function labelClasses(spec: PipelineSpec): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of spec.outputs) {
    if (o.kind === 'jigsaw' && o.jigsaw.permutations) out[`${o.name}.label`] = o.jigsaw.permutations.length;
    if (o.kind === 'rotation') out[`${o.name}.label`] = 4;
    if (o.kind === 'relative-location') out[`${o.name}.label`] = 8;
  }
  return out;
}

/** A batch of `spec`'s shapes: N(0, 1) pixels, valid aux labels and permutations, distinct dataset indices. */
function randomBatch(spec: PipelineSpec, n: number, channels: number, datasetSize: number, seed: number): Batch {
  const batch = allocateBatch(spec, n, channels, 1, 0);
  const rng = new Mulberry32(seed);
  for (const t of Object.values(batch.tensors)) for (let i = 0; i < t.data.length; i++) t.data[i] = rng.normal();
  const classes = labelClasses(spec);
  for (const [name, a] of Object.entries(batch.aux)) {
    if (name in classes) for (let i = 0; i < a.length; i++) a[i] = i % classes[name]!;
    else if (name.endsWith('.perm')) for (let i = 0; i < a.length; i++) a[i] = i % 9;
    else if (name.endsWith('.box')) for (let i = 0; i < a.length; i++) a[i] = i % 4 < 2 ? 0 : 1;
  }
  const order = Int32Array.from({ length: datasetSize }, (_, i) => i);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rng.uniform() * (datasetSize - i));
    [order[i], order[j]] = [order[j]!, order[i]!];
    batch.indices[i] = order[i]!;
    batch.labels[i] = i % SETTING.numClasses;
  }
  return batch;
}

/** Method `name` with its default options, its optimizer and a fixed batch, on the active backend. */
export function buildMethodStep(name: string, setting: MethodStepSetting = {}): MethodStep {
  const width = setting.width ?? SETTING.width;
  const n = setting.batch ?? SETTING.batch;
  const datasetSize = setting.datasetSize ?? SETTING.datasetSize;
  const seed = setting.seed ?? SETTING.seed;
  const model = { arch: 'resnet18' as const, width, stem: 'cifar' as const };
  const ctx: MethodContext = {
    backbone: () => buildBackbone(model, SETTING.channels, seed),
    channels: SETTING.channels,
    numClasses: SETTING.numClasses,
    datasetSize,
    recipe: recipeOptions(SETTING.size, SETTING.channels),
    seed,
  };
  const options = resolveMethodOptions(name, setting.options ?? {}, ctx);
  const method = createMethod(name, options, ctx);
  try {
    method.train();
    const pipeline = method.pipeline();
    const batch = randomBatch(pipeline, n, SETTING.channels, datasetSize, seed + 1);
    if (name === 'deepcluster') {
      // The pseudo-labels an epoch-start clustering would leave (the clustering itself is per epoch, not per step).
      const dc = method as DeepCluster;
      const rng = new Mulberry32(seed + 2);
      const k = options.clusters as number;
      tf.tidy(() => dc.pseudoLabels.assign(tf.tensor1d(Int32Array.from({ length: datasetSize }, () => Math.floor(rng.uniform() * k)), 'int32')));
    }
    const optimizerConfig = OptimizerConfig.parse({});
    const lr = methodSpec(name).recipe?.lr ?? optimizerConfig.lr;
    const named = namedParameters(method);
    const optimizer = createOptimizer(optimizerConfig, named);
    const trainable = named.map((p) => p.variable);
    const paramName = new Map(named.map((p) => [p.variable.name, p.name]));
    const single = worldCommunicator();
    let step = STEPS_PER_EPOCH;
    const totalSteps = STEPS_PER_EPOCH * SETTING.epochs;
    const classes = labelClasses(pipeline);
    const labelsRead: PytorchMethodSpec['labels'] = {};
    for (const [auxName, k] of Object.entries(classes)) labelsRead[auxName] = { size: batch.aux[auxName]!.length, classes: k };
    return {
      name,
      parameters: named.reduce((s, p) => s + p.variable.size, 0),
      pipeline,
      pytorchSpec: {
        method: name,
        options,
        width,
        channels: SETTING.channels,
        numClasses: SETTING.numClasses,
        datasetSize,
        batch: n,
        inputs: Object.fromEntries(Object.entries(batch.tensors).map(([k, t]) => [k, [t.shape[0], t.shape[3], t.shape[1], t.shape[2]]])),
        labels: labelsRead,
        firstStep: STEPS_PER_EPOCH,
        epoch: 1,
        totalSteps,
        lr,
        momentum: optimizerConfig.momentum,
        weightDecay: optimizerConfig.weightDecay,
      },
      step: () => {
        const s = step++;
        const { loss, badGradient } = trainStep(method, trainable, optimizer, batch, { step: s, epoch: Math.floor(s / STEPS_PER_EPOCH), totalSteps }, lr, undefined, paramName, single);
        if (!Number.isFinite(loss) || badGradient) throw new Error(`${method.name}: ${badGradient ?? `the loss is ${loss}`}`);
        return loss;
      },
      dispose() {
        optimizer.dispose();
        method.dispose();
      },
    };
  } catch (err) {
    method.dispose();
    throw err;
  }
}

type Timing = { msPerStep: number; stepsMs: number[]; threads?: number; parameters?: number } | { skipped: string };
const isTimed = (t: Timing | undefined): t is Extract<Timing, { msPerStep: number }> => t !== undefined && 'msPerStep' in t;

/** One method's result. */
export interface MethodRow {
  method: string;
  batch: number;
  width: number;
  /** Images (views, patches) per sample the step takes. */
  viewsPerSample: number;
  selfsup: Timing;
  pytorch: Timing;
  /** Every thread count's PyTorch steps, round by round. */
  pytorchByThreads?: Record<string, number[]>;
  /** PyTorch ms / selfsup ms, of the medians (>1: selfsup is faster). */
  ratio?: number;
  /** The median over rounds of each round's PyTorch ms / selfsup ms (PyTorch at its better thread count). */
  roundRatio?: number;
  /** Peak RSS of the selfsup process, MiB (its own child process when several methods ran). */
  peakRssMiB: number;
  tensorLeakPerStep?: number;
  pytorchParameters?: number;
  note?: string;
}

/** `method/pytorch <method>: <r>x`, or n/a when either side is missing. */
export function ratioLine(method: string, ratio: number | undefined): string {
  return `method/pytorch ${method}: ${ratio === undefined ? 'n/a' : `${fmt(ratio, 2)}x`}`;
}

/** `detco/mocov2 step: <r>x`: our DetCo step time over our MoCo v2 step time. */
export function detcoLine(rows: MethodRow[]): string {
  const ms = (m: string) => {
    const t = rows.find((r) => r.method === m)?.selfsup;
    return isTimed(t) ? t.msPerStep : undefined;
  };
  const d = ms('detco');
  const m = ms('mocov2');
  return `detco/mocov2 step: ${d === undefined || m === undefined ? 'n/a' : `${fmt(d / m, 2)}x`}`;
}

/** Times method `name`: interleaved with PyTorch when it is here (see the header). */
async function timeMethod(name: string, flags: MethodStepFlags, noPytorch: string | undefined): Promise<MethodRow> {
  const run = buildMethodStep(name, { batch: flags.batch });
  const row: MethodRow = {
    method: name,
    batch: run.pytorchSpec.batch,
    width: run.pytorchSpec.width,
    viewsPerSample: viewsPerSample(run.pipeline),
    selfsup: { skipped: 'not timed' },
    pytorch: { skipped: noPytorch ?? 'not timed' },
    peakRssMiB: 0,
  };
  let server: PytorchServer | undefined;
  try {
    if (!noPytorch) {
      server = new PytorchServer(path.join(repoRoot(), 'bench', 'pytorch_methods.py'), run.pytorchSpec, run.pytorchSpec.batch);
      row.pytorchParameters = await server.ready();
    }
    const ours = () => {
      const t0 = performance.now();
      run.step();
      return performance.now() - t0;
    };
    for (let i = 0; i < flags.warmup; i++) log(`${name}: warm-up ${i + 1}/${flags.warmup} selfsup ${fmt(ours())} ms`);
    if (server) for (const t of PYTORCH_THREADS) log(`${name}: warm-up pytorch (${t} thr) ${(await server.steps(t, flags.warmup)).map((ms) => fmt(ms)).join(', ')} ms`);
    const oursMs: number[] = [];
    const torchMs = new Map(PYTORCH_THREADS.map((t) => [t, [] as number[]]));
    const tensorsBefore = tf.memory().numTensors;
    const started = performance.now();
    for (let round = 0; round < flags.rounds; round++) {
      oursMs.push(ours());
      const torch: string[] = [];
      if (server) {
        for (const t of PYTORCH_THREADS) {
          const [ms] = await server.steps(t, 1);
          torchMs.get(t)!.push(ms!);
          torch.push(`${fmt(ms!)} ms at ${t} thr`);
        }
      }
      log(`${name} round ${round + 1}/${flags.rounds}: selfsup ${fmt(oursMs.at(-1)!)} ms${torch.length ? `, pytorch ${torch.join(', ')}` : ''}`);
      if ((performance.now() - started) / 1000 > flags.budget && round + 1 < flags.rounds) {
        row.note = `only ${round + 1} rounds (budget ${flags.budget} s)`;
        log(`${name}: over the ${flags.budget} s budget, stopping at ${round + 1} rounds`);
        break;
      }
    }
    row.tensorLeakPerStep = (tf.memory().numTensors - tensorsBefore) / oursMs.length;
    row.selfsup = { msPerStep: median(oursMs), stepsMs: oursMs, parameters: run.parameters };
    if (server) {
      const [threads, stepsMs] = [...torchMs].reduce((a, b) => (median(b[1]) < median(a[1]) ? b : a));
      row.pytorch = { msPerStep: median(stepsMs), stepsMs, threads, parameters: row.pytorchParameters };
      row.pytorchByThreads = Object.fromEntries([...torchMs].map(([t, ms]) => [String(t), ms]));
      row.ratio = median(stepsMs) / median(oursMs);
      row.roundRatio = median(stepsMs.map((ms, i) => ms / oursMs[i]!));
    }
  } catch (err) {
    const why = `failed: ${err instanceof Error ? err.message : String(err)}`;
    log(`${name}: ${why}`);
    if (!isTimed(row.selfsup)) row.selfsup = { skipped: why };
    if (!isTimed(row.pytorch)) row.pytorch = { skipped: why };
  } finally {
    server?.close();
    run.dispose();
  }
  row.peakRssMiB = process.resourceUsage().maxRSS / 1024;
  return row;
}

/** This script again for the one method, with the same flags; its row comes back through a file. */
function timeInChild(name: string): MethodRow {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'selfsup-method-steps-'));
  const out = path.join(dir, 'row.json');
  try {
    const args = forwardedArgs(process.argv.slice(2), ['--rows']);
    const child = spawnSync(process.execPath, [...process.execArgv, process.argv[1]!, ...args, '--rows', name], {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: { ...process.env, [CHILD_OUT]: out },
    });
    if (child.error) throw child.error;
    if (child.status !== 0 || !existsSync(out)) throw new Error(`the child process for ${name} failed (exit ${child.status ?? child.signal}); its log is above`);
    return JSON.parse(readFileSync(out, 'utf8')) as MethodRow;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface LoaderRow extends ThroughputResult {
  method: string;
  /** Loader views/s over the views/s the selfsup step consumes. */
  overStep?: number;
}

/** Views/s of each method's pipeline on Fashion-MNIST at batch 256 with the trainer's default workers. */
export async function loaderThroughput(names: string[], rows: MethodRow[]): Promise<LoaderRow[] | { skipped: string }> {
  let dataset;
  try {
    dataset = await loadFashionMnist({ split: 'train', limit: SETTING.datasetSize });
  } catch (err) {
    return { skipped: err instanceof Error ? err.message : String(err) };
  }
  const out: LoaderRow[] = [];
  for (const name of names) {
    const ctx: MethodContext = {
      backbone: () => buildBackbone({ arch: 'resnet18', width: 4, stem: 'cifar' }, SETTING.channels, 0),
      channels: SETTING.channels,
      numClasses: SETTING.numClasses,
      datasetSize: SETTING.datasetSize,
      recipe: recipeOptions(SETTING.size, SETTING.channels),
      seed: 0,
    };
    const method = createMethod(name, {}, ctx);
    const pipeline = method.pipeline();
    method.dispose();
    log(`loader: ${name}, ${SETTING.workers} worker(s)`);
    const r = await measureLoaderThroughput({ dataset, pipeline, batchSize: SETTING.batch, workers: SETTING.workers, batches: 10 });
    const timed = rows.find((row) => row.method === name);
    const step = timed && isTimed(timed.selfsup) && timed.batch === SETTING.batch ? timed.selfsup.msPerStep : undefined;
    out.push({ method: name, ...r, overStep: step ? r.viewsPerSecond / ((SETTING.batch * r.viewsPerSample * 1000) / step) : undefined });
  }
  return out;
}

export function table(rows: MethodRow[]): string {
  const ms = (t: Timing) => (isTimed(t) ? fmt(t.msPerStep) : '-');
  const lines = [
    `\nmethod steps: ResNet-18 CIFAR stem width ${rows[0]?.width ?? SETTING.width}, ${SETTING.size}x${SETTING.size}x${SETTING.channels} views, batch ${rows[0]?.batch ?? SETTING.batch}; median ms per step over interleaved rounds`,
    `  ${'method'.padEnd(12)}${'views/smp'.padStart(10)}${'selfsup ms'.padStart(12)}${'pytorch ms'.padStart(12)}${'thr'.padStart(5)}${'ratio'.padStart(8)}${'rounds r'.padStart(10)}${'rounds'.padStart(8)}${'RSS MiB'.padStart(9)}${'params'.padStart(10)}`,
  ];
  for (const r of rows) {
    const threads = isTimed(r.pytorch) ? String(r.pytorch.threads) : '-';
    const n = isTimed(r.selfsup) ? r.selfsup.stepsMs.length : 0;
    const params = isTimed(r.selfsup) ? String(r.selfsup.parameters) : '-';
    const notes = [
      !isTimed(r.selfsup) ? `selfsup ${r.selfsup.skipped}` : '',
      !isTimed(r.pytorch) && isTimed(r.selfsup) ? `pytorch ${r.pytorch.skipped}` : '',
      r.pytorchParameters !== undefined && isTimed(r.selfsup) && r.pytorchParameters !== r.selfsup.parameters ? `WARNING: pytorch has ${r.pytorchParameters} parameters` : '',
      r.tensorLeakPerStep ? `leaks ${fmt(r.tensorLeakPerStep)} tensors/step` : '',
      r.note ?? '',
    ].filter(Boolean);
    lines.push(
      `  ${r.method.padEnd(12)}${String(r.viewsPerSample).padStart(10)}${ms(r.selfsup).padStart(12)}${ms(r.pytorch).padStart(12)}${threads.padStart(5)}` +
        `${(r.ratio === undefined ? '-' : `${fmt(r.ratio, 2)}x`).padStart(8)}${(r.roundRatio === undefined ? '-' : `${fmt(r.roundRatio, 2)}x`).padStart(10)}` +
        `${String(n).padStart(8)}${fmt(r.peakRssMiB, 0).padStart(9)}${params.padStart(10)}${notes.length ? `   ${notes.join('; ')}` : ''}`,
    );
  }
  lines.push('  ratio: PyTorch ms / selfsup ms of the medians (>1: selfsup is faster); rounds r: the median of the rounds\' own ratios');
  return lines.join('\n');
}

export function loaderTable(rows: LoaderRow[]): string {
  const lines = [
    `\nloader throughput: each method's pipeline on Fashion-MNIST, batch ${SETTING.batch}, ${SETTING.workers} worker(s) (the trainer's default); over step = loader views/s over the views/s the selfsup step takes`,
    `  ${'method'.padEnd(12)}${'views/smp'.padStart(10)}${'views/s'.padStart(10)}${'samples/s'.padStart(11)}${'over step'.padStart(11)}`,
  ];
  for (const r of rows) {
    lines.push(
      `  ${r.method.padEnd(12)}${String(r.viewsPerSample).padStart(10)}${fmt(r.viewsPerSecond, 0).padStart(10)}${fmt(r.samplesPerSecond, 0).padStart(11)}` +
        `${(r.overStep === undefined ? '-' : `${fmt(r.overStep, 1)}x`).padStart(11)}`,
    );
  }
  return lines.join('\n');
}

/** The methods to time: `--rows`, or every registered method. */
export function pickMethods(rows: string | undefined): string[] {
  const known = methodNames();
  if (!rows) return known;
  const wanted = rows.split(',').map((s) => s.trim()).filter(Boolean);
  for (const w of wanted) if (!known.includes(w)) throw new Error(`--rows: unknown method '${w}'; choose from ${known.join(', ')}`);
  return wanted;
}

/** One step of `name` at `batch` (default the setting's) profiled per kernel, after two warm-up steps. */
async function profileMethodStep(name: string, batch: number | undefined): Promise<StepProfile> {
  const run = buildMethodStep(name, { batch });
  try {
    run.step();
    run.step();
    return await profileStep(() => void run.step());
  } finally {
    run.dispose();
  }
}

/** `npm run bench -- --methods`: see the header. */
export async function runMethodSteps(flags: MethodStepFlags): Promise<void> {
  const names = pickMethods(flags.rows);
  const childOut = process.env[CHILD_OUT];
  const say = (text: string) => (flags.json ? process.stderr : process.stdout).write(`${text}\n`);
  const backend = await useBackend('native');
  const noPytorch = flags.pytorch ? pytorchUnavailable() : '--no-pytorch';
  if (childOut) {
    if (names.length !== 1) throw new Error(`${CHILD_OUT} is for one method, got ${names.length}`);
    writeFileAtomic(childOut, `${JSON.stringify(await timeMethod(names[0]!, flags, noPytorch))}\n`);
    return;
  }
  const info = nativeAddon().info();
  say(`method steps on ${backend} (oneDNN ${info.onednn}, ${info.threads} threads), ${flags.rounds} rounds after ${flags.warmup} warm-up steps: ${names.join(', ')}`);
  if (noPytorch && flags.pytorch) say(`note: PyTorch skipped: ${noPytorch}`);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = path.join(repoRoot(), 'bench', 'results', `methods-${stamp}.json`);
  const rows: MethodRow[] = [];
  let loader: LoaderRow[] | { skipped: string } | undefined;
  const profiles: Record<string, StepProfile> = {};
  const results = () => ({
    timestamp: new Date().toISOString(),
    kind: 'method-steps',
    host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version, platform: `${os.platform()} ${os.arch()}` },
    setting: { ...SETTING, batch: flags.batch ?? SETTING.batch },
    options: { rows: names, rounds: flags.rounds, warmup: flags.warmup, budget: flags.budget, pytorch: flags.pytorch, pytorchThreads: PYTORCH_THREADS },
    rows,
    detcoOverMocov2: (() => {
      const d = rows.find((r) => r.method === 'detco')?.selfsup;
      const m = rows.find((r) => r.method === 'mocov2')?.selfsup;
      return isTimed(d) && isTimed(m) ? d.msPerStep / m.msPerStep : null;
    })(),
    loader,
    profiles,
  });
  for (const name of names) {
    try {
      rows.push(names.length > 1 ? timeInChild(name) : await timeMethod(name, flags, noPytorch));
    } catch (err) {
      const skipped = { skipped: `failed: ${err instanceof Error ? err.message : String(err)}` };
      rows.push({ method: name, batch: flags.batch ?? SETTING.batch, width: SETTING.width, viewsPerSample: 0, selfsup: skipped, pytorch: skipped, peakRssMiB: 0 });
    }
    // Rewritten after every method, so an interrupted run keeps what it measured.
    writeFileAtomic(file, `${JSON.stringify(results(), null, 2)}\n`);
  }
  loader = flags.loader ? await loaderThroughput(names, rows) : undefined;
  for (const name of flags.profileMethods ? pickMethods(flags.profileMethods) : []) profiles[name] = await profileMethodStep(name, flags.batch);

  say(table(rows));
  if (loader && 'skipped' in loader) say(`\nloader throughput skipped: ${loader.skipped}`);
  else if (loader) say(loaderTable(loader));
  const text = `${JSON.stringify(results(), null, 2)}\n`;
  writeFileAtomic(file, text);
  for (const [name, profile] of Object.entries(profiles)) say(profileTable(`one ${name} step, batch ${flags.batch ?? SETTING.batch}, on ${backend}`, profile));
  say(`\nresults written to ${path.relative(process.cwd(), file)}\n`);
  for (const r of rows) say(ratioLine(r.method, r.ratio));
  say(detcoLine(rows));
  if (flags.json) process.stdout.write(text);
}
