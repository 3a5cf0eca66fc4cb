// The `selfsup` command in a child process: --help at every level, and the
// error paths of pretrain and eval (bad flag values, a bad YAML file, a
// resume without a checkpoint, a missing checkpoint), each exiting 1 with a
// message that names the flag, or the file and the key.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'selfsup-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function selfsup(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function fails(args: string[], pattern: RegExp): void {
  const r = selfsup(...args);
  assert.equal(r.status, 1, `selfsup ${args.join(' ')} should exit 1; stderr: ${r.stderr}`);
  assert.match(r.stderr, pattern);
  assert.equal(r.stdout.trim(), '', 'nothing on stdout');
}

describe('selfsup --help', () => {
  test('lists pretrain and eval; each level describes its flags with defaults and examples', () => {
    const top = selfsup('--help');
    assert.equal(top.status, 0);
    assert.match(top.stdout, /pretrain/);
    assert.match(top.stdout, /eval/);
    const pretrain = selfsup('pretrain', '--help');
    assert.match(pretrain.stdout, /--epochs <n> +epochs \(default: 5\)/);
    assert.match(pretrain.stdout, /Examples:/);
    const evaluation = selfsup('eval', '--help');
    assert.match(evaluation.stdout, /knn/);
    assert.match(evaluation.stdout, /linear/);
    assert.match(evaluation.stdout, /Examples:/);
    const knn = selfsup('eval', 'knn', '--help');
    assert.match(knn.stdout, /--k <n> +neighbours of the weighted protocol \(default: 200\)/);
    assert.match(knn.stdout, /--limit <n>/);
    assert.match(knn.stdout, /--json/);
    assert.match(selfsup('eval', 'linear', '--help').stdout, /--epochs <n> +epochs over the cached training features \(default: 30\)/);
  });
});

describe('selfsup pretrain errors', () => {
  test('bad flag values name the flag', () => {
    fails(['pretrain', '--epochs', 'abc', '--out', join(dir, 'a')], /option '--epochs <n>' argument 'abc' is invalid\. expected a positive integer/);
    fails(['pretrain', '--epochs', '0', '--out', join(dir, 'a')], /--epochs <n>' argument '0' is invalid/);
    fails(['pretrain', '--arch', 'vgg', '--out', join(dir, 'a')], /option '--arch <name>' argument 'vgg' is invalid\. Allowed choices are resnet18, resnet34, resnet50/);
    fails(['pretrain', '--dataset', 'imagenet', '--out', join(dir, 'a')], /--dataset: expected fashion-mnist, folder:PATH or objects:DIR/);
  });

  test('an unknown key in the YAML file names the key and the file', () => {
    const path = join(dir, 'run.yaml');
    writeFileSync(path, 'epochs: 1\nschedule:\n  warmup: 2\n');
    fails(['pretrain', '--config', path, '--out', join(dir, 'b')], new RegExp(`${path.replace(/[.]/g, '\\.')}: unknown key 'schedule\\.warmup'`));
  });

  test('--resume without a checkpoint in --out is a clear error', () => {
    fails(['pretrain', '--out', join(dir, 'empty'), '--resume'], /--resume: no checkpoint in .*empty \(looked for .*last\.safetensors\)/);
  });

  test('no --out anywhere', () => {
    fails(['pretrain', '--epochs', '1'], /out: Required \(set it with --out\)/);
  });
});

describe('selfsup eval errors', () => {
  test('a missing checkpoint, a run folder without one, a missing --checkpoint, a bad stage', () => {
    fails(['eval', 'knn', '--checkpoint', join(dir, 'nope.safetensors')], /--checkpoint: .*nope\.safetensors does not exist/);
    fails(['eval', 'linear', '--checkpoint', dir], /--checkpoint: the folder .* holds no last\.safetensors/);
    fails(['eval', 'knn'], /required option '--checkpoint <path>' not specified/);
    fails(['eval', 'knn', '--checkpoint', dir, '--stage', 'res9'], /option '--stage <name>' argument 'res9' is invalid/);
    fails(['eval', 'knn', '--checkpoint', dir, '--limit', '-3'], /option '--limit <n>' argument '-3' is invalid/);
  });

  test('a file that is not a checkpoint', () => {
    const path = join(dir, 'junk.safetensors');
    writeFileSync(path, 'not a checkpoint at all');
    fails(['eval', 'knn', '--checkpoint', path, '--backend', 'cpu'], /checkpoint .*junk\.safetensors/);
  });
});
