// The transfer benchmark's bookkeeping and report (bench/transfer_report.ts)
// and the row benchmarks' shared pieces (bench/rows.ts), without running a
// job: mean ± std, the noise floor, the gates, the ranking, the table, the
// job plan and when a job counts as done.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { benchmarksPageOf, forwardedArgs, replaceBlock, updateSummaryAndFull } from '../bench/rows.js';
import {
  checkGates,
  formatStat,
  jobId,
  jobState,
  meanStd,
  metricsTable,
  noiseFloor,
  parseJobId,
  planJobs,
  pooledStd,
  pretrainSeedFor,
  ranking,
  readJobResult,
  resultFile,
  rowStats,
  sameSettings,
  settingsChanges,
  summaryText,
  TRANSFER_ROWS,
  type Job,
  type RowStats,
} from '../bench/transfer_report.js';

const close = (a: number, b: number, eps = 1e-9) => assert.ok(Math.abs(a - b) < eps, `${a} vs ${b}`);

/** A RowStats whose AP^bb over seeds has exactly this mean and std (three seeds). */
function apRow(row: string, mean: number, std: number, extra: Partial<RowStats> = {}): RowStats {
  return { row, label: row, metrics: { AP: { mean, std, n: 3 } }, ...extra };
}

test('meanStd: sample standard deviation; one value has none; none is NaN', () => {
  const s = meanStd([2, 4, 4, 4, 5, 5, 7, 9]);
  close(s.mean, 5);
  close(s.std, Math.sqrt(32 / 7));
  assert.equal(s.n, 8);
  const one = meanStd([3]);
  assert.equal(one.mean, 3);
  assert.ok(Number.isNaN(one.std));
  assert.ok(Number.isNaN(meanStd([]).mean));
  assert.equal(formatStat(meanStd([10, 12, 14])), '12.0 ± 2.0');
  assert.equal(formatStat(one), '3.0');
  assert.equal(formatStat(undefined), '-');
  assert.equal(formatStat(meanStd([1.234, 1.234]), 2), '1.23 ± 0.00');
});

test('pooledStd weighs each row by its degrees of freedom and skips single-seed rows', () => {
  close(pooledStd([{ mean: 0, std: 1, n: 3 }, { mean: 0, std: 2, n: 2 }])!, Math.sqrt((2 * 1 + 1 * 4) / 3));
  assert.equal(pooledStd([{ mean: 1, std: Number.NaN, n: 1 }]), null);
  assert.equal(pooledStd([]), null);
  const noise = noiseFloor([apRow('a', 10, 1), apRow('b', 20, 1)]);
  close(noise.AP!, 1);
  assert.equal(noise.mIoU, null);
});

test('rowStats merges the protocols per seed and ignores COCO\'s -1 (no ground truth)', () => {
  const row = TRANSFER_ROWS.find((r) => r.name === 'mocov2')!;
  const stats = rowStats(row, [
    { AP: 10, AP50: 20, AP75: -1, APmask: 8, mIoU: 40 },
    { AP: 12, AP50: 22, AP75: -1, APmask: 9, mIoU: 42 },
    { AP: 14, AP50: 24, AP75: -1, APmask: 10 },
  ]);
  close(stats.metrics.AP!.mean, 12);
  close(stats.metrics.AP!.std, 2);
  assert.equal(stats.metrics.AP75, undefined);
  assert.equal(stats.metrics.mIoU!.n, 2);
  assert.equal(stats.label, 'MoCo v2');
});

