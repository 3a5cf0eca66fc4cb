// The transfer benchmark (the seed's Tables 3 and 10-12 analog): every row
// pretrains ResNet-18 (ImageNet stem) on the objects set (the ImageNet
// analog) with one budget (same epochs and batch; each method's own recipe
// otherwise, as bench/methods.ts), then its backbone is fine-tuned on the
// scenes by the `detect` protocol (Mask R-CNN FPN: AP^bb, AP50, AP75, AP^mk)
// and the `segment` protocol (semantic FPN: mIoU), in two settings: a short
// schedule on every training scene ("full") and a low-data one ("low": the
// first N training scenes). Each number is a mean ± std over seeds.
//
//   npm run bench:transfer                            everything: 5 pretraining runs x 3 seeds
//                                                     and 72 fine-tunes (roughly half a day on 2 cores)
//   npm run bench:transfer -- --quick                 a smoke test of every row (about 10 minutes)
//   npm run bench:transfer -- --rows supervised,random-init --readme
//   npm run bench:transfer -- --table-only --readme      the tables from the results present (with the budget flags they were made with)
//   npm run bench:transfer -- --speed                 detector training img/s against torchvision
//
// The gate rows (supervised, random init) run first: their spread over seeds
// is the first noise floor, and supervised must clear random init before the
// methods are compared (else the run stops; --ignore-gates goes on). The gates
// are checked again over every row at the end and printed as PASS/FAIL lines.
//
// Every job (the data, one pretraining run, one fine-tune) runs in a child
// process of its own and leaves a result file under --out that records its
// settings; a job whose result holds the same settings is not run again, an
// interrupted pretraining run resumes from its last checkpoint and an
// interrupted fine-tune from the protocol's own state file. --force discards
// the chosen rows' runs and results. --readme rewrites the bench-transfer
// blocks from every result present: a summary in README.md, the full tables in
// docs/benchmarks.md.
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Command, Option } from 'commander';
import * as tf from '../src/core/tf.js';
import type { Scalar, Tensor4D } from '@tensorflow/tfjs-core';
import { nativeAddon } from '../src/backend/native_addon.js';
import { useBackend, type BackendChoice } from '../src/backend/select.js';
import { evaluate, parseRunConfig, reportPath, train } from '../src/app/index.js';
import { getProtocol } from '../src/app/protocols.js';
import { nonNegativeInt, nonNegativeNumber, positiveInt } from '../src/app/flags.js';
import { writeFileAtomic } from '../src/core/files.js';
import { Rng } from '../src/core/random.js';
import { SCENE_CLASSES, writeObjectImages, writeScenes } from '../src/data/index.js';
import { defaultMaskRcnnSettings, MaskRCNN, ROI_BATCH_PER_IMAGE } from '../src/detect/mask_rcnn.js';
import type { GroundTruth } from '../src/detect/roi_heads.js';
import { LAST_CHECKPOINT } from '../src/io/checkpoint.js';
import { buildBackbone } from '../src/nn/backbone.js';
import { namedParameters, SGD } from '../src/train/optimizers.js';
import { PYTHON, PytorchServer, pytorchUnavailable } from './pytorch_server.js';
import { median, repoRoot, runSelfInChild, updateSummaryAndFull } from './rows.js';
import {
  canonicalJson,
  checkGates,
  DEFAULT_GATES,
  formatGates,
  GATE_ROWS,
  jobId,
  jobState,
  metricsTable,
  noiseFloor,
  noiseLine,
  parseJobId,
  planJobs,
  PROTOCOLS,
  pretrainRowOf,
  pretrainRunDir,
  pretrainSeedFor,
  RANDOM_INIT,
  ranking,
  readJobResult,
  resultFile,
  rowStats,
  SETTINGS,
  settingsChanges,
  summaryText,
  TRANSFER_ROWS,
  type Job,
  type JobResult,
  type ProtocolName,
  type RowStats,
  type SettingName,
  type SettingSummary,
} from './transfer_report.js';

interface Flags {
  rows: string;
  seeds: string;
  pretrainSeeds?: string;
  settings: string;
  protocols: string;
  out: string;
  cache: string;
  objects: number;
  objectSize: number;
  scenes: number;
  sceneValFraction: number;
  dataSeed: number;
  width: number;
  epochs: number;
  batchSize: number;
  workers: number;
  fullIters: number;
  lowIters: number;
  lowTrainLimit: number;
  ftBatchSize: number;
  roiBatchPerImage: number;
  warmupIters: number;
  preciseBnBatches: number;
  valLimit?: number;
  gateFar: number;
  gateClear: number;
  gateMinGap: number;
  ignoreGates: boolean;
  quick: boolean;
  force: boolean;
  readme: boolean | string;
  tableOnly: boolean;
  speed: boolean;
  speedSteps: number;
  speedWarmup: number;
  threads?: number;
  pytorch: boolean;
  job?: string;
}

/** What --quick changes (flags given on the command line still win): every row and both settings in minutes. */
const QUICK: Partial<Flags> = {
  out: 'runs/bench-transfer-quick',
  seeds: '0,1',
  objects: 600,
  scenes: 120,
  epochs: 1,
  batchSize: 64,
  width: 8,
  fullIters: 6,
  lowIters: 3,
  lowTrainLimit: 16,
  ftBatchSize: 4,
  warmupIters: 2,
  preciseBnBatches: 1,
  valLimit: 16,
  speedSteps: 2,
  speedWarmup: 1,
};

