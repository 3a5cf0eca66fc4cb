// The methods benchmark: every method pretrains ResNet-18 at width
// 16 (CIFAR stem, 28x28 padded to 32) on the first 20,000 Fashion-MNIST
// training images for 5 epochs at batch 256, then its Res5 features are judged
// on the 10,000 test images: weighted kNN (k=200, T=0.1) with the 20,000
// training images as memory, and a linear probe trained on them. Supervised
// training and the untrained network are the reference rows.
//
//   npm run bench:methods                      all rows (about 2 h on 2 cores)
//   npm run bench:methods -- --rows detco,mocov2 --readme
//
// Each row's run lives in <out>/<row>/ and is resumed if interrupted; a row
// whose result exists in <out>/<row>.json is not run again (--force discards
// the row's run and trains it afresh). With several rows, each trains in a
// child process of its own, so one row's heap and kernel caches cannot slow
// the next.
// --readme rewrites the bench-methods blocks: a summary in README.md, the full
// table in docs/benchmarks.md.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { nativeAddon } from '../src/backend/native_addon.js';
import { resolvePrecision, type Precision, type ResolvedPrecision } from '../src/backend/precision.js';
import { useBackend } from '../src/backend/select.js';
import { evaluate as evaluateCheckpoint, parseRunConfig, train } from '../src/app/index.js';
import type { BackendChoice } from '../src/backend/select.js';
import { nonNegativeInt, positiveInt } from '../src/app/flags.js';
import { writeFileAtomic } from '../src/core/files.js';
import { loadTrainingSet } from '../src/data/dataset_config.js';
import { extractFeatures } from '../src/eval/features.js';
import { normalizedMutualInfo } from '../src/eval/nmi.js';
import { methodFromCheckpoint } from '../src/io/backbone.js';
import { LAST_CHECKPOINT, readCheckpoint } from '../src/io/checkpoint.js';
import type { SwAV } from '../src/methods/swav.js';
import type { RunConfig } from '../src/train/config.js';
import type { TrainResult } from '../src/train/loop.js';
import { readResultFile, runSelfInChild, updateSummaryAndFull } from './rows.js';

interface Row {
  name: string;
  label: string;
  method: string;
  methodOptions?: Record<string, unknown>;
}

const ROWS: Row[] = [
  { name: 'supervised', label: 'supervised (labels)', method: 'supervised' },
  { name: 'insdis', label: 'InsDis', method: 'insdis' },
  { name: 'mocov1', label: 'MoCo v1', method: 'mocov1' },
  { name: 'mocov2', label: 'MoCo v2', method: 'mocov2' },
  { name: 'simclr', label: 'SimCLR', method: 'simclr' },
  { name: 'byol', label: 'BYOL', method: 'byol' },
  { name: 'pirl', label: 'PIRL', method: 'pirl' },
  { name: 'detco', label: 'DetCo (HIC + CGLC)', method: 'detco' },
  { name: 'detco-hic', label: 'DetCo ablation: MoCo v2 + HIC', method: 'detco', methodOptions: { cglc: false } },
  { name: 'densecl', label: 'DenseCL', method: 'densecl' },
  { name: 'swav', label: 'SwAV', method: 'swav' },
  { name: 'deepcluster', label: 'DeepCluster', method: 'deepcluster' },
  { name: 'simsiam', label: 'SimSiam', method: 'simsiam' },
  { name: 'barlow', label: 'Barlow Twins', method: 'barlow' },
  { name: 'rotation', label: 'Rotation', method: 'rotation' },
  { name: 'jigsaw', label: 'Jigsaw', method: 'jigsaw' },
  { name: 'relloc', label: 'Relative location', method: 'relloc' },
];
/** Evaluated with the supervised row's architecture, untrained. */
const RANDOM_INIT = 'random-init';