test('gates: random init far below every pretrained row, supervised clearly above random init', () => {
  const noise = 1;
  // Bars: far 3 x 1 = 3 AP, clear 2 x 1 = 2 AP (min gap 1).
  const good = [apRow('supervised', 20, 1), apRow('random-init', 5, 1), apRow('mocov2', 15, 1), apRow('detco', 9, 1)];
  const gates = checkGates(good, noise);
  assert.deepEqual(gates.map((g) => g.status), ['PASS', 'PASS']);
  assert.match(gates[0]!.detail, /smallest gap 4\.00 \(detco\)/);

  // DetCo only 2.5 above random init: not "far" (3), though supervised still clears.
  const near = [apRow('supervised', 20, 1), apRow('random-init', 5, 1), apRow('detco', 7.5, 1)];
  const [far, clear] = checkGates(near, noise);
  assert.equal(far!.status, 'FAIL');
  assert.match(far!.detail, /detco \(\+2\.50\)/);
  assert.equal(clear!.status, 'PASS');

  // Supervised below random init fails both.
  assert.deepEqual(checkGates([apRow('supervised', 4, 1), apRow('random-init', 5, 1)], noise).map((g) => g.status), ['FAIL', 'FAIL']);
  // A bigger noise floor raises the bar.
  assert.deepEqual(checkGates(good, 3).map((g) => g.status), ['FAIL', 'PASS']);
  assert.deepEqual(checkGates(good, 8).map((g) => g.status), ['FAIL', 'FAIL']);
  // One seed: only the minimum gap (1 AP) counts.
  assert.deepEqual(checkGates([apRow('supervised', 6.5, 0), apRow('random-init', 5, 0)], null).map((g) => g.status), ['PASS', 'PASS']);
  assert.deepEqual(checkGates([apRow('supervised', 5.5, 0), apRow('random-init', 5, 0)], null, { far: 3, clear: 2, minGap: 1 }).map((g) => g.status), ['FAIL', 'FAIL']);
  // Missing rows: N/A, never PASS.
  assert.deepEqual(checkGates([apRow('supervised', 20, 1)], noise).map((g) => g.status), ['N/A', 'N/A']);
  assert.deepEqual(checkGates([apRow('random-init', 5, 1), apRow('mocov2', 15, 1)], noise).map((g) => g.status), ['PASS', 'N/A']);
});

