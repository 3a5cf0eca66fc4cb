// The trainer end to end on the native backend: resume equivalence, flat
// tensor count, NaN stop, and a tiny supervised run whose kNN accuracy beats
// the same network at random initialisation.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as tf from '../src/core/tf.js';
import { useBackend } from '../src/backend/select.js';
import { NonFiniteFeaturesError, estimateBatchNormStatistics, extractFeatures } from '../src/eval/features.js';
import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { Supervised, defineMethod, methodSpec, registerMethod, type Method, type MethodContext, type StepContext, type TensorBatch } from '../src/methods/index.js';
import { parseRunConfig, type RunConfig } from '../src/train/config.js';
import { readCheckpoint, restoreMethod } from '../src/io/checkpoint.js';
import { loadTestSet, loadTrainingSet } from '../src/data/dataset_config.js';
import { MetricsLog, type EpochMetrics, type StepMetrics } from '../src/train/metrics.js';
import { OnlineKnn } from '../src/train/online_knn.js';
import { NonFiniteLossError, NonFiniteStateError, train } from '../src/train/trainer.js';
import { bufferValues, interruptAfter } from './helpers.js';
import { fashionMethod } from './method_runs.js';

await useBackend('native');

const fresh = (name: string) => join(mkdtempSync(join(tmpdir(), `selfsup-${name}-`)), 'run');

/** ResNet-18 at width 4 on 64 images, batches of 16, 2 epochs: 8 steps. */
function tinyConfig(out: string, over: Record<string, unknown> = {}): RunConfig {
  return parseRunConfig({
    out,
    backend: 'native',
    workers: 0,
    epochs: 2,
    batchSize: 16,
    dataset: { limit: 64 },
    model: { width: 4 },
    optimizer: { lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 5e-4 },
    schedule: { warmupEpochs: 0.5 },
    onlineKnn: { trainSamples: 64, testSamples: 32, k: 5 },
    ...over,
  });
}

const stepLosses = (out: string) =>
  new MetricsLog(join(out, 'metrics.jsonl'))
    .read()
    .filter((l): l is StepMetrics => l.kind === 'step')
    .map((l) => [l.step, l.loss, l.lr]);

test('an interrupted and resumed run takes the same steps as an uninterrupted one; tensor count stays flat', async () => {
  const outA = fresh('straight');
  const counts: number[] = [];
  const a = await train(tinyConfig(outA), { quiet: true, log: () => undefined, onStep: () => counts.push(tf.memory().numTensors) });
  assert.equal(a.steps, 8);
  assert.equal(a.epochs, 2);
  assert.equal(a.stoppedEarly, false);
  assert.equal(counts.length, 8);
  assert.ok(counts.every((c) => c === counts[0]), `live tensors per step: ${counts.join(' ')}`);

  // Stop mid-epoch (after step 2 of 4 in epoch 1), as Ctrl-C would, then resume.
  const outB = fresh('resumed');
  const controller = new AbortController();
  const b1 = await train(tinyConfig(outB), {
    quiet: true,
    log: () => undefined,
    signal: controller.signal,
    onStep: (s) => s.step === 2 && controller.abort(),
  });
  assert.equal(b1.stoppedEarly, true);
  assert.equal(b1.steps, 3);
  assert.deepEqual(readCheckpoint(b1.checkpoint).state.position, { step: 3, epoch: 0, batch: 3 });
  const messages: string[] = [];
  const b2 = await train(tinyConfig(outB), { resume: true, quiet: true, log: (m) => messages.push(m) });
  assert.ok(messages.some((m) => /resume: .* at step 3 \(epoch 1, batch 3\)/.test(m)), messages.join('\n'));
  assert.equal(b2.steps, 8);

  assert.deepEqual(stepLosses(outB), stepLosses(outA), 'the same losses and rates, bitwise');
  const untimed = (ms: EpochMetrics[]) => ms.map(({ imagesPerSec: _r, seconds: _s, ...m }) => m);
  assert.deepEqual(untimed(b2.metrics), untimed(a.metrics), 'the same epoch means and online kNN');
  const final = (out: string) => readCheckpoint(join(out, 'last.safetensors'));
  const [ca, cb] = [final(outA), final(outB)];
  for (const name of Object.keys(ca.model)) assert.deepEqual(cb.model[name]!.data, ca.model[name]!.data, name);
  for (const name of Object.keys(ca.optimizer)) assert.deepEqual(cb.optimizer[name]!.data, ca.optimizer[name]!.data, name);
  assert.ok(readFileSync(join(outB, 'config.yaml'), 'utf8').includes('method: supervised'));

  assert.equal(process.listenerCount('SIGINT'), 0, 'signal handlers live only during train()');
  await assert.rejects(train(tinyConfig(outA), { quiet: true, log: () => undefined }), /already holds a run/);
  await assert.rejects(train(tinyConfig(fresh('none')), { resume: true, quiet: true }), /no run to resume/);
  await assert.rejects(
    train(tinyConfig(outA, { model: { width: 8 } }), { resume: true, quiet: true }),
    /holds a resnet18 width 4 cifar stem, this run builds a resnet18 width 8/,
  );
});

