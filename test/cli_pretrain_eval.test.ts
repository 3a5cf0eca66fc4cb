// `selfsup pretrain` then `selfsup eval knn|linear`, as a user runs them, in
// child processes: a YAML run file plus flags, a tiny supervised run on
// Fashion-MNIST, then both protocols with --json (the second from cached
// features), each writing its EvalReport under the run folder; Ctrl-C during
// pretrain keeps a checkpoint and exits 130.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { interruptWhen } from './helpers.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'selfsup-e2e-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function selfsup(...args: string[]) {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `selfsup ${args.join(' ')} failed:\n${r.stderr}`);
  return r;
}

test('pretrain (YAML + flags) -> eval knn -> eval linear from cached features', () => {
  const out = join(dir, 'run');
  const config = join(dir, 'run.yaml');
  writeFileSync(config, 'method: supervised\nmodel:\n  width: 4\nonlineKnn:\n  every: 0\nworkers: 0\nepochs: 3\n');
  const trained = JSON.parse(selfsup('pretrain', '--config', config, '--epochs', '1', '--limit', '64', '--batch-size', '32', '--out', out, '--json').stdout);
  assert.equal(trained.epochs, 1, '--epochs overrides the file');
  assert.equal(trained.steps, 2);
  assert.ok(existsSync(join(out, 'last.safetensors')));

  const knnRun = selfsup('eval', 'knn', '--checkpoint', out, '--limit', '300', '--test-limit', '200', '--json');
  const knn = JSON.parse(knnRun.stdout);
  assert.equal(knn.protocol, 'knn');
  assert.equal(knn.checkpoint.path, join(out, 'last.safetensors'));
  assert.match(knn.checkpoint.sha256, /^[0-9a-f]{64}$/);
  assert.equal(knn.checkpoint.method, 'supervised');
  assert.deepEqual(knn.data, { name: 'fashion-mnist', trainImages: 300, testImages: 200, stage: 'res5', dim: 32 }, 'res5 of a width-4 ResNet-18');
  assert.equal(knn.options.k, 200);
  assert.equal(knn.options.majorityK, 20);
  assert.equal(knn.details.weighted.top1, knn.metrics.top1);
  for (const v of [knn.metrics.top1, knn.metrics.majorityTop1]) assert.ok(v > 20 && v <= 100, `kNN top-1 ${v} beats chance`);
  assert.match(knnRun.stderr, /train: 300 images, res5 features extracted/);
  // The report is written atomically under the run folder, and --json printed the same object.
  const reportFile = knnRun.stderr.match(/report: (.+\.json)\n/)?.[1];
  assert.ok(reportFile && reportFile.startsWith(join(out, 'eval', 'knn-')), knnRun.stderr);
  assert.deepEqual(JSON.parse(readFileSync(reportFile, 'utf8')), knn);

  const linearRun = selfsup('eval', 'linear', '--checkpoint', join(out, 'last.safetensors'), '--limit', '300', '--test-limit', '200', '--epochs', '3', '--json');
  const linear = JSON.parse(linearRun.stdout);
  assert.equal(linear.protocol, 'linear');
  assert.equal(linear.options.epochs, 3);
  assert.ok(linear.metrics.top1 > 20 && linear.metrics.top1 <= 100 && linear.metrics.top5 >= linear.metrics.top1, JSON.stringify(linear));
  assert.match(linearRun.stderr, /train: 300 images, res5 features from the cache/);
  assert.equal(readdirSync(join(out, 'features')).length, 2);

  // --random-init: the same architecture before training, with features cached apart from the trained ones.
  const initRun = selfsup('eval', 'knn', '--checkpoint', out, '--limit', '300', '--test-limit', '200', '--random-init', '--json');
  const init = JSON.parse(initRun.stdout);
  assert.match(initRun.stderr, /train: 300 images, res5 features extracted/);
  assert.equal(init.checkpoint.randomInit, true);
  assert.equal(init.checkpoint.sha256, null);
  assert.notDeepEqual(init.metrics, knn.metrics);
  assert.equal(readdirSync(join(out, 'features')).length, 4);
  assert.equal(readdirSync(join(out, 'eval')).length, 3, 'one report per protocol and option set');

  const table = selfsup('eval', 'knn', '--checkpoint', out, '--limit', '300', '--test-limit', '200', '--stage', 'res4');
  assert.match(table.stdout, /kNN on res4 \(16-d\), 300 train -> 200 test images\nprotocol +top-1 +top-5\nk=200 weighted, T=0\.1 +\d+\.\d\d +\d+\.\d\d\nk=20 majority +\d+\.\d\d +\d+\.\d\d\n/);
});

test('Ctrl-C during pretrain: a checkpoint, the summary, and exit code 130 (so `pretrain && eval` stops)', async () => {
  const out = join(dir, 'interrupted');
  const config = join(dir, 'long.yaml');
  writeFileSync(config, 'method: supervised\nmodel:\n  width: 4\nonlineKnn:\n  every: 0\nworkers: 0\n');
  // The first epoch's checkpoint proves the loop (and its signal handler) is running.
  const { code, stdout, stderr } = await interruptWhen(
    [MAIN, 'pretrain', '--config', config, '--epochs', '10000', '--limit', '64', '--batch-size', '32', '--out', out, '--quiet'],
    () => existsSync(join(out, 'last.safetensors')),
  );
  assert.equal(code, 130, stderr);
  assert.match(stdout, /^stopped early after \d+ epochs/);
  assert.ok(existsSync(join(out, 'last.safetensors')));
});