const say = (line: string) => void process.stderr.write(`${line}\n`);
const list = (s: string) => s.split(',').map((x) => x.trim()).filter(Boolean);
const seedList = (s: string) =>
  list(s).map((x) => {
    const n = Number(x);
    if (!Number.isInteger(n) || n < 0) throw new Error(`seed lists take whole numbers >= 0, got '${x}'`);
    return n;
  });

// ---------------------------------------------------------------- settings of each job

interface DataSettings {
  objects: { count: number; size: number; seed: number };
  scenes: { count: number; valFraction: number; seed: number };
}

function dataSettings(f: Flags): DataSettings {
  return { objects: { count: f.objects, size: f.objectSize, seed: f.dataSeed }, scenes: { count: f.scenes, valFraction: f.sceneValFraction, seed: f.dataSeed } };
}

function dataDirs(f: Flags): { objects: string; scenes: string } {
  const d = dataSettings(f);
  return {
    objects: resolve(f.cache, `objects-${d.objects.count}x${d.objects.size}-seed${d.objects.seed}`),
    scenes: resolve(f.cache, `scenes-${d.scenes.count}-val${d.scenes.valFraction}-seed${d.scenes.seed}`),
  };
}

interface PretrainSettings {
  method: string;
  methodOptions: Record<string, unknown>;
  data: DataSettings['objects'];
  width: number;
  epochs: number;
  batchSize: number;
  seed: number;
}

function pretrainSettings(f: Flags, row: string, seed: number): PretrainSettings {
  const spec = TRANSFER_ROWS.find((r) => r.name === row);
  if (!spec?.method) throw new Error(`row ${row} has no pretraining`);
  return { method: spec.method, methodOptions: spec.methodOptions ?? {}, data: dataSettings(f).objects, width: f.width, epochs: f.epochs, batchSize: f.batchSize, seed };
}

/** The options the protocol gets (its schema's defaults fill the rest). */
function protocolOptions(f: Flags, protocol: ProtocolName, setting: SettingName, seed: number): Record<string, unknown> {
  return {
    ...(protocol === 'detect' ? { roiBatchPerImage: f.roiBatchPerImage } : {}),
    scenes: dataDirs(f).scenes,
    iters: setting === 'full' ? f.fullIters : f.lowIters,
    ...(setting === 'low' ? { trainLimit: f.lowTrainLimit } : {}),
    batchSize: f.ftBatchSize,
    warmupIters: f.warmupIters,
    preciseBnBatches: f.preciseBnBatches,
    ...(f.valLimit ? { valLimit: f.valLimit } : {}),
    seed,
  };
}

function jobSettings(f: Flags, job: Job): unknown {
  if (job.kind === 'data') return dataSettings(f);
  if (job.kind === 'pretrain') return pretrainSettings(f, job.row, job.seed);
  const randomInit = job.row === RANDOM_INIT;
  return {
    // Random init borrows only the supervised run's architecture, so its results stay valid whatever the pretraining budget.
    pretrain: randomInit ? { width: f.width, seed: job.pretrainSeed } : pretrainSettings(f, pretrainRowOf(job.row), job.pretrainSeed),
    randomInit,
    protocol: job.protocol,
    options: protocolOptions(f, job.protocol, job.setting, job.seed),
    scenes: dataSettings(f).scenes,
  };
}

interface PretrainResult extends JobResult<PretrainSettings> {
  checkpoint: string;
  lr: number;
  minutesPerEpoch: number | null;
  finalLoss: number | null;
}

interface EvalResult extends JobResult {
  reportPath: string | null;
  metrics: Record<string, number>;
  options: Record<string, unknown>;
  data: { trainImages: number; testImages: number };
  seconds: number;
}

// ---------------------------------------------------------------- jobs (each in a child process)