test('ranking orders by AP^bb and joins rows within two standard errors with ≈', () => {
  const rows = [apRow('a', 10, 1), apRow('b', 12, 1), apRow('c', 11.5, 1), apRow('d', 3, 1)];
  // SE of a difference with n = 3 each: 1 * sqrt(2/3) = 0.816; 2 SE = 1.63.
  assert.equal(ranking(rows, 1), 'b 12.0 ≈ c 11.5 ≈ a 10.0 > d 3.0');
  assert.match(ranking(rows, null), /^b 12\.0 > c 11\.5 > a 10\.0 > d 3\.0 \(one seed/);
  assert.equal(ranking([], 1), 'no AP^bb results');
});

test('the table has one line per row with mean ± std, seeds, img/s and minutes per epoch', () => {
  const row = TRANSFER_ROWS.find((r) => r.name === 'detco')!;
  const stats = rowStats(row, [{ AP: 10, AP50: 20, AP75: 9, APmask: 8, mIoU: 40 }, { AP: 12, AP50: 22, AP75: 11, APmask: 10, mIoU: 44 }], {
    imagesPerSec: 3.456,
    minutesPerEpoch: 2.5,
  });
  const random = rowStats(TRANSFER_ROWS.find((r) => r.name === 'random-init')!, [{ AP: 1, mIoU: 20 }], { minutesPerEpoch: null });
  const lines = metricsTable([stats, random]).split('\n');
  assert.equal(lines[0], '| pretraining | AP^bb | AP50 | AP75 | AP^mk | mIoU | seeds | fine-tune img/s | pretrain min/epoch |');
  assert.equal(lines[1], '|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  assert.equal(lines[2], '| DetCo (HIC + CGLC) | 11.0 ± 1.4 | 21.0 ± 1.4 | 10.0 ± 1.4 | 9.0 ± 1.4 | 42.0 ± 2.8 | 2 | 3.5 | 2.50 |');
  assert.equal(lines[3], '| random init (no pretraining) | 1.0 | - | - | - | 20.0 | 1 | - | - |');
  // The README's summary keeps the metrics only.
  assert.deepEqual(metricsTable([stats, random], true).split('\n'), [
    '| pretraining | AP^bb | AP50 | AP75 | AP^mk | mIoU |',
    '|---|---:|---:|---:|---:|---:|',
    '| DetCo (HIC + CGLC) | 11.0 ± 1.4 | 21.0 ± 1.4 | 10.0 ± 1.4 | 9.0 ± 1.4 | 42.0 ± 2.8 |',
    '| random init (no pretraining) | 1.0 | - | - | - | 20.0 |',
  ]);
});

test('the plan runs the data, then the gate rows, pretraining each run once, random init after its supervised donor', () => {
  const jobs = planJobs({ rows: ['detco', 'random-init'], seeds: [0, 1], pretrainSeeds: [7], settings: ['full'], protocols: ['detect'] });
  assert.deepEqual(jobs.map(jobId), [
    'data',
    'pretrain:supervised:7',
    'eval:random-init:0:7:full:detect',
    'eval:random-init:1:7:full:detect',
    'pretrain:detco:7',
    'eval:detco:0:7:full:detect',
    'eval:detco:1:7:full:detect',
  ]);
  const all = planJobs({ rows: TRANSFER_ROWS.map((r) => r.name), seeds: [0, 1, 2], pretrainSeeds: [0, 1, 2], settings: ['full', 'low'], protocols: ['detect', 'segment'] });
  assert.equal(all.filter((j) => j.kind === 'pretrain').length, 5 * 3, 'five pretrained rows x three seeds, supervised once');
  assert.equal(all.filter((j) => j.kind === 'eval').length, 6 * 3 * 2 * 2);
  assert.deepEqual(all.slice(1, 3).map(jobId), ['pretrain:supervised:0', 'eval:supervised:0:0:full:detect']);
  assert.equal(pretrainSeedFor(2, [0, 1, 2], [5, 6]), 5);
  assert.throws(() => pretrainSeedFor(3, [0, 1, 2], [0]), /not among --seeds/);
  for (const job of all) assert.deepEqual(parseJobId(jobId(job)), job);
  assert.throws(() => parseJobId('eval:x:0:0:medium:detect'), /cannot read/);
});

test('a job is done only when its result records the same settings; other settings make it stale', () => {
  const out = mkdtempSync(join(tmpdir(), 'selfsup-bench-transfer-'));
  const job: Job = { kind: 'eval', row: 'mocov2', seed: 1, pretrainSeed: 1, setting: 'low', protocol: 'segment' };
  const file = resultFile(out, job);
  assert.equal(file, join(out, 'results', 'low', 'mocov2', 'seed-1-segment.json'));
  assert.equal(resultFile(out, { kind: 'pretrain', row: 'detco', seed: 2 }), join(out, 'pretrain', 'detco', 'seed-2.json'));
  const settings = { options: { iters: 10, scenes: '/s', trainLimit: 32 }, randomInit: false };
  assert.equal(jobState(readJobResult(file), settings), 'todo');
  mkdirSync(join(out, 'results', 'low', 'mocov2'), { recursive: true });
  // Key order does not matter; values do.
  writeFileSync(file, JSON.stringify({ job: jobId(job), settings: { randomInit: false, options: { trainLimit: 32, scenes: '/s', iters: 10 } }, finished: 'now' }));
  assert.equal(jobState(readJobResult(file), settings), 'done');
  assert.equal(jobState(readJobResult(file), { ...settings, options: { ...settings.options, iters: 20 } }), 'stale');
  assert.ok(sameSettings({ a: 1, b: undefined }, { a: 1 }));
  // What a replaced result reports: each changed leaf with its old and new value, nothing for equal ones.
  assert.deepEqual(settingsChanges(settings, { ...settings, options: { ...settings.options, iters: 20 } }), ['options.iters 10 -> 20']);
  assert.deepEqual(
    settingsChanges({ pretrain: { seed: 0, width: 16 }, extra: [1] }, { pretrain: { seed: 1, width: 16 }, tag: 'x' }),
    ['extra [1] -> (none)', 'pretrain.seed 0 -> 1', 'tag (none) -> "x"'],
  );
  assert.deepEqual(settingsChanges({ b: 2, a: 1 }, { a: 1, b: 2 }), []);
  writeFileSync(file, '{ truncated');
  assert.throws(() => readJobResult(file), /not a readable result.*delete it/);
});

test('children get the parent\'s flags less the dropped ones and --readme; README blocks are replaced between markers', () => {
  assert.deepEqual(forwardedArgs(['--quick', '--rows', 'a,b', '--readme', 'R.md', '--seeds=0,1', '--job=x', '--force'], ['--rows', '--job']), ['--quick', '--seeds=0,1', '--force']);
  assert.deepEqual(forwardedArgs(['--readme', '--quick'], []), ['--quick']);
  assert.equal(replaceBlock('a\n<!-- s -->\nold\n<!-- /s -->\nb\n', '<!-- s -->', '<!-- /s -->', 'new'), 'a\n<!-- s -->\nnew\n<!-- /s -->\nb\n');
  assert.throws(() => replaceBlock('no markers', '<!-- s -->', '<!-- /s -->', 'new', 'README.md'), /README\.md has no <!-- s --> \.\.\. <!-- \/s --> block/);
});

test('--readme writes the summary to the README and the full tables to docs/benchmarks.md beside it, or neither', () => {
  const dir = mkdtempSync(join(tmpdir(), 'selfsup-readme-'));
  const readme = join(dir, 'README.md');
  const page = join(dir, 'docs', 'benchmarks.md');
  assert.equal(benchmarksPageOf(readme), page);
  const marked = (body: string) => `top\n<!-- s -->\n${body}\n<!-- /s -->\nbottom\n`;
  writeFileSync(readme, marked('old summary'));
  // No docs page: an error naming it, and the README untouched.
  assert.throws(() => updateSummaryAndFull(readme, '<!-- s -->', '<!-- /s -->', 'short', 'long'), /docs\/benchmarks\.md does not exist/);
  assert.equal(readFileSync(readme, 'utf8'), marked('old summary'));
  mkdirSync(join(dir, 'docs'));
  writeFileSync(page, 'no block here\n');
  assert.throws(() => updateSummaryAndFull(readme, '<!-- s -->', '<!-- /s -->', 'short', 'long'), /benchmarks\.md has no <!-- s -->/);
  assert.equal(readFileSync(readme, 'utf8'), marked('old summary'));
  writeFileSync(page, marked('old full'));
  assert.deepEqual(updateSummaryAndFull(readme, '<!-- s -->', '<!-- /s -->', 'short', 'long'), [readme, page]);
  assert.equal(readFileSync(readme, 'utf8'), marked('short'));
  assert.equal(readFileSync(page, 'utf8'), marked('long'));
});

test("the README summary: the first setting's metrics table, every setting's gates, the other settings' rankings", () => {
  const rows = [apRow('supervised', 3, 0.1), apRow('random-init', 1, 0.2)];
  const text = summaryText('HEADER', [
    { title: 'full title', rows, gates: ['PASS [full] a'], ranking: 'supervised 3.0 > random-init 1.0' },
    { title: 'empty', rows: [], gates: [], ranking: '' },
    { title: 'low title', rows, gates: ['FAIL [low] b'], ranking: 'supervised 3.0 ≈ random-init 1.0' },
  ]);
  assert.deepEqual(text.split('\n'), [
    'HEADER',
    '',
    '**full title**',
    '',
    '| pretraining | AP^bb | AP50 | AP75 | AP^mk | mIoU |',
    '|---|---:|---:|---:|---:|---:|',
    '| supervised | 3.0 ± 0.1 | - | - | - | - |',
    '| random-init | 1.0 ± 0.2 | - | - | - | - |',
    '',
    '- PASS [full] a',
    '- FAIL [low] b',
    '',
    'Ranking by AP^bb, low title: supervised 3.0 ≈ random-init 1.0',
  ]);
  assert.equal(summaryText('HEADER', [{ title: 'x', rows: [], gates: [], ranking: '' }]), 'HEADER\n\nno results yet');
});
