// The evaluation benchmark: the protocols beyond kNN and the linear probe,
// run on the checkpoints the other two benchmarks trained, so the seed's
// claims about features become numbers of this repository.
//
//   Fashion-MNIST (bench:methods' runs, runs/bench-methods/<row>/): random
//   initialisation, supervised, MoCo v2, MoCo v2 + HIC, DetCo. A linear SVM
//   on every stage Res2..Res5 (svm_tools' protocol, top-1 one-vs-rest), image
//   retrieval on Res5 (mAP@R, recall@1), and for DetCo the similarity
//   statistics (ΔP = P^g - P^l, ΔN = N^g - N^l; the seed reports ΔP ≈ 0.1,
//   ΔN → 0).
//   Scenes (bench:transfer's object-centric runs, runs/bench-transfer/pretrain/
//   <row>/seed-0/): the same rows with a multi-label SVM on every stage (mAP,
//   VOC07-style) and the share of Res4 attention energy inside the objects'
//   masks on the val scenes.
//
//   npm run bench:eval                        every measurement (resumable)
//   npm run bench:eval -- --rows detco --readme   (rewrites the table in docs/benchmarks.md)
//
// Each measurement is one `evaluate()` call; its metrics are kept in
// <out>/<key>.json, so an interrupted run resumes where it stopped.
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { evaluate } from '../src/app/index.js';
import { nativeAddon } from '../src/backend/native_addon.js';
import { useBackend, type BackendChoice } from '../src/backend/select.js';
import { writeFileAtomic } from '../src/core/files.js';
import { writeScenes } from '../src/data/scenes.js';
import { LAST_CHECKPOINT } from '../src/io/checkpoint.js';
import { readResultFile, updateReadmeBlock } from './rows.js';

const STAGES = ['res2', 'res3', 'res4', 'res5'] as const;
/** 1,000 train and 500 val scenes: bench:transfer's 200 val scenes leave a class's AP resting on a few dozen images. */
const SCENES = { count: 1500, seed: 0 };

interface Row {
  name: string;
  label: string;
  /** The bench:methods row and the bench:transfer row whose checkpoints it uses. */
  methods: string;
  transfer: string;
  randomInit?: boolean;
}

const ROWS: Row[] = [
  // The untrained network: the supervised run's architecture, its weights not loaded.
  { name: 'random-init', label: 'random initialisation', methods: 'supervised', transfer: 'supervised', randomInit: true },
  { name: 'supervised', label: 'supervised (labels)', methods: 'supervised', transfer: 'supervised' },
  { name: 'mocov2', label: 'MoCo v2', methods: 'mocov2', transfer: 'mocov2' },
  { name: 'mocov2-hic', label: 'MoCo v2 + HIC', methods: 'detco-hic', transfer: 'mocov2-hic' },
  { name: 'detco', label: 'DetCo (HIC + CGLC)', methods: 'detco', transfer: 'detco' },
];

interface Flags {
  rows: string;
  out: string;
  methodsRuns: string;
  transferRuns: string;
  scenes: string;
  svmTrain: number;
  svmTest: number;
  attentionScenes: number;
  readme: boolean | string;
}

interface Measurement {
  row: Row;
  family: 'fashion-mnist' | 'scenes';
  what: string;
  protocol: string;
  options: Record<string, unknown>;
  input: Record<string, unknown>;
}

interface Stored {
  key: string;
  row: string;
  what: string;
  protocol: string;
  checkpoint: string;
  metrics: Record<string, number>;
  seconds: number;
  finished: string;
}

const say = (line: string) => void process.stderr.write(`${line}\n`);

function checkpointFile(f: Flags, m: Measurement): string {
  return m.family === 'fashion-mnist' ? join(f.methodsRuns, m.row.methods, LAST_CHECKPOINT) : join(f.transferRuns, m.row.transfer, 'seed-0', LAST_CHECKPOINT);
}

/** How to make a missing checkpoint. */
function makeCommand(m: Measurement): string {
  return m.family === 'fashion-mnist' ? `npm run bench:methods -- --rows ${m.row.methods}` : `npm run bench:transfer -- --rows ${m.row.transfer} --pretrain-seeds 0`;
}