async function runJob(f: Flags, job: Job, backend: string): Promise<void> {
  const settings = jobSettings(f, job);
  const base = { job: jobId(job), settings, finished: '' };
  let result: JobResult;
  if (job.kind === 'data') {
    const dirs = dataDirs(f);
    const d = dataSettings(f);
    say(`== data: ${d.objects.count} object images at ${d.objects.size} px -> ${dirs.objects}`);
    const objects = await writeObjectImages(dirs.objects, { count: d.objects.count, size: d.objects.size, seed: d.objects.seed });
    say(`   ${objects.train} train + ${objects.val} val${objects.reused ? ' (already there)' : ''}`);
    const stamp = join(dirs.scenes, 'bench-transfer.json');
    const stamped = existsSync(stamp) && canonicalJson(JSON.parse(readFileSync(stamp, 'utf8'))) === canonicalJson(d.scenes);
    say(`== data: ${d.scenes.count} scenes (val fraction ${d.scenes.valFraction}) -> ${dirs.scenes}`);
    if (!stamped) {
      const scenes = await writeScenes(dirs.scenes, { count: d.scenes.count, seed: d.scenes.seed, valFraction: d.scenes.valFraction });
      writeFileAtomic(stamp, `${JSON.stringify(d.scenes)}\n`);
      say(`   ${scenes.train} train + ${scenes.val} val scenes, ${scenes.objects} objects`);
    } else say('   already there');
    result = { ...base, dirs } as JobResult;
  } else if (job.kind === 'pretrain') {
    const s = settings as PretrainSettings;
    const out = pretrainRunDir(f.out, job.row, job.seed);
    const config = parseRunConfig(
      {
        method: s.method,
        methodOptions: s.methodOptions,
        out,
        epochs: s.epochs,
        batchSize: s.batchSize,
        seed: s.seed,
        workers: f.workers,
        dataset: { name: `objects:${dataDirs(f).objects}`, size: s.data.size },
        model: { arch: 'resnet18', width: s.width, stem: 'imagenet' },
        backend,
      },
      `bench:transfer ${jobId(job)}`,
    );
    say(`\n== pretrain ${job.row} seed ${job.seed}: ${s.method} ${JSON.stringify(s.methodOptions)}, lr ${config.optimizer.lr} -> ${out}`);
    const trained = await train(config, { resume: existsSync(join(out, LAST_CHECKPOINT)), log: say });
    if (trained.stoppedEarly) throw new Error(`${jobId(job)}: training was interrupted; run the benchmark again to resume it`);
    const seconds = trained.metrics.map((m) => m.seconds);
    const pretrain: PretrainResult = {
      ...base,
      settings: s,
      checkpoint: trained.checkpoint,
      lr: config.optimizer.lr,
      minutesPerEpoch: seconds.length ? seconds.reduce((a, b) => a + b, 0) / seconds.length / 60 : null,
      finalLoss: trained.metrics.at(-1)?.loss ?? null,
    };
    result = pretrain;
  } else {
    const checkpoint = join(pretrainRunDir(f.out, pretrainRowOf(job.row), job.pretrainSeed), LAST_CHECKPOINT);
    if (!existsSync(checkpoint)) throw new Error(`${jobId(job)}: no pretraining checkpoint ${checkpoint}`);
    const randomInit = job.row === RANDOM_INIT;
    say(`\n== ${job.protocol} (${job.setting}) ${job.row} seed ${job.seed}${randomInit ? ` (architecture of ${checkpoint}, untrained)` : ''}`);
    const { report, path } = await evaluate({
      checkpoint,
      protocol: job.protocol,
      options: protocolOptions(f, job.protocol, job.setting, job.seed),
      randomInit,
      backend: backend as BackendChoice,
      log: say,
    });
    say(getProtocol(job.protocol).format(report).trimEnd());
    const evalResult: EvalResult = {
      ...base,
      reportPath: path,
      metrics: report.metrics,
      options: report.options,
      data: { trainImages: report.data.trainImages, testImages: report.data.testImages },
      seconds: report.seconds,
    };
    result = evalResult;
  }
  result.finished = new Date().toISOString();
  const file = resultFile(f.out, job);
  mkdirSync(resolve(file, '..'), { recursive: true });
  writeFileAtomic(file, `${JSON.stringify(result, null, 2)}\n`);
}