interface RowResult {
  row: string;
  label: string;
  method: string;
  methodOptions: Record<string, unknown>;
  knnTop1: number;
  knnTop5: number;
  linearTop1: number;
  linearTop5: number;
  /** Mean wall-clock minutes per training epoch (null for the untrained row). */
  minutesPerEpoch: number | null;
  finalLoss: number | null;
  /** Clustering methods: NMI of their clusters of the training images with the labels (DeepCluster's last k-means, SwAV's codes). */
  clusterNmi?: number | null;
  settings: Settings;
  backend: string;
  finished: string;
}

interface Settings {
  limit: number;
  epochs: number;
  batchSize: number;
  width: number;
  seed: number;
  workers: number;
  /** The training steps' precision (evaluation runs in f32); results from before this field ran f32. */
  precision: ResolvedPrecision;
}

interface Flags extends Omit<Settings, 'precision'> {
  precision: Precision;
  rows: string;
  out: string;
  force: boolean;
  readme: boolean | string;
}

const say = (line: string) => void process.stderr.write(`${line}\n`);

function sameSettings(a: Settings, b: Settings): boolean {
  return (['limit', 'epochs', 'batchSize', 'width', 'seed'] as const).every((k) => a[k] === b[k]) && (a.precision ?? 'f32') === (b.precision ?? 'f32');
}

/** The protocols' standard settings (kNN k=200, T=0.1; a 30-epoch probe), as the CLI's defaults. */
async function evaluate(checkpoint: string, limit: number, backend: string, randomInit: boolean) {
  const run = async (protocol: string) =>
    (await evaluateCheckpoint({ checkpoint, protocol, input: { limit }, randomInit, backend: backend as BackendChoice, log: say })).report.metrics;
  const knn = await run('knn');
  const linear = await run('linear');
  return { knnTop1: knn.top1!, knnTop5: knn.top5!, linearTop1: linear.top1!, linearTop5: linear.top5! };
}

async function runRow(row: Row, settings: Settings, outRoot: string, backend: string): Promise<RowResult> {
  const out = join(outRoot, row.name);
  const config = parseRunConfig(
    {
      method: row.method,
      methodOptions: row.methodOptions ?? {},
      out,
      epochs: settings.epochs,
      batchSize: settings.batchSize,
      seed: settings.seed,
      workers: settings.workers,
      dataset: { name: 'fashion-mnist', limit: settings.limit },
      model: { arch: 'resnet18', width: settings.width, stem: 'cifar' },
      backend,
      precision: settings.precision,
    },
    `bench row ${row.name}`,
  );
  say(`\n== ${row.label}: ${row.method} ${JSON.stringify(row.methodOptions ?? {})} -> ${out}`);
  const trained = await train(config, { resume: existsSync(join(out, LAST_CHECKPOINT)), log: say });
  if (trained.stoppedEarly) throw new Error(`${row.name}: training was interrupted; run the benchmark again to resume it`);
  const seconds = trained.metrics.map((m) => m.seconds);
  const scores = await evaluate(trained.checkpoint, settings.limit, backend, false);
  const nmi = await clusterNmi(config, trained);
  if (nmi !== null) say(`${row.name}: NMI of its clusters of the training images with the labels ${nmi.toFixed(3)}`);
  return {
    row: row.name,
    label: row.label,
    method: row.method,
    methodOptions: row.methodOptions ?? {},
    ...scores,
    minutesPerEpoch: seconds.reduce((a, b) => a + b, 0) / seconds.length / 60,
    finalLoss: trained.metrics.at(-1)?.loss ?? null,
    clusterNmi: nmi,
    settings,
    backend,
    finished: new Date().toISOString(),
  };
}

/**
 * NMI with the labels of a clustering method's clusters of the training
 * images: DeepCluster's last k-means (its epoch metrics), SwAV's Sinkhorn
 * codes of the trained network; null for other methods.
 */