test('preciseBn: the last epoch leaves BN statistics re-estimated on whole training images; with 0, training\'s own', async () => {
  const reestimatedChange = async (images: number) => {
    const config = tinyConfig(fresh(`precise-${images}`), { onlineKnn: { every: 0 }, preciseBn: { images } });
    const result = await train(config, { quiet: true, log: () => undefined });
    const method = fashionMethod(config);
    try {
      restoreMethod(readCheckpoint(result.checkpoint), method);
      const saved = bufferValues(method.backbone).flat();
      estimateBatchNormStatistics(method.backbone, await loadTrainingSet(config.dataset), { size: 32, batchSize: 16, limit: 32 });
      return Math.max(...bufferValues(method.backbone).flat().map((v, i) => Math.abs(v - saved[i]!)));
    } finally {
      method.dispose();
    }
  };
  const on = await reestimatedChange(32);
  const off = await reestimatedChange(0);
  assert.ok(on < 1e-5, `re-estimating the saved statistics again moved them by ${on}`);
  assert.ok(off > 1e-2, `training's running averages should differ from whole-image statistics (by ${off})`);
});

test('a NaN loss stops training, names the step and keeps the last good checkpoint', async () => {
  // The faulty method is handed to the trainer directly: a supervised model whose loss turns NaN at step 5.
  const nanAtStep5 = (ctx: MethodContext): Method => {
    const method: Method = new Supervised(ctx);
    const loss = method.loss.bind(method);
    method.loss = (batch: TensorBatch, step: StepContext) => {
      const out = loss(batch, step);
      return step.step === 5 ? { loss: tf.mul(out.loss, NaN), terms: {} } : out;
    };
    return method;
  };
  const out = fresh('nan');
  const config = tinyConfig(out, { checkpoint: { everySteps: 2 }, onlineKnn: { every: 0 } });
  const messages: string[] = [];
  await assert.rejects(train(config, { quiet: true, log: (m) => messages.push(m), method: nanAtStep5 }), (e: Error) => {
    assert.ok(e instanceof NonFiniteLossError);
    assert.equal(e.step, 5);
    assert.match(e.message, /loss is NaN at step 5 \(epoch 2, batch 1\)/);
    assert.match(e.message, /last good checkpoint, .*last.safetensors \(step 4\), is kept/);
    return true;
  });
  assert.ok(messages.some((m) => m.includes('loss is NaN at step 5')));
  const ckpt = readCheckpoint(join(out, 'last.safetensors'));
  assert.equal(ckpt.state.position.step, 4);
  for (const [name, t] of Object.entries(ckpt.model)) assert.ok(t.data.every((v) => Number.isFinite(v)), name);
  assert.equal(existsSync(join(out, 'metrics.jsonl')), true);
});

test('a diverging run stops at the first non-finite gradient or state tensor, names the step and tensor, and keeps a finite checkpoint', async () => {
  // lr 1e30 blows the weights up at once; lr 300 keeps the loss finite while BN running variances overflow.
  for (const lr of [1e30, 300]) {
    const out = fresh(`diverge-${lr}`);
    const config = tinyConfig(out, { optimizer: { lr }, checkpoint: { everySteps: 1 }, onlineKnn: { every: 0 } });
    const messages: string[] = [];
    await assert.rejects(train(config, { quiet: true, log: (m) => messages.push(m) }), (e: Error) => {
      assert.ok(e instanceof NonFiniteLossError, `callers catching the loss error catch this too: ${e.message}`);
      if (!(e instanceof NonFiniteStateError)) assert.fail(`lr ${lr}: ${e.message}`);
      assert.match(e.tensor, /backbone\.|classifier\./);
      assert.ok(e.message.includes(e.tensor) && e.message.includes(`step ${e.step} (epoch`), e.message);
      assert.match(e.message, new RegExp(`last good checkpoint, .*last.safetensors \\(step ${e.step}\\), is kept`));
      return true;
    });
    assert.ok(messages.some((m) => m.includes('training stopped')), messages.join('\n'));
    const ckpt = readCheckpoint(join(out, 'last.safetensors'));
    for (const [name, t] of Object.entries({ ...ckpt.model, ...ckpt.optimizer })) assert.ok(t.data.every((v) => Number.isFinite(v)), `lr ${lr}: ${name}`);
  }
});

