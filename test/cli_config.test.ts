// src/cli/config_loader.ts: YAML file + flags -> RunConfig, and errors that
// name the flag, or the file and the key, of every bad value.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveRunConfig } from '../src/cli/config_loader.js';

const dir = mkdtempSync(join(tmpdir(), 'selfsup-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function yamlFile(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe('resolveRunConfig', () => {
  test("a method's own SGD learning rate applies only when the run sets no rate and no other optimizer", () => {
    const lr = (flags: Record<string, unknown>, file?: string) =>
      resolveRunConfig({ configPath: file, flags: { out: 'runs/x', ...flags } }).optimizer.lr;
    assert.equal(lr({ method: 'byol' }), 0.1);
    assert.equal(lr({ method: 'mocov2' }), 0.06);
    assert.equal(lr({ method: 'byol', lr: 0.3 }), 0.3);
    assert.equal(lr({ method: 'byol', optimizer: 'lars' }), 0.06);
    assert.equal(lr({ method: 'byol' }, yamlFile('byol.yaml', 'optimizer:\n  lr: 0.2\n')), 0.2);
    assert.equal(lr({}, yamlFile('byol-sgd.yaml', 'method: byol\noptimizer:\n  momentum: 0.8\n')), 0.1);
  });

  test("a method's own warm-up applies only when the run's schedule sets none", () => {
    const warmup = (flags: Record<string, unknown>, file?: string) =>
      resolveRunConfig({ configPath: file, flags: { out: 'runs/x', ...flags } }).schedule.warmupEpochs;
    assert.equal(warmup({ method: 'byol' }), 1);
    assert.equal(warmup({ method: 'byol', optimizer: 'lars' }), 1);
    assert.equal(warmup({ method: 'mocov2' }), 0);
    assert.equal(warmup({ method: 'byol' }, yamlFile('byol-warm.yaml', 'schedule:\n  warmupEpochs: 0\n')), 0);
    assert.equal(warmup({}, yamlFile('byol-step.yaml', 'method: byol\nschedule:\n  name: step\n')), 1);
  });

  test("a method's own schedule shape (DeepCluster's constant rate) applies only when the run names none", () => {
    const schedule = (flags: Record<string, unknown>, file?: string) =>
      resolveRunConfig({ configPath: file, flags: { out: 'runs/x', ...flags } }).schedule.name;
    assert.equal(schedule({ method: 'deepcluster' }), 'constant');
    assert.equal(schedule({ method: 'mocov2' }), 'cosine');
    assert.equal(schedule({ method: 'deepcluster' }, yamlFile('dc-cosine.yaml', 'schedule:\n  name: cosine\n')), 'cosine');
    assert.equal(schedule({}, yamlFile('dc-warm.yaml', 'method: deepcluster\nschedule:\n  warmupEpochs: 1\n')), 'constant');
  });

  test('flags given override the YAML file, which overrides the schema defaults', () => {
    const path = yamlFile('run.yaml', 'epochs: 7\nbatchSize: 64\noptimizer:\n  lr: 0.5\n  momentum: 0.8\nout: runs/from-file\n');
    const config = resolveRunConfig({ configPath: path, flags: { epochs: 2, lr: 0.1, width: 8, dataset: 'folder:/x', limit: undefined } });
    assert.equal(config.epochs, 2);
    assert.equal(config.batchSize, 64);
    assert.equal(config.optimizer.lr, 0.1);
    assert.equal(config.optimizer.momentum, 0.8, 'a flag replaces one key of a section, not the section');
    assert.equal(config.model.width, 8);
    assert.equal(config.dataset.name, 'folder:/x');
    assert.equal(config.dataset.limit, undefined);
    assert.equal(config.out, 'runs/from-file');
    assert.equal(config.schedule.name, 'cosine', 'defaults fill the rest');
  });

  test('a base (a resumed checkpoint\'s config) sits below the file and the flags', () => {
    const config = resolveRunConfig({ base: { out: 'runs/a', epochs: 9, seed: 4 }, flags: { epochs: 12 } });
    assert.equal(config.epochs, 12);
    assert.equal(config.seed, 4);
  });

  test('an unknown YAML key is named with its path and the file, with a camelCase hint', () => {
    const path = yamlFile('unknown.yaml', 'out: runs/x\nbatch_size: 64\noptimizer:\n  lerning_rate: 0.1\n');
    assert.throws(
      () => resolveRunConfig({ configPath: path }),
      (err: Error) => {
        assert.match(err.message, new RegExp(`${path.replace(/[.]/g, '\\.')}: unknown key 'batch_size' \\(keys are camelCase: 'batchSize' for 'batch_size'\\)`));
        assert.match(err.message, new RegExp(`${path.replace(/[.]/g, '\\.')}: unknown key 'optimizer\\.lerning_rate'`));
        return true;
      },
    );
  });

  test('a bad value in the file names the file and the key', () => {
    const path = yamlFile('bad.yaml', 'out: runs/x\nepochs: -1\nmodel:\n  arch: resnet99\n');
    assert.throws(() => resolveRunConfig({ configPath: path }), (err: Error) => {
      assert.match(err.message, new RegExp(`bad\\.yaml: epochs: Number must be greater than 0`));
      assert.match(err.message, /bad\.yaml: model\.arch: Invalid enum value/);
      return true;
    });
  });

  test('a bad flag value is reported against the flag', () => {
    assert.throws(() => resolveRunConfig({ flags: { out: 'runs/x', dataset: 'imagenet' } }), /--dataset: expected fashion-mnist, folder:PATH or objects:DIR/);
    assert.throws(() => resolveRunConfig({ flags: { out: 'runs/x', epochs: 0 } }), /--epochs: Number must be greater than 0/);
  });

  test('the method and its options are checked when the config is parsed, naming the key', () => {
    assert.throws(() => resolveRunConfig({ flags: { out: 'runs/x', method: 'mocov9' } }), /--method: unknown method 'mocov9'; choose one of .*detco.*mocov2/);
    const path = yamlFile('pirl.yaml', 'out: runs/x\nmethod: pirl\nmethodOptions:\n  lambda: 2\n  negative: 10\n');
    assert.throws(() => resolveRunConfig({ configPath: path }), (err: Error) => {
      assert.match(err.message, /pirl\.yaml: methodOptions\.lambda: Number must be less than or equal to 1 \(pirl\)/);
      assert.match(err.message, /pirl\.yaml: unknown key 'methodOptions\.negative'/);
      return true;
    });
    assert.throws(() => resolveRunConfig({ flags: { out: 'runs/x', method: 'supervised' }, base: { methodOptions: { dim: 3 } } }), /unknown key 'methodOptions\.dim'/);
  });

  test('a missing --out says how to give it', () => {
    assert.throws(() => resolveRunConfig({ flags: { epochs: 1 } }), /out: Required \(set it with --out\)/);
  });

  test('YAML syntax errors and a non-mapping file name the file', () => {
    assert.throws(() => resolveRunConfig({ configPath: yamlFile('syntax.yaml', 'epochs: [1, 2\n') }), /syntax\.yaml: not valid YAML/);
    assert.throws(() => resolveRunConfig({ configPath: yamlFile('list.yaml', '- 1\n- 2\n') }), /list\.yaml: expected a mapping of config keys at the top level, got a list/);
    assert.throws(() => resolveRunConfig({ configPath: join(dir, 'missing.yaml') }), /--config .*missing\.yaml: cannot read the file \(ENOENT\)/);
  });
});