async function clusterNmi(config: RunConfig, trained: TrainResult): Promise<number | null> {
  const logged = trained.metrics.at(-1)?.clustering?.nmiLabels;
  if (logged !== undefined && logged !== null) return logged;
  if (config.method !== 'swav') return null;
  const set = await loadTrainingSet(config.dataset);
  const method = methodFromCheckpoint(readCheckpoint(trained.checkpoint)) as SwAV;
  try {
    const { features, dim } = await extractFeatures(method.backbone, set, { size: config.dataset.size, batchSize: 256 });
    return normalizedMutualInfo(method.clusters(features, dim), set.labels);
  } finally {
    method.dispose();
  }
}

function readResult(path: string): RowResult | null {
  return readResultFile<RowResult>(path, 'rerun the row');
}

function table(results: RowResult[], settings: Settings): string {
  const pct = (x: number) => x.toFixed(1);
  const lines = [
    `ResNet-18 width ${settings.width} (CIFAR stem), first ${settings.limit.toLocaleString('en')} Fashion-MNIST training images, ${settings.epochs} epochs at batch ${settings.batchSize}` +
      `${settings.precision === 'bf16' ? ', trained in bf16' : ''}; ` +
      'Res5 features on the 10,000 test images (top-1/top-5 %); kNN k=200, T=0.1 over the training images; linear probe 30 epochs.',
    '',
    '| method | kNN top-1 | kNN top-5 | linear top-1 | linear top-5 | min/epoch | final loss |',
    '|---|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    const minutes = r.minutesPerEpoch === null ? '-' : r.minutesPerEpoch.toFixed(1);
    const loss = r.finalLoss === null ? '-' : r.finalLoss.toFixed(3);
    lines.push(`| ${r.label} | ${pct(r.knnTop1)} | ${pct(r.knnTop5)} | ${pct(r.linearTop1)} | ${pct(r.linearTop5)} | ${minutes} | ${loss} |`);
  }
  const clustered = results.filter((r) => typeof r.clusterNmi === 'number');
  if (clustered.length > 0) {
    lines.push('', `NMI of the clusters of the training images with the labels: ${clustered.map((r) => `${r.label} ${r.clusterNmi!.toFixed(3)}`).join(', ')}.`);
  }
  return lines.join('\n');
}

/** The README's short form: top-1 only, two methods a line; the full table goes to docs/benchmarks.md. */
function summaryTable(results: Array<Pick<RowResult, 'label' | 'knnTop1' | 'linearTop1'>>, settings: Pick<Settings, 'width' | 'limit' | 'epochs' | 'precision'>): string {
  const half = Math.ceil(results.length / 2);
  const cell = (r: (typeof results)[number] | undefined) => (r ? `${r.label} | ${r.knnTop1.toFixed(1)} | ${r.linearTop1.toFixed(1)}` : ' | | ');
  const lines = [
    `Res5 top-1 % on the 10,000 test images (kNN k=200; linear probe) after ${settings.epochs} epochs on ${settings.limit.toLocaleString('en')} Fashion-MNIST images, ` +
      `ResNet-18 width ${settings.width}${settings.precision === 'bf16' ? ', bf16' : ''}; top-5, minutes per epoch, final losses and cluster NMI: ` +
      '[docs/benchmarks.md](docs/benchmarks.md#methods).',
    '',
    '| method | kNN | linear | method | kNN | linear |',
    '|---|---:|---:|---|---:|---:|',
  ];
  for (let i = 0; i < half; i++) lines.push(`| ${cell(results[i])} | ${cell(results[half + i])} |`);
  return lines.join('\n');
}

const START = '<!-- bench-methods -->';
const END = '<!-- /bench-methods -->';

/** This script again, for the one row, with the same flags; its table and README update are left to the parent. */
function runInChild(row: string): void {
  runSelfInChild(['--rows'], ['--rows', row], `row ${row}`);
}

