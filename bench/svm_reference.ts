// The SVM protocol against a reference solver: our liblinear-style dual
// coordinate descent (eval/svm.ts) and scikit-learn's LinearSVC (liblinear
// itself, which svm_tools calls) on the same features, cost grid and folds.
// Per class: the cost each one's 3-fold CV chose, its test AP, and
// scikit-learn's test AP at our cost (the solvers alone, without the choice).
// A one-off check, not part of CI; needs Debian's python3-sklearn.
//
//   node dist/bench/svm_reference.js --checkpoint runs/bench-methods/supervised --stage res4 --limit 5000 --test-limit 2000
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { evaluate } from '../src/app/index.js';
import { positiveInt } from '../src/app/flags.js';
import { useBackend } from '../src/backend/select.js';
import { prepareFeatures } from '../src/eval/feature_input.js';
import { loadBackbone, resolveCheckpointPath } from '../src/io/backbone.js';
import { PYTHON } from './pytorch_server.js';
import { repoRoot } from './rows.js';

interface ClassResult {
  class: number;
  cost: number;
  cvAP: number;
  testAP: number;
  testAPAtOurCost?: number;
}

const say = (line: string) => void process.stderr.write(`${line}\n`);

async function main(): Promise<void> {
  const f = new Command('svm_reference')
    .requiredOption('--checkpoint <path>', 'a checkpoint or run folder')
    .option('--stage <stage>', 'backbone stage', 'res4')
    .option('--limit <n>', 'training images', positiveInt, 5000)
    .option('--test-limit <n>', 'test images', positiveInt, 2000)
    .parse()
    .opts<{ checkpoint: string; stage: string; limit: number; testLimit: number }>();
  const probe = spawnSync(PYTHON, ['-c', 'import sklearn'], { encoding: 'utf8' });
  if (probe.status !== 0) throw new Error(`${PYTHON} cannot import sklearn (apt-get install python3-sklearn)`);
  await useBackend('auto');
  const input = { stage: f.stage, limit: f.limit, testLimit: f.testLimit };
  const { report } = await evaluate({ checkpoint: f.checkpoint, protocol: 'svm', input, save: false, log: () => {} });
  const ours = report.details!.perClass as ClassResult[];
  const costs = report.details!.costs as number[];
  const loaded = loadBackbone(resolveCheckpointPath(f.checkpoint));
  const dir = mkdtempSync(join(tmpdir(), 'svm-reference-'));
  try {
    const features = await prepareFeatures(loaded, { ...input, stage: f.stage as 'res4', testFraction: 0.2, batchSize: 256, cache: true }, () => {});
    const files = { train: join(dir, 'train.f32'), test: join(dir, 'test.f32'), trainLabels: join(dir, 'train.i32'), testLabels: join(dir, 'test.i32') };
    writeFileSync(files.train, features.train.features);
    writeFileSync(files.test, features.test.features);
    writeFileSync(files.trainLabels, features.train.labels);
    writeFileSync(files.testLabels, features.test.labels);
    const spec = { ...files, dim: features.dim, classes: features.numClasses, costs, ourCosts: ours.map((c) => c.cost) };
    const t0 = performance.now();
    const py = spawnSync(PYTHON, [join(repoRoot(), 'bench', 'svm_sklearn.py'), JSON.stringify(spec)], { encoding: 'utf8', maxBuffer: 1 << 24 });
    if (py.status !== 0) throw new Error(`svm_sklearn.py failed: ${py.stderr.slice(-2000)}`);
    const theirs = py.stdout.trim().split('\n').map((l) => JSON.parse(l) as ClassResult);
    const seconds = (performance.now() - t0) / 1000;
    const cost = (c: number) => (Math.log2(c) < -3 ? `2^${Math.log2(c)}` : String(c));
    const lines = [
      `${report.checkpoint.path} ${f.stage} (${features.dim}-d), ${features.train.labels.length} train / ${features.test.labels.length} test; ours ${report.seconds.toFixed(0)} s, scikit-learn ${seconds.toFixed(0)} s`,
      '| class | our cost | sklearn cost | our CV AP | sklearn CV AP | our test AP | sklearn test AP | sklearn at our cost |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|',
    ];
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    for (const [k, o] of ours.entries()) {
      const t = theirs[k]!;
      lines.push(`| ${k} | ${cost(o.cost)} | ${cost(t.cost)} | ${o.cvAP.toFixed(2)} | ${t.cvAP.toFixed(2)} | ${o.testAP.toFixed(2)} | ${t.testAP.toFixed(2)} | ${t.testAPAtOurCost!.toFixed(2)} |`);
    }
    lines.push(
      `| mAP | | | ${mean(ours.map((o) => o.cvAP)).toFixed(2)} | ${mean(theirs.map((t) => t.cvAP)).toFixed(2)} | ${mean(ours.map((o) => o.testAP)).toFixed(2)} | ${mean(theirs.map((t) => t.testAP)).toFixed(2)} | ${mean(theirs.map((t) => t.testAPAtOurCost!)).toFixed(2)} |`,
    );
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    loaded.backbone.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  say(`svm_reference: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