function measurements(f: Flags, rows: Row[]): Measurement[] {
  const out: Measurement[] = [];
  for (const row of rows) {
    // 5,000 training and 2,000 test images per SVM: 19 costs x 3 folds x 10 classes x 4 stages on all 20,000 would take hours here.
    for (const stage of STAGES) {
      out.push({ row, family: 'fashion-mnist', what: `svm-${stage}`, protocol: 'svm', options: {}, input: { stage, limit: f.svmTrain, testLimit: f.svmTest } });
    }
    out.push({ row, family: 'fashion-mnist', what: 'retrieval', protocol: 'retrieval', options: {}, input: { stage: 'res5', limit: 20000 } });
    if (row.name === 'detco') out.push({ row, family: 'fashion-mnist', what: 'similarity', protocol: 'similarity', options: {}, input: {} });
    for (const stage of STAGES) {
      out.push({ row, family: 'scenes', what: `scene-svm-${stage}`, protocol: 'svm', options: {}, input: { stage, scenes: f.scenes } });
    }
    if (row.name === 'detco') out.push({ row, family: 'scenes', what: 'scene-similarity', protocol: 'similarity', options: {}, input: {} });
    out.push({ row, family: 'scenes', what: 'attention', protocol: 'attention', options: { scenes: f.scenes, stage: 'res4', images: 8, measure: f.attentionScenes }, input: {} });
  }
  return out;
}

/** The key names the checkpoint by path, size and time, so a retrained row is measured again. */
function keyOf(m: Measurement, checkpoint: string): string {
  const { size, mtimeMs } = statSync(checkpoint);
  const text = JSON.stringify({ checkpoint: resolve(checkpoint), size, mtimeMs, randomInit: m.row.randomInit ?? false, protocol: m.protocol, options: m.options, input: m.input });
  return `${m.row.name}-${m.what}-${createHash('sha256').update(text).digest('hex').slice(0, 10)}`;
}

function readStored(path: string): Stored | null {
  return readResultFile<Stored>(path, 'measure again');
}

const cell = (v: number | undefined, digits = 1) => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits));