test('extractFeatures refuses a backbone whose features are not finite', async () => {
  const config = tinyConfig(fresh('nan-features'));
  const method = fashionMethod(config);
  try {
    const images = await loadTrainingSet({ ...config.dataset, limit: 8 });
    const { features } = await extractFeatures(method.backbone, images, { size: 32, batchSize: 4 });
    assert.ok(features.every(Number.isFinite));
    const w = method.backbone.stateDict()['layer2.0.conv1.weight']!;
    (w as tf.Variable).assign(tf.fill(w.shape, NaN));
    await assert.rejects(extractFeatures(method.backbone, images, { size: 32, batchSize: 4, stage: 'res4' }), (e: Error) => {
      assert.ok(e instanceof NonFiniteFeaturesError);
      assert.match(e.message, /res4 features are not finite \(NaN at image 0, channel 0\): its weights or BN statistics diverged/);
      return true;
    });
  } finally {
    method.dispose();
  }
});

test('--resume with more epochs says how the learning-rate schedule changes, with the rates', async () => {
  const out = fresh('extend');
  await train(tinyConfig(out, { epochs: 1, onlineKnn: { every: 0 } }), { quiet: true, log: () => undefined });
  const messages: string[] = [];
  await train(tinyConfig(out, { epochs: 2, onlineKnn: { every: 0 } }), { resume: true, quiet: true, log: (m) => messages.push(m) });
  const lr = new Map(stepLosses(out).map(([step, , rate]) => [step, rate!]));
  const expected = `resume: extending the run from 1 to 2 epochs: the learning-rate schedule now spans 2 epochs, so the rate goes from ${lr.get(3)!.toFixed(4)} (last step) to ${lr.get(4)!.toFixed(4)} at step 4`;
  assert.ok(messages.includes(expected), `expected\n${expected}\nin\n${messages.join('\n')}`);
  assert.ok(lr.get(4)! > lr.get(3)!, `the rate jumps back up: ${[...lr].join(' ')}`);
  const same: string[] = [];
  await train(tinyConfig(out, { epochs: 2, onlineKnn: { every: 0 } }), { resume: true, quiet: true, log: (m) => same.push(m) });
  assert.ok(!same.some((m) => m.includes('learning-rate schedule')), 'same length: no message');
});

test('a tiny supervised run on Fashion-MNIST: the loss falls and kNN beats random initialisation', async () => {
  const out = fresh('supervised');
  const config = parseRunConfig({
    out,
    backend: 'native',
    workers: 0,
    epochs: 3,
    batchSize: 64,
    dataset: { limit: 2048 },
    model: { width: 8 },
    optimizer: { lr: 0.2 },
    onlineKnn: { every: 3, trainSamples: 1000, testSamples: 1000, k: 20 },
  });
  const started = performance.now();
  const result = await train(config, { quiet: true, log: () => undefined });
  const seconds = (performance.now() - started) / 1000;
  const [first, , last] = result.metrics;
  assert.ok(last!.loss < first!.loss - 0.3, `epoch losses ${result.metrics.map((m) => m.loss.toFixed(3)).join(' ')}`);
  assert.ok(last!.loss < Math.log(10), 'below chance-level cross-entropy');
  const trained = last!.knn!.top1;

  const trainSet = await loadTrainingSet(config.dataset);
  const knn = OnlineKnn.fromConfig(config, trainSet, loadTestSet(config.dataset, 1000), 10) as OnlineKnn;
  const random = fashionMethod(config);
  const baseline = (await knn.evaluate(random.backbone)).top1;
  random.dispose();
  console.log(`# supervised tiny run: ${result.steps} steps in ${seconds.toFixed(1)} s; kNN top-1 ${trained}% vs ${baseline}% at random init`);
  assert.ok(trained > baseline + 3, `kNN top-1 ${trained}% trained vs ${baseline}% at random initialisation`);
});

test('SIGINT stops a training process after writing a checkpoint, and it exits normally', async () => {
  const out = fresh('sigint');
  const trainer = JSON.stringify(fileURLToPath(new URL('../src/train/trainer.js', import.meta.url)));
  const configJs = JSON.stringify(fileURLToPath(new URL('../src/train/config.js', import.meta.url)));
  const config = JSON.stringify(tinyConfig(out, { epochs: 50, onlineKnn: { every: 0 } }));
  const script = `
    import { train } from ${trainer};
    import { parseRunConfig } from ${configJs};
    const r = await train(parseRunConfig(${config}), { quiet: true, log: () => undefined, onStep: (s) => s.step === 1 && process.stdout.write('step\\n') });
    process.stdout.write(JSON.stringify(r));`;
  const { code, rest } = await interruptAfter(script, 'step\n');
  assert.equal(code, 0);
  const result = JSON.parse(rest) as { stoppedEarly: boolean; steps: number };
  assert.equal(result.stoppedEarly, true);
  assert.ok(result.steps >= 2 && result.steps < 400, `stopped after ${result.steps} steps`);
  assert.equal(readCheckpoint(join(out, 'last.safetensors')).state.position.step, result.steps);
});

