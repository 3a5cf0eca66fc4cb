// The methods benchmark script end to end at a toy size: rows train, are
// scored, written as JSON, skipped when present, and rendered into a README
// summary and a full table in docs/benchmarks.md.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

const SCRIPT = new URL('../bench/methods.js', import.meta.url).pathname;

function bench(args: string[]) {
  const r = spawnSync(process.execPath, [SCRIPT, ...args], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('bench:methods trains, scores and tabulates rows, skips finished ones and rewrites the README block', () => {
  const dir = mkdtempSync(join(tmpdir(), 'selfsup-bench-methods-'));
  const out = join(dir, 'runs');
  const readme = join(dir, 'README.md');
  const page = join(dir, 'docs', 'benchmarks.md');
  writeFileSync(readme, 'before\n<!-- bench-methods -->\nold table\n<!-- /bench-methods -->\nafter\n');
  mkdirSync(join(dir, 'docs'));
  writeFileSync(page, 'page\n<!-- bench-methods -->\nold full table\n<!-- /bench-methods -->\nend\n');
  const toy = ['--limit', '512', '--epochs', '1', '--batch-size', '128', '--width', '4', '--workers', '0', '--out', out];

  const first = bench(['--rows', 'supervised,random-init', ...toy, '--readme', readme]);
  assert.equal(first.code, 0, first.stderr);
  // The trained row runs in a child process; its log reaches our stderr.
  assert.match(first.stderr, /== supervised \(labels\)/);
  for (const row of ['supervised', 'random-init']) {
    const result = JSON.parse(readFileSync(join(out, `${row}.json`), 'utf8'));
    assert.ok(result.knnTop1 > 15 && result.knnTop1 <= 100, `${row} kNN top-1 ${result.knnTop1}`);
    assert.ok(result.linearTop1 > 15 && result.linearTop1 <= 100, `${row} linear top-1 ${result.linearTop1}`);
  }
  assert.ok(existsSync(join(out, 'supervised', 'last.safetensors')));
  assert.match(first.stdout, /\| supervised \(labels\) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|/);
  assert.match(first.stdout, /\| random initialisation \(no training\) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| - \| - \|/);
  // The README gets the summary (top-1, two rows a line), docs/benchmarks.md the full table.
  const text = readFileSync(readme, 'utf8');
  assert.ok(text.startsWith('before\n<!-- bench-methods -->\nRes5 top-1 %') && text.endsWith('<!-- /bench-methods -->\nafter\n'), text);
  assert.match(text, /\n\| supervised \(labels\) \| [\d.]+ \| [\d.]+ \| random initialisation \(no training\) \| [\d.]+ \| [\d.]+ \|\n/);
  assert.doesNotMatch(text, /old table/);
  const full = readFileSync(page, 'utf8');
  assert.ok(full.startsWith('page\n<!-- bench-methods -->\nResNet-18 width 4') && full.endsWith('<!-- /bench-methods -->\nend\n'), full);
  assert.match(full, /\| random initialisation \(no training\) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| - \| - \|/);

  const again = bench(['--rows', 'supervised', ...toy]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /supervised: result present .* skipped/);

  // --force trains afresh: a resumed finished run would log no step at all.
  const forced = bench(['--rows', 'supervised', '--force', ...toy]);
  assert.equal(forced.code, 0, forced.stderr);
  assert.doesNotMatch(forced.stderr, /result present/);
  const steps = readFileSync(join(out, 'supervised', 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.includes('"kind":"step"'));
  assert.equal(steps.length, 4, 'one epoch of 512 images at batch 128, logged once');

  const bad = bench(['--rows', 'supervised,nosuch', ...toy]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--rows: unknown row 'nosuch'/);
});