function tables(f: Flags, results: Map<string, Stored>): string {
  const get = (row: string, what: string) => results.get(`${row}/${what}`)?.metrics;
  const lines = [
    `Fashion-MNIST, the \`bench:methods\` checkpoints (ResNet-18 width 16, 20,000 images, 5 epochs). ` +
      `SVM: svm_tools' protocol on each stage's pooled features, ${f.svmTrain.toLocaleString('en')} training / ${f.svmTest.toLocaleString('en')} test images, top-1 %. ` +
      'Retrieval: Res5, the 10,000 test images against the 20,000 training images. ΔP, ΔN: DetCo\'s similarity statistics on its 20,000 training images.',
    '',
    '| checkpoint | SVM Res2 | SVM Res3 | SVM Res4 | SVM Res5 | retrieval mAP@R | recall@1 | ΔP | ΔN |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const row of ROWS) {
    const svm = STAGES.map((s) => cell(get(row.name, `svm-${s}`)?.top1));
    const r = get(row.name, 'retrieval');
    const sim = get(row.name, 'similarity');
    lines.push(`| ${row.label} | ${svm.join(' | ')} | ${cell(r?.mapAtR)} | ${cell(r?.recallAt1)} | ${cell(sim?.deltaPositive, 3)} | ${cell(sim?.deltaNegative, 3)} |`);
  }
  lines.push(
    '',
    'Scenes, the `bench:transfer` checkpoints (pretrained 12 epochs on 20,000 object-centric images at 64 px). ' +
      'SVM: multi-label (the classes present in each scene), 1,000 train scenes against 500 val scenes (128 px), mAP %. ' +
      `Attention: the share of Res4 activation energy inside the objects' masks, mean over ${f.attentionScenes} val scenes (the masks cover the "area" share). ` +
      "ΔP, ΔN: DetCo's similarity statistics on its 18,000 object training images.",
    '',
    '| checkpoint | SVM Res2 | SVM Res3 | SVM Res4 | SVM Res5 | energy on objects % | area % | ΔP | ΔN |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  );
  for (const row of ROWS) {
    const svm = STAGES.map((s) => cell(get(row.name, `scene-svm-${s}`)?.mAP));
    const a = get(row.name, 'attention');
    const sim = get(row.name, 'scene-similarity');
    lines.push(`| ${row.label} | ${svm.join(' | ')} | ${cell(a?.energyShare)} | ${cell(a?.areaShare)} | ${cell(sim?.deltaPositive, 3)} | ${cell(sim?.deltaNegative, 3)} |`);
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const program = new Command('bench:eval')
    .description('stage-wise SVMs, retrieval, attention on scenes and similarity statistics on the methods and transfer benchmarks\' checkpoints')
    .option('--rows <list>', `rows, comma-separated: ${ROWS.map((r) => r.name).join(', ')} (default: all)`, '')
    .option('--out <dir>', 'folder of the results', 'runs/bench-eval')
    .option('--methods-runs <dir>', "bench:methods' runs", 'runs/bench-methods')
    .option('--transfer-runs <dir>', "bench:transfer's pretraining runs", 'runs/bench-transfer/pretrain')
    .option('--scenes <dir>', `a scene folder (default: ${SCENES.count} scenes, a third val, seed ${SCENES.seed}, made in <out>/ if absent)`, '')
    .option('--svm-train <n>', 'Fashion-MNIST SVM: training images', (v) => Number.parseInt(v, 10), 5000)
    .option('--svm-test <n>', 'Fashion-MNIST SVM: test images', (v) => Number.parseInt(v, 10), 2000)
    .option('--attention-scenes <n>', 'val scenes the attention energy share is averaged over', (v) => Number.parseInt(v, 10), 200)
    .option('--readme [file]', 'rewrite the bench-eval block of docs/benchmarks.md (or this file) from every result present')
    .parse();
  const f = program.opts<Flags>();
  for (const [flag, v] of [['--svm-train', f.svmTrain], ['--svm-test', f.svmTest], ['--attention-scenes', f.attentionScenes]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${flag}: expected a positive whole number, got ${v}`);
  }
  const wanted = f.rows ? f.rows.split(',').map((s) => s.trim()) : ROWS.map((r) => r.name);
  for (const w of wanted) if (!ROWS.some((r) => r.name === w)) throw new Error(`--rows: unknown row '${w}'; choose from ${ROWS.map((r) => r.name).join(', ')}`);
  if (f.scenes) {
    if (!existsSync(join(f.scenes, 'annotations'))) throw new Error(`--scenes ${f.scenes}: no scene folder there (no annotations/); make one with \`selfsup data scenes --out DIR\``);
  } else {
    f.scenes = join(f.out, `scenes-${SCENES.count}-val1of3-seed${SCENES.seed}`);
    if (!existsSync(join(f.scenes, 'annotations', 'instances_val.json'))) {
      say(`bench:eval: writing ${SCENES.count} scenes to ${f.scenes}`);
      await writeScenes(f.scenes, { count: SCENES.count, seed: SCENES.seed, valFraction: 1 / 3 });
    }
  }

  const backend = await useBackend('auto');
  const info = backend === 'native' ? nativeAddon().info() : undefined;
  say(`bench:eval on ${backend}${info ? ` (oneDNN ${info.onednn}, ${info.threads} threads)` : ''}, rows ${wanted.join(', ')}`);
  const results = new Map<string, Stored>();
  const all = measurements(f, ROWS);
  // Fashion-MNIST first: the scene measurements need the objects checkpoints, often made later.
  const todo = all.filter((m) => wanted.includes(m.row.name)).sort((a, b) => Number(a.family === 'scenes') - Number(b.family === 'scenes'));
  const missing = new Set<string>();
  for (const [i, m] of todo.entries()) {
    const checkpoint = checkpointFile(f, m);
    if (!existsSync(checkpoint)) {
      missing.add(`${checkpoint} (make it with \`${makeCommand(m)}\`)`);
      continue;
    }
    const key = keyOf(m, checkpoint);
    const path = join(f.out, `${key}.json`);
    if (readStored(path)) {
      say(`[${i + 1}/${todo.length}] ${m.row.name} ${m.what}: present, skipped`);
      continue;
    }
    say(`\n[${i + 1}/${todo.length}] ${m.row.name} ${m.what} (${m.family})`);
    const { report } = await evaluate({
      checkpoint,
      protocol: m.protocol,
      options: m.options,
      input: m.input,
      randomInit: m.row.randomInit ?? false,
      backend: backend as BackendChoice,
      log: say,
    });
    const stored: Stored = { key, row: m.row.name, what: m.what, protocol: m.protocol, checkpoint, metrics: report.metrics, seconds: report.seconds, finished: new Date().toISOString() };
    writeFileAtomic(path, `${JSON.stringify(stored, null, 2)}\n`);
    say(`${m.row.name} ${m.what}: ${JSON.stringify(report.metrics)} (${report.seconds.toFixed(0)} s)`);
  }
  // The tables hold every result present whose checkpoint still exists and matches its key.
  for (const m of all) {
    const file = checkpointFile(f, m);
    if (!existsSync(file)) continue;
    const stored = readStored(join(f.out, `${keyOf(m, file)}.json`));
    if (stored) results.set(`${m.row.name}/${m.what}`, stored);
  }
  if (missing.size > 0) {
    say(`bench:eval: skipped the measurements of missing checkpoints:\n  ${[...missing].join('\n  ')}`);
    process.exitCode = 1;
  }
  const text = tables(f, results);
  process.stdout.write(`${text}\n`);
  if (f.readme) {
    const file = f.readme === true ? 'docs/benchmarks.md' : f.readme;
    updateReadmeBlock(file, '<!-- bench-eval -->', '<!-- /bench-eval -->', text);
    say(`${file}: evaluation tables rewritten`);
  }
}

main().catch((err: unknown) => {
  say(`bench:eval: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