async function main(): Promise<void> {
  const program = new Command('bench:methods')
    .description('pretrain every method on 20k Fashion-MNIST images and score it with kNN and a linear probe')
    .option('--rows <list>', `rows to run, comma-separated: ${[...ROWS.map((r) => r.name), RANDOM_INIT].join(', ')} (default: all)`, '')
    .option('--out <dir>', 'folder of the rows\' runs and results', 'runs/bench-methods')
    .option('--limit <n>', 'training images', positiveInt, 20000)
    .option('--epochs <n>', 'pretraining epochs', positiveInt, 5)
    .option('--batch-size <n>', 'images per step', positiveInt, 256)
    .option('--width <n>', 'ResNet-18 width', positiveInt, 16)
    .option('--seed <n>', 'seed of every run', nonNegativeInt, 0)
    .option('--workers <n>', 'loader worker threads', nonNegativeInt, 1)
    .option('--precision <p>', "the training steps' precision: f32 or bf16 (AVX512-BF16; use its own --out)", 'f32')
    .option('--force', 'discard the chosen rows\' runs and results and train them afresh')
    .option('--readme [file]', "rewrite the summary in README.md (or this file) and the full table in docs/benchmarks.md beside it, from every result present")
    .parse();
  const flags = program.opts<Flags>();
  flags.force = Boolean(flags.force);
  const known = [...ROWS.map((r) => r.name), RANDOM_INIT];
  const wanted = flags.rows ? flags.rows.split(',').map((s) => s.trim()) : known;
  for (const w of wanted) if (!known.includes(w)) throw new Error(`--rows: unknown row '${w}'; choose from ${known.join(', ')}`);
  const backend = await useBackend('auto');
  const precision = resolvePrecision(flags.precision, backend);
  const settings: Settings = { limit: flags.limit, epochs: flags.epochs, batchSize: flags.batchSize, width: flags.width, seed: flags.seed, workers: flags.workers, precision };

  const info = backend === 'native' ? nativeAddon().info() : undefined;
  say(`bench:methods on ${backend}${info ? ` (oneDNN ${info.onednn}, ${info.threads} threads)` : ''}, rows ${wanted.join(', ')}`);
  const resultPath = (name: string) => join(flags.out, `${name}.json`);
  for (const name of wanted) {
    const previous = readResult(resultPath(name));
    if (previous && !flags.force && sameSettings(previous.settings, settings)) {
      say(`${name}: result present (${resultPath(name)}), skipped`);
      continue;
    }
    if (wanted.length > 1 && name !== RANDOM_INIT) {
      runInChild(name);
      continue;
    }
    if (flags.force) {
      rmSync(join(flags.out, name), { recursive: true, force: true });
      rmSync(resultPath(name), { force: true });
    }
    let result: RowResult;
    if (name === RANDOM_INIT) {
      // Any finished row's checkpoint gives the architecture; its weights are not loaded.
      const donor = join(flags.out, 'supervised', LAST_CHECKPOINT);
      if (!existsSync(donor)) throw new Error(`${RANDOM_INIT} needs the supervised row's run (${donor}); run --rows supervised first`);
      result = {
        row: RANDOM_INIT, label: 'random initialisation (no training)', method: 'supervised', methodOptions: {},
        ...(await evaluate(donor, settings.limit, backend, true)),
        minutesPerEpoch: null, finalLoss: null, settings, backend, finished: new Date().toISOString(),
      };
    } else {
      result = await runRow(ROWS.find((r) => r.name === name)!, settings, flags.out, backend);
    }
    writeFileAtomic(resultPath(name), `${JSON.stringify(result, null, 2)}\n`);
    say(`${name}: kNN ${result.knnTop1.toFixed(1)}%, linear ${result.linearTop1.toFixed(1)}%`);
  }

  const order = ['supervised', RANDOM_INIT, ...ROWS.map((r) => r.name).filter((n) => n !== 'supervised')];
  const results = order.map((n) => readResult(resultPath(n))).filter((r): r is RowResult => r !== null && sameSettings(r.settings, settings));
  const text = table(results, settings);
  process.stdout.write(`${text}\n`);
  if (flags.readme) {
    const written = updateSummaryAndFull(flags.readme === true ? 'README.md' : flags.readme, START, END, summaryTable(results, settings), text);
    say(`methods table rewritten: the summary in ${written[0]}, the full table in ${written[1]}`);
  }
}

main().catch((err: unknown) => {
  say(`bench:methods: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
