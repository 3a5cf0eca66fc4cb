// `selfsup eval detect` and `selfsup eval segment` as a user runs them, in
// child processes: a tiny 3-channel ImageNet-stem run pretrained on a tiny
// objects set (`selfsup data objects` + `selfsup pretrain --dataset
// objects:DIR`), a tiny scene folder (`selfsup data scenes`, 8 train + 4 val),
// a 4-iteration fine-tune with --json; the report is written under
// <run>/eval/, the fine-tune state beside it, and an identical second command
// resumes from that state (at its last iteration: no training) and reports
// the same metrics; Ctrl-C saves the state and exits 130. Skipped when the
// clip-art packages are missing.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { missingPackages } from '../src/data/packages.js';
import { interruptWhen } from './helpers.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const missing = missingPackages(['tuxpaintStamps', 'openclipart']);
const skip = missing.length > 0 ? `scenes and objects need Debian packages: apt-get install ${missing.join(' ')}` : false;
const dir = mkdtempSync(join(tmpdir(), 'selfsup-cli-detect-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const run = join(dir, 'run');
const scenes = join(dir, 'scenes');

function selfsup(args: string[], expectStatus = 0) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 180_000 });
  assert.equal(r.status, expectStatus, `selfsup ${args.join(' ')} exited ${r.status}:\n${r.stderr}`);
  return r;
}

/** A COCO-style percentage: in [0, 100], or -1 where no ground truth falls in the range. */
function assertPercent(v: unknown, what: string): void {
  assert.ok(typeof v === 'number' && (v === -1 || (v >= 0 && v <= 100)), `${what} = ${v}`);
}

/** The report file the command announced on stderr; it must hold the object --json printed. */
function reportFile(stderr: string, protocol: string, printed: unknown): string {
  const file = stderr.match(/report: (.+\.json)\n/)?.[1];
  assert.ok(file && file.startsWith(join(run, 'eval', `${protocol}-`)), stderr);
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), printed);
  return file;
}

/** Metrics without the throughput, which depends on the machine's load (and is 0 for a run with nothing left to train). */
function stableMetrics(metrics: Record<string, number>): Record<string, number> {
  const { imagesPerSec: _ips, ...rest } = metrics;
  return rest;
}