/** --force: the chosen rows' pretraining runs (random init: its own reports only), fine-tune states and results. */
function discardRows(f: Flags, rows: string[], pretrainSeeds: number[], seeds: number[]): void {
  for (const row of rows) {
    if (row !== RANDOM_INIT) {
      for (const seed of pretrainSeeds) {
        rmSync(pretrainRunDir(f.out, row, seed), { recursive: true, force: true });
        rmSync(resultFile(f.out, { kind: 'pretrain', row, seed }), { force: true });
      }
    } else {
      // Random init's reports and fine-tune states live in the supervised runs' eval/ folders.
      for (const seed of seeds) {
        const pretrainSeed = pretrainSeedFor(seed, seeds, pretrainSeeds);
        const checkpoint = join(pretrainRunDir(f.out, 'supervised', pretrainSeed), LAST_CHECKPOINT);
        for (const setting of SETTINGS) {
          for (const protocol of PROTOCOLS) {
            const options = getProtocol(protocol).options.parse(protocolOptions(f, protocol, setting, seed)) as Record<string, unknown>;
            const report = reportPath(checkpoint, protocol, { randomInit: true, ...options });
            rmSync(report, { force: true });
            rmSync(report.replace(/\.json$/, ''), { recursive: true, force: true });
          }
        }
      }
    }
    for (const setting of SETTINGS) rmSync(join(f.out, 'results', setting, row), { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- the report

interface Collected {
  setting: SettingName;
  rows: RowStats[];
}

/** Every row's results made with the current settings, per setting. */
function collect(f: Flags, seeds: number[], pretrainSeeds: number[]): Collected[] {
  return SETTINGS.map((setting) => {
    const rows: RowStats[] = [];
    for (const row of TRANSFER_ROWS) {
      const perSeed: Array<Record<string, number>> = [];
      const rates: number[] = [];
      for (const seed of seeds) {
        const pretrainSeed = pretrainSeedFor(seed, seeds, pretrainSeeds);
        const merged: Record<string, number> = {};
        for (const protocol of PROTOCOLS) {
          const job: Job = { kind: 'eval', row: row.name, seed, pretrainSeed, setting, protocol };
          const r = readJobResult<EvalResult>(resultFile(f.out, job));
          if (jobState(r, jobSettings(f, job)) !== 'done') continue;
          Object.assign(merged, r!.metrics);
          if (protocol === 'detect' && r!.metrics.imagesPerSec! > 0) rates.push(r!.metrics.imagesPerSec!);
        }
        if (Object.keys(merged).length) perSeed.push(merged);
      }
      if (perSeed.length === 0) continue;
      const minutes = row.method
        ? [...new Set(seeds.map((s) => pretrainSeedFor(s, seeds, pretrainSeeds)))]
            .map((s) => readJobResult<PretrainResult>(resultFile(f.out, { kind: 'pretrain', row: row.name, seed: s }))?.minutesPerEpoch)
            .filter((m): m is number => typeof m === 'number')
        : [];
      rows.push(
        rowStats(row, perSeed, {
          imagesPerSec: rates.length ? rates.reduce((a, b) => a + b, 0) / rates.length : undefined,
          minutesPerEpoch: minutes.length ? minutes.reduce((a, b) => a + b, 0) / minutes.length : null,
        }),
      );
    }
    return { setting, rows };
  });
}

function gateOptions(f: Flags) {
  return { far: f.gateFar, clear: f.gateClear, minGap: f.gateMinGap };
}

/** A one-line description of the budgets, for the report and the list of settings tried. */
function describe(f: Flags, seeds: number[], pretrainSeeds: number[]): string {
  return (
    `objects ${f.objects} @${f.objectSize}px, scenes ${f.scenes} (val ${f.sceneValFraction}), width ${f.width}, ` +
    `pretrain ${f.epochs} ep x batch ${f.batchSize}, full ${f.fullIters} it, low ${f.lowIters} it on ${f.lowTrainLimit} scenes, ` +
    `fine-tune batch ${f.ftBatchSize}, warm-up ${f.warmupIters}, precise BN ${f.preciseBnBatches}${f.valLimit ? `, val limit ${f.valLimit}` : ''}, ` +
    `seeds ${seeds.join(',')} (pretrain ${pretrainSeeds.join(',')})`
  );
}

/**
 * The tables (docs/benchmarks.md's block), the README's summary of them (the
 * first setting's metrics, every gate, the other settings' rankings) and,
 * apart, the settings tried: history, which goes to the terminal and
 * docs/experiments.md.
 */
function reportText(
  f: Flags,
  collected: Collected[],
  seeds: number[],
  pretrainSeeds: number[],
  tried: string[],
): { text: string; summary: string; history: string; gateLines: string[] } {
  const lrs = TRANSFER_ROWS.filter((r) => r.method)
    .map((r) => {
      const res = readJobResult<PretrainResult>(resultFile(f.out, { kind: 'pretrain', row: r.name, seed: pretrainSeeds[0]! }));
      return res ? `${r.label} ${res.lr}` : null;
    })
    .filter(Boolean);
  const trainScenes = Math.round(f.scenes * (1 - f.sceneValFraction));
  const lines = [
    `ResNet-18 width ${f.width} (ImageNet stem) pretrained on ${f.objects.toLocaleString('en')} object images (${f.objectSize} px; ${Math.round(f.objects * 0.9).toLocaleString('en')} train) ` +
      `for ${f.epochs} epochs at batch ${f.batchSize}, every method with the same budget and its own recipe (SGD, cosine; lr ${lrs.length ? lrs.join(', ') : 'per recipe'}); ` +
      `random init is the supervised run's architecture untrained. Fine-tuned on ${f.scenes.toLocaleString('en')} scenes (128 px, ${trainScenes} train / ` +
      `${Math.round(f.scenes * f.sceneValFraction)} val${f.valLimit ? `, first ${f.valLimit} val tested` : ''}): \`detect\` (Mask R-CNN FPN, COCO AP on val) and \`segment\` (semantic FPN, mIoU), ` +
      `batch ${f.ftBatchSize}, ${f.roiBatchPerImage} RoIs per image, lr 0.01, warm-up ${f.warmupIters}, steps at 75% and 92%. Mean ± std over seeds ${seeds.join(', ')} (pretraining seeds ${pretrainSeeds.join(', ')}); ` +
      'the noise floor is the pooled per-run std over seeds; fine-tune img/s is the detector\'s training rate in `detect`.',
  ];
  const summaryHeader =
    `ResNet-18 width ${f.width} (ImageNet stem) pretrained ${f.epochs} epochs on ${f.objects.toLocaleString('en')} object images (${f.objectSize} px), every row with the same budget; ` +
    `fine-tuned on scenes (128 px): box and mask AP of a Mask R-CNN FPN, mIoU of a semantic FPN; mean ± std over seeds ${seeds.join(', ')}. ` +
    'Noise floors, speeds, every setting in full: [docs/benchmarks.md](docs/benchmarks.md#transfer).';
  const summaries: SettingSummary[] = [];
  const gateLines: string[] = [];
  for (const { setting, rows } of collected) {
    const title =
      setting === 'full'
        ? `Short schedule on all training scenes (Table 3 analog): ${f.fullIters} iterations`
        : `Low data (Tables 10-12 analog): the first ${f.lowTrainLimit} training scenes, ${f.lowIters} iterations`;
    lines.push('', `**${title}**`, '');
    if (rows.length === 0) {
      lines.push('no results yet');
      continue;
    }
    const noise = noiseFloor(rows);
    const gates = formatGates(setting, checkGates(rows, noise.AP, gateOptions(f)));
    const rank = ranking(rows, noise.AP);
    gateLines.push(...gates);
    lines.push(metricsTable(rows), '', noiseLine(noise), '', ...gates.map((g) => `- ${g}`), '', `Ranking by AP^bb: ${rank}`);
    const short =
      setting === 'full' ? `${f.fullIters} iterations on all ${trainScenes} training scenes` : `${f.lowIters} iterations on the first ${f.lowTrainLimit} training scenes`;
    summaries.push({ title: short, rows, gates, ranking: rank });
  }
  const speed = readSpeed(f);
  if (speed) lines.push('', speedLine(speed));
  const history = [`Settings tried in ${f.out} (each for every row; none tuned for one method):`, ...tried.map((t) => `- ${t}`)].join('\n');
  return { text: lines.join('\n'), summary: summaryText(summaryHeader, summaries), history, gateLines };
}

const START = '<!-- bench-transfer -->';
const END = '<!-- /bench-transfer -->';

function triedSettings(f: Flags, current: string | null): string[] {
  const file = join(f.out, 'tried.jsonl');
  const seen = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
  if (current !== null && !seen.includes(current)) {
    mkdirSync(f.out, { recursive: true });
    appendFileSync(file, `${current}\n`);
    seen.push(current);
  }
  return seen;
}

// ---------------------------------------------------------------- speed

interface SpeedTiming {
  imagesPerSec: number;
  msPerStep: number;
  stepsMs: number[];
  parameters: number;
}
interface SpeedResult {
  batch: number;
  size: number;
  width: number;
  threads: number;
  native: SpeedTiming | { skipped: string };
  pytorch: (SpeedTiming & { torch?: string }) | { skipped: string };
  /** Median step speeds' ratio, ours over torchvision. */
  ratio: number | null;
  /** Median of the per-round ratios (each round one step of each engine), less sensitive to the machine's drift. */
  roundRatio: number | null;
  tensorLeakPerStep?: number;
  measured: string;
}

const timingOf = (stepsMs: number[], batch: number, parameters: number): SpeedTiming => ({ imagesPerSec: (batch * 1000) / median(stepsMs), msPerStep: median(stepsMs), stepsMs, parameters });
const isTiming = (t: SpeedResult['native'] | undefined): t is SpeedTiming => t !== undefined && 'imagesPerSec' in t;

/** 1-4 objects per image: ellipses inside boxes of 20-80 px with random classes, as bench/pytorch_detector.py draws them. */
function syntheticTruth(batch: number, size: number, numClasses: number, rng: Rng): GroundTruth[] {
  return Array.from({ length: batch }, () => {
    const n = rng.int(1, 4);
    const boxes = new Float32Array(n * 4);
    const classes = new Int32Array(n);
    const masks: Uint8Array[] = [];
    for (let k = 0; k < n; k++) {
      const w = rng.int(20, 80);
      const h = rng.int(20, 80);
      const x0 = rng.int(0, size - w);
      const y0 = rng.int(0, size - h);
      const mask = new Uint8Array(size * size);
      let [bx0, by0, bx1, by1] = [size, size, 0, 0];
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          if (((x + 0.5 - x0 - w / 2) / (w / 2)) ** 2 + ((y + 0.5 - y0 - h / 2) / (h / 2)) ** 2 <= 1) {
            mask[y * size + x] = 1;
            [bx0, by0, bx1, by1] = [Math.min(bx0, x), Math.min(by0, y), Math.max(bx1, x + 1), Math.max(by1, y + 1)];
          }
        }
      }
      boxes.set([bx0, by0, bx1, by1], k * 4);
      classes[k] = rng.int(0, numClasses - 1);
      masks.push(mask);
    }
    return { boxes, classes, masks };
  });
}

/**
 * The detector's training step (forward with every loss, backward, momentum
 * SGD with weight decay, as the fine-tune) at batch 8 on 128 px images,
 * random-init backbone, interleaved step by step with torchvision's Mask
 * R-CNN of the same shape (bench/pytorch_detector.py) at the same threads.
 */
async function runSpeed(f: Flags): Promise<SpeedResult> {
  const batch = 8;
  const size = 128;
  const numClasses = SCENE_CLASSES.length;
  await useBackend('native');
  const addon = nativeAddon();
  if (f.threads) addon.setThreads(f.threads);
  const threads = addon.info().threads;
  const settings = defaultMaskRcnnSettings(numClasses, f.width, 0);
  const spec = {
    width: f.width,
    stem: 'imagenet',
    size,
    numClasses,
    fpnChannels: settings.fpnChannels,
    anchorSizes: settings.rpn.anchorSizes,
    aspectRatios: settings.rpn.aspectRatios,
    rpnBatchPerImage: settings.rpn.batchPerImage,
    rpnPositiveFraction: settings.rpn.positiveFraction,
    rpnNmsThreshold: settings.rpn.nmsThreshold,
    preNmsTopK: settings.rpn.preNmsTopK,
    postNmsTopK: settings.rpn.postNmsTopK,
    roiBatchPerImage: settings.roi.batchPerImage,
    roiPositiveFraction: settings.roi.positiveFraction,
    canonicalBox: settings.roi.canonicalBox,
    boxPool: settings.roi.boxPool,
    maskPool: settings.roi.maskPool,
    fcDim: settings.roi.fcDim,
    minObjects: 1,
    maxObjects: 4,
  };
  const model = new MaskRCNN(buildBackbone({ arch: 'resnet18', width: f.width, stem: 'imagenet' }, 3, 0), settings);
  model.train();
  const optimizer = new SGD(namedParameters(model), { momentum: 0.9, weightDecay: 1e-4 });
  const rng = Rng.seeded(0);
  const truth = syntheticTruth(batch, size, numClasses, rng.split(1));
  const images = tf.randomNormal([batch, size, size, 3], 0, 1, 'float32', 1) as Tensor4D;
  let iter = 0;
  const nativeStep = () => {
    const t0 = performance.now();
    const stepRng = rng.split(1000 + iter++);
    const { value, grads } = tf.variableGrads(() => tf.addN(Object.values(model.losses(images, truth, stepRng))) as Scalar);
    value.dataSync();
    value.dispose();
    optimizer.step(grads, 0.01);
    tf.dispose(Object.values(grads));
    return performance.now() - t0;
  };
  const noPytorch = f.pytorch ? pytorchUnavailable() ?? torchvisionUnavailable() : '--no-pytorch';
  const server = noPytorch ? null : new PytorchServer(join(repoRoot(), 'bench', 'pytorch_detector.py'), spec, batch);
  const result: SpeedResult = { batch, size, width: f.width, threads, native: { skipped: 'not timed' }, pytorch: { skipped: noPytorch ?? 'not timed' }, ratio: null, roundRatio: null, measured: new Date().toISOString() };
  try {
    const torchParameters = server ? await server.ready() : 0;
    for (let i = 0; i < f.speedWarmup; i++) say(`speed: native warm-up ${i + 1}/${f.speedWarmup}: ${nativeStep().toFixed(0)} ms`);
    if (server) say(`speed: pytorch warm-up: ${(await server.steps(threads, f.speedWarmup)).map((ms) => ms.toFixed(0)).join(', ')} ms`);
    const nativeMs: number[] = [];
    const torchMs: number[] = [];
    const tensorsBefore = tf.memory().numTensors;
    for (let round = 0; round < f.speedSteps; round++) {
      nativeMs.push(nativeStep());
      if (server) torchMs.push((await server.steps(threads, 1))[0]!);
      say(`speed: round ${round + 1}/${f.speedSteps}: native ${nativeMs.at(-1)!.toFixed(0)} ms${server ? `, pytorch ${torchMs.at(-1)!.toFixed(0)} ms` : ''} (${threads} threads)`);
    }
    result.tensorLeakPerStep = (tf.memory().numTensors - tensorsBefore) / nativeMs.length;
    result.native = timingOf(nativeMs, batch, model.numParameters());
    if (server) result.pytorch = timingOf(torchMs, batch, torchParameters);
    if (isTiming(result.native) && isTiming(result.pytorch)) {
      result.ratio = result.native.imagesPerSec / result.pytorch.imagesPerSec;
      result.roundRatio = median(torchMs.map((t, i) => t / nativeMs[i]!));
    }
  } finally {
    server?.close();
    images.dispose();
    optimizer.dispose();
    model.dispose();
  }
  return result;
}

function torchvisionUnavailable(): string | undefined {
  const ok = spawnSync(PYTHON, ['-c', 'import torchvision'], { stdio: 'ignore' }).status === 0;
  return ok ? undefined : `${PYTHON} cannot import torchvision (apt-get install python3-torchvision)`;
}

function speedLine(s: SpeedResult): string {
  const n = isTiming(s.native) ? `${s.native.imagesPerSec.toFixed(2)} img/s (${s.native.msPerStep.toFixed(0)} ms/step, ${s.native.parameters.toLocaleString('en')} parameters)` : `skipped: ${s.native.skipped}`;
  const p = isTiming(s.pytorch) ? `${s.pytorch.imagesPerSec.toFixed(2)} img/s (${s.pytorch.msPerStep.toFixed(0)} ms/step, ${s.pytorch.parameters.toLocaleString('en')} parameters)` : `skipped: ${s.pytorch.skipped}`;
  return (
    `Detector fine-tuning speed (\`--speed\`, ${s.measured.slice(0, 10)}): Mask R-CNN FPN training step, batch ${s.batch}, ${s.size} px, ResNet-18 width ${s.width}, ${s.threads} threads, ` +
    `median of ${isTiming(s.native) ? s.native.stepsMs.length : 0} interleaved steps: ours ${n}; torchvision ${p}; ` +
    `ratio ours/torchvision ${s.ratio === null ? 'n/a (no PyTorch reference)' : `**${s.ratio.toFixed(2)}x** (median of per-round ratios ${s.roundRatio?.toFixed(2) ?? 'n/a'}x)`}.`
  );
}

function readSpeed(f: Flags): SpeedResult | null {
  const file = join(f.out, 'speed.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as SpeedResult) : null;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const program = new Command('bench:transfer')
    .description('pretrain every row on the objects set, fine-tune on the scenes (detect, segment; full and low-data), mean ± std over seeds')
    .option('--rows <list>', `rows: ${TRANSFER_ROWS.map((r) => r.name).join(', ')} (default: all)`, '')
    .option('--seeds <list>', 'fine-tune seeds; each is a run of every setting', '0,1,2')
    .option('--pretrain-seeds <list>', 'pretraining seeds, matched to --seeds in turn (default: the same list; one seed measures fine-tuning noise alone)')
    .option('--settings <list>', `settings: ${SETTINGS.join(', ')}`, SETTINGS.join(','))
    .option('--protocols <list>', `protocols: ${PROTOCOLS.join(', ')}`, PROTOCOLS.join(','))
    .option('--out <dir>', "folder of the runs and results (--quick: runs/bench-transfer-quick)", 'runs/bench-transfer')
    .option('--cache <dir>', 'folder of the generated data sets (shared between --out folders)', 'runs/bench-transfer-data')
    .option('--objects <n>', 'object images to pretrain on (10% of them are val)', positiveInt, 20000)
    .option('--object-size <px>', 'object image side', positiveInt, 64)
    .option('--scenes <n>', 'scenes to fine-tune on', positiveInt, 2000)
    .option('--scene-val-fraction <f>', 'fraction of the scenes held out as val', nonNegativeNumber, 0.2)
    .option('--data-seed <n>', 'seed of both data sets', nonNegativeInt, 0)
    .option('--width <n>', 'ResNet-18 width', positiveInt, 16)
    .option('--epochs <n>', 'pretraining epochs (every row)', positiveInt, 10)
    .option('--batch-size <n>', 'pretraining images per step (every row)', positiveInt, 256)
    .option('--workers <n>', 'pretraining loader worker threads', nonNegativeInt, 1)
    .option('--full-iters <n>', 'fine-tune iterations of the full setting', positiveInt, 1500)
    .option('--low-iters <n>', 'fine-tune iterations of the low-data setting', positiveInt, 600)
    .option('--low-train-limit <n>', 'training scenes of the low-data setting', positiveInt, 160)
    .option('--ft-batch-size <n>', 'fine-tune images per iteration', positiveInt, 8)
    .option('--roi-batch-per-image <n>', "RoIs the detector samples per image (detect's --roi-batch-per-image)", positiveInt, ROI_BATCH_PER_IMAGE)
    .option('--warmup-iters <n>', 'fine-tune warm-up iterations', nonNegativeInt, 100)
    .option('--precise-bn-batches <n>', 'batches that re-estimate BN statistics before testing', nonNegativeInt, 50)
    .option('--val-limit <n>', 'test on the first N val scenes only (default: all)', positiveInt)
    .option('--gate-far <k>', "'far below': the gap must exceed k noise floors", nonNegativeNumber, DEFAULT_GATES.far)
    .option('--gate-clear <k>', "'clearly above': the gap must exceed k noise floors", nonNegativeNumber, DEFAULT_GATES.clear)
    .option('--gate-min-gap <ap>', 'and never less than this many AP points', nonNegativeNumber, DEFAULT_GATES.minGap)
    .option('--ignore-gates', 'go on to the methods when supervised does not clear random init')
    .option('--quick', 'smoke-test budgets (minutes): tiny data, 1 epoch, a few dozen iterations, seeds 0,1')
    .option('--force', "discard the chosen rows' runs and results first")
    .option('--readme [file]', 'rewrite the bench-transfer blocks of README.md (or this file; a summary) and of docs/benchmarks.md beside it (the full tables), from every result present')
    .option('--table-only', 'run nothing: print the tables (and --readme) from the results present with these settings')
    .option('--speed', 'time the detector training step against torchvision (and nothing else)')
    .option('--speed-steps <n>', 'timed steps of each engine', positiveInt, 5)
    .option('--speed-warmup <n>', 'untimed steps first', nonNegativeInt, 2)
    .option('--threads <n>', 'threads of both engines (default: the native backend\'s)', positiveInt)
    .option('--no-pytorch', 'skip the torchvision reference')
    .addOption(new Option('--job <id>', 'one job, in a child process').hideHelp())
    .parse();
  const f = program.opts<Flags>();
  if (f.quick) {
    for (const [key, value] of Object.entries(QUICK)) {
      if (program.getOptionValueSource(key) !== 'cli') (f as unknown as Record<string, unknown>)[key] = value;
    }
  }
  f.force = Boolean(f.force);
  const seeds = seedList(f.seeds);
  const pretrainSeeds = f.pretrainSeeds ? seedList(f.pretrainSeeds) : seeds;
  if (seeds.length === 0 || new Set(seeds).size !== seeds.length) throw new Error(`--seeds: need distinct seeds, got '${f.seeds}'`);

  if (f.speed) {
    const result = await runSpeed(f);
    mkdirSync(f.out, { recursive: true });
    writeFileAtomic(join(f.out, 'speed.json'), `${JSON.stringify(result, null, 2)}\n`);
    const n = result.native;
    const p = result.pytorch;
    const lines = [
      `detector training step: Mask R-CNN FPN, ResNet-18 width ${result.width} (ImageNet stem, random init), batch ${result.batch}, ${result.size}x${result.size}, ${result.threads} threads`,
      `  ${'engine'.padEnd(26)}${'images/s'.padStart(10)}${'ms/step'.padStart(10)}${'steps'.padStart(7)}${'parameters'.padStart(12)}`,
      ...([['native (ours)', n], ['torchvision (PyTorch CPU)', p]] as const).map(([name, t]) =>
        isTiming(t)
          ? `  ${name.padEnd(26)}${t.imagesPerSec.toFixed(2).padStart(10)}${t.msPerStep.toFixed(0).padStart(10)}${String(t.stepsMs.length).padStart(7)}${t.parameters.toLocaleString('en').padStart(12)}`
          : `  ${name.padEnd(26)}skipped: ${t.skipped}`,
      ),
      result.ratio === null
        ? `  ratio native/torchvision: n/a (no PyTorch reference: ${isTiming(p) ? 'not timed' : p.skipped})`
        : `  ratio native/torchvision: ${result.ratio.toFixed(2)}x (medians), ${result.roundRatio!.toFixed(2)}x (median of per-round ratios)`,
      ...(result.tensorLeakPerStep ? [`  WARNING: ${result.tensorLeakPerStep.toFixed(1)} tensors left per step`] : []),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
    if (f.readme) say('--readme with --speed: the speed line goes into the table on the next table run');
    return;
  }

  const known = TRANSFER_ROWS.map((r) => r.name);
  const wanted = f.rows ? list(f.rows) : known;
  for (const w of wanted) if (!known.includes(w)) throw new Error(`--rows: unknown row '${w}'; choose from ${known.join(', ')}`);
  const settings = list(f.settings) as SettingName[];
  for (const s of settings) if (!SETTINGS.includes(s)) throw new Error(`--settings: unknown setting '${s}'; choose from ${SETTINGS.join(', ')}`);
  const protocols = list(f.protocols) as ProtocolName[];
  for (const p of protocols) if (!PROTOCOLS.includes(p)) throw new Error(`--protocols: unknown protocol '${p}'; choose from ${PROTOCOLS.join(', ')}`);

  if (f.tableOnly && f.force) throw new Error('--table-only runs nothing and --force discards results: give one of them');
  const backend = await useBackend('auto');
  if (f.job) {
    await runJob(f, parseJobId(f.job), backend);
    return;
  }
  const info = backend === 'native' ? nativeAddon().info() : undefined;
  say(`bench:transfer on ${backend}${info ? ` (oneDNN ${info.onednn}, ${info.threads} threads)` : ''}, rows ${wanted.join(', ')}, ${describe(f, seeds, pretrainSeeds)}`);
  if (f.force) discardRows(f, wanted, pretrainSeeds, seeds);
  if (!f.tableOnly) triedSettings(f, describe(f, seeds, pretrainSeeds));

  const jobs = f.tableOnly ? [] : planJobs({ rows: wanted, seeds, pretrainSeeds, settings, protocols });
  let gatesChecked = false;
  const started = performance.now();
  for (const [k, job] of jobs.entries()) {
    if (!gatesChecked && job.kind !== 'data' && !GATE_ROWS.includes(job.row)) {
      gatesChecked = true;
      if (!checkGateRows(f, seeds, pretrainSeeds)) break;
    }
    const file = resultFile(f.out, job);
    const previous = readJobResult(file);
    const current = jobSettings(f, job);
    const state = jobState(previous, current);
    if (state === 'done') {
      say(`${jobId(job)}: done (${file}), skipped`);
      continue;
    }
    const changes = state === 'stale' ? settingsChanges(previous!.settings, current).join(', ') : '';
    if (state === 'stale' && job.kind === 'pretrain') {
      throw new Error(`${jobId(job)}: ${file} was made with other settings (${changes}); rerun with --force --rows ${job.row} or another --out`);
    }
    // An evaluation is cheap to redo and its report stays in the pretraining run's eval/ folder; only the table's copy is replaced.
    if (state === 'stale') say(`${jobId(job)}: ${file} was made with other settings (${changes}); running it again replaces it`);
    const elapsed = (performance.now() - started) / 60000;
    say(`\n[${k + 1}/${jobs.length}, ${elapsed.toFixed(1)} min] ${jobId(job)}`);
    runSelfInChild(['--job'], ['--job', jobId(job)], jobId(job));
  }

  const collected = collect(f, seeds, pretrainSeeds);
  // The tables show every result present that was made with these settings, whichever rows ran now.
  const { text, summary, history, gateLines } = reportText(f, collected, seeds, pretrainSeeds, triedSettings(f, null));
  process.stdout.write(`${text}\n\n${history}\n`);
  say('');
  for (const line of gateLines) say(line);
  if (f.readme) {
    const written = updateSummaryAndFull(f.readme === true ? 'README.md' : f.readme, START, END, summary, text);
    say(`transfer tables rewritten: the summary in ${written[0]}, the full tables in ${written[1]}`);
  }
}

/**
 * After the gate rows: the first noise floor and "supervised clearly above
 * random init" for each setting. False (stop) when it fails, unless
 * --ignore-gates or --quick.
 */
function checkGateRows(f: Flags, seeds: number[], pretrainSeeds: number[]): boolean {
  let ok = true;
  for (const { setting, rows } of collect(f, seeds, pretrainSeeds)) {
    const gateRows = rows.filter((r) => GATE_ROWS.includes(r.row));
    if (gateRows.length < GATE_ROWS.length) continue;
    const noise = noiseFloor(gateRows);
    say(`\n[${setting}] ${noiseLine(noise)} (gate rows only)`);
    const clear = checkGates(gateRows, noise.AP, gateOptions(f)).find((g) => g.name.startsWith('supervised'))!;
    for (const line of formatGates(setting, [clear])) say(line);
    if (clear.status === 'FAIL') ok = false;
  }
  if (ok) return true;
  if (f.ignoreGates || f.quick) {
    say('the gate failed; going on to the methods anyway (--ignore-gates or --quick): their comparison means little');
    return true;
  }
  say('the gate failed: supervised pretraining does not clear random init, so comparing methods would measure noise. Fix the budgets or pass --ignore-gates.');
  process.exitCode = 2;
  return false;
}

main().catch((err: unknown) => {
  say(`bench:transfer: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