test('a run records its resolved method options, so --resume rebuilds what ran after a default changes', async () => {
  // A variant of InsDis whose embedding size default can be changed between the run and its resume.
  const insdis = methodSpec('insdis');
  const withDefaultDim = (dim: number) =>
    defineMethod({ ...insdis, names: ['insdis-dim'], options: (insdis.options as z.AnyZodObject).extend({ dim: z.number().int().positive().default(dim) }).strict() });
  registerMethod(withDefaultDim(16));
  const out = fresh('resolved');
  const config = (epochs: number) => tinyConfig(out, { method: 'insdis-dim', epochs, onlineKnn: { every: 0 }, preciseBn: { images: 0 } });
  await train(config(1), { quiet: true, log: () => undefined });
  const recorded = (parseYaml(readFileSync(join(out, 'config.yaml'), 'utf8')) as { methodOptions: Record<string, unknown> }).methodOptions;
  assert.deepEqual(recorded, { dim: 16, temperature: 0.2, negatives: 4096, bankMomentum: 0.9, headBatchNorm: true, bankSize: 64 });
  assert.deepEqual(readCheckpoint(join(out, 'last.safetensors')).state.config.methodOptions, recorded);

  registerMethod(withDefaultDim(32)); // the default changes
  const messages: string[] = [];
  const resumed = await train(config(2), { resume: true, quiet: true, log: (m) => messages.push(m) });
  assert.equal(resumed.epochs, 2, messages.join('\n'));
  const ckpt = readCheckpoint(resumed.checkpoint);
  assert.deepEqual(ckpt.model['head.fc0.weight']!.shape, [32, 16], 'the embedding is still the 16-d one the run started with');
  assert.equal((ckpt.state.config.methodOptions as Record<string, unknown>).dim, 16);
  // A fresh run takes the new default.
  const other = fresh('resolved-new');
  await train(tinyConfig(other, { method: 'insdis-dim', epochs: 1, onlineKnn: { every: 0 }, preciseBn: { images: 0 } }), { quiet: true, log: () => undefined });
  assert.deepEqual(readCheckpoint(join(other, 'last.safetensors')).model['head.fc0.weight']!.shape, [32, 32]);
});

test('method hooks: onEpochStart and beforeStep are called in order, and transformGradients can hold parameters still', async () => {
  const calls: string[] = [];
  let classifierBefore: number[] = [];
  let stemBefore: number[] = [];
  const build = (ctx: MethodContext): Method => {
    const method = new Supervised(ctx);
    classifierBefore = Array.from(method.classifier.weight.dataSync());
    stemBefore = Array.from(method.stateDict()['backbone.conv1.weight']!.dataSync());
    method.onEpochStart = (epoch) => void calls.push(`epoch ${epoch}`);
    method.beforeStep = (step) => void calls.push(`step ${step.step}`);
    method.transformGradients = (grads) => {
      // Gradients are keyed by the variables' names; a method finds its own parameters' there.
      const names = [method.classifier.weight.name, method.classifier.bias!.name];
      assert.ok(names.every((n) => grads[n] !== undefined), `the classifier's gradients are among ${Object.keys(grads).length}`);
      return { ...grads, ...Object.fromEntries(names.map((n) => [n, tf.zerosLike(grads[n]!)])) };
    };
    return method;
  };
  const out = fresh('hooks');
  const config = tinyConfig(out, { onlineKnn: { every: 0 }, optimizer: { lr: 0.05, momentum: 0.9, weightDecay: 0 } });
  const counts: number[] = [];
  await train(config, { quiet: true, log: () => undefined, method: build, onStep: () => counts.push(tf.memory().numTensors) });
  assert.deepEqual(calls, ['epoch 0', 'step 0', 'step 1', 'step 2', 'step 3', 'epoch 1', 'step 4', 'step 5', 'step 6', 'step 7']);
  assert.ok(counts.every((c) => c === counts[0]), `replaced gradients are freed: live tensors per step ${counts.join(' ')}`);
  const ckpt = readCheckpoint(join(out, 'last.safetensors'));
  assert.deepEqual(Array.from(ckpt.model['classifier.weight']!.data), classifierBefore, 'zero gradients, no decay: the classifier did not move');
  assert.notDeepEqual(Array.from(ckpt.model['backbone.conv1.weight']!.data), stemBefore, 'the backbone trained');
});