describe('selfsup eval detect | segment', { skip }, () => {
  before(() => {
    const objects = join(dir, 'objects');
    selfsup(['data', 'objects', '--out', objects, '--count', '24', '--size', '32', '--backgrounds', 'procedural']);
    const config = join(dir, 'run.yaml');
    writeFileSync(config, 'method: supervised\nmodel:\n  width: 4\n  stem: imagenet\nonlineKnn:\n  every: 0\nworkers: 0\n');
    const trained = JSON.parse(selfsup(['pretrain', '--config', config, '--dataset', `objects:${objects}`, '--size', '32', '--epochs', '1', '--batch-size', '16', '--out', run, '--json', '--quiet']).stdout);
    assert.equal(trained.steps, 1);
    selfsup(['data', 'scenes', '--out', scenes, '--count', '12', '--size', '64', '--val-fraction', '0.34', '--backgrounds', 'procedural', '--objects', '1-2']);
  });

  const common = ['--checkpoint', run, '--scenes', scenes, '--iters', '4', '--batch-size', '2', '--precise-bn-batches', '1', '--json'];

  test('detect: --random-init, 4 iterations; JSON report with box and mask AP, written under <run>/eval/; a second run resumes', () => {
    const args = ['eval', 'detect', ...common, '--random-init'];
    const first = selfsup(args);
    const report = JSON.parse(first.stdout);
    assert.equal(report.protocol, 'detect');
    assert.equal(report.checkpoint.randomInit, true);
    assert.deepEqual(report.data, { name: `scenes ${scenes}`, trainImages: 8, testImages: 4 });
    assert.equal(report.options.iters, 4);
    assert.equal(report.options.randomInit, true);
    for (const k of ['AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'APmask', 'APmask50', 'APmask75']) assertPercent(report.metrics[k], k);
    assert.ok(Number.isFinite(report.metrics.finalLoss) && report.metrics.finalLoss > 0, `finalLoss ${report.metrics.finalLoss}`);
    assert.deepEqual([report.details.iterations, report.details.resumedAt], [4, 0]);
    assert.match(first.stderr, /detect: Mask R-CNN FPN on 8 train scenes \(\d+ classes\), 4 iterations of 2/);
    const file = reportFile(first.stderr, 'detect', report);
    // The fine-tune's resumable state lives in a folder named after the report.
    const state = join(file.replace(/\.json$/, ''), 'finetune.safetensors');
    assert.ok(existsSync(state), `${state} exists`);

    // The same command again: it finds the state at iteration 4 of 4, trains nothing, re-runs
    // precise BN and the evaluation, and reports what the first run did (catches a state that
    // is saved before the last step, or a resume that restores other weights).
    const second = selfsup(args);
    const again = JSON.parse(second.stdout);
    assert.match(second.stderr, new RegExp(`resume: .*finetune\\.safetensors at iteration 4 of 4`));
    assert.deepEqual([again.details.iterations, again.details.resumedAt], [4, 4]);
    assert.deepEqual(stableMetrics(again.metrics), stableMetrics(report.metrics));
    assert.equal(reportFile(second.stderr, 'detect', again), file, 'the same options give the same report file');

  });

  test('segment: the pretrained backbone, 4 iterations; mIoU and friends in [0, 100], report under <run>/eval/; a second run resumes', () => {
    const args = ['eval', 'segment', ...common];
    const first = selfsup(args);
    const report = JSON.parse(first.stdout);
    assert.equal(report.protocol, 'segment');
    assert.equal(report.checkpoint.randomInit, false);
    assert.match(report.checkpoint.sha256, /^[0-9a-f]{64}$/);
    assert.deepEqual(report.data, { name: `scenes ${scenes}`, trainImages: 8, testImages: 4 });
    for (const k of ['mIoU', 'fwIoU', 'mACC', 'pACC']) {
      const v = report.metrics[k];
      assert.ok(typeof v === 'number' && v >= 0 && v <= 100, `${k} = ${v}`);
    }
    assert.ok('background' in report.details.perClassIoU);
    assert.deepEqual([report.details.iterations, report.details.resumedAt], [4, 0]);
    const file = reportFile(first.stderr, 'segment', report);
    assert.ok(existsSync(join(file.replace(/\.json$/, ''), 'finetune.safetensors')));
    const second = selfsup(args);
    const again = JSON.parse(second.stdout);
    assert.deepEqual([again.details.iterations, again.details.resumedAt], [4, 4]);
    assert.deepEqual(stableMetrics(again.metrics), stableMetrics(report.metrics));
    // The human-readable table (no --json).
    const table = selfsup(args.filter((a) => a !== '--json'));
    assert.match(table.stdout, /semantic FPN fine-tuned 4 iterations on 8 scenes, tested on 4 \(supervised\)\n +mIoU +fwIoU +mACC +pACC\n/);
  });

  test('Ctrl-C during the fine-tune: the state is saved, the message says how to resume, and the exit code is 130', async () => {
    const evalDir = join(run, 'eval');
    const states = () =>
      existsSync(evalDir) ? readdirSync(evalDir).filter((d) => existsSync(join(evalDir, d, 'finetune.safetensors'))) : [];
    const before = new Set(states());
    // The first periodic save proves the loop (and its signal handler) is running.
    const { code, stderr } = await interruptWhen(
      [MAIN, 'eval', 'detect', '--checkpoint', run, '--scenes', scenes, '--iters', '5000', '--batch-size', '2', '--random-init', '--seed', '7', '--checkpoint-every', '10'],
      () => states().some((d) => !before.has(d)),
    );
    assert.equal(code, 130, stderr);
    assert.match(stderr, /detect: stopped \(SIGINT\) at iteration \d+ of 5000, state saved; run the same command again to resume/);
  });

  test('--scenes missing: exit 1 with a message naming scenes; an unknown folder is named too', () => {
    for (const protocol of ['detect', 'segment']) {
      const r = selfsup(['eval', protocol, '--checkpoint', run, '--random-init', '--iters', '1'], 1);
      assert.match(r.stderr, /scenes/, r.stderr);
      assert.equal(r.stdout, '');
    }
    const gone = join(dir, 'no-such-scenes');
    const r = selfsup(['eval', 'detect', '--checkpoint', run, '--random-init', '--scenes', gone, '--iters', '1'], 1);
    assert.ok(r.stderr.includes(gone), r.stderr);
  });
});
