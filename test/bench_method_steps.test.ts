// The method-step benchmark (bench/method_steps.ts, `npm run bench -- --methods`)
// at a toy size: the selfsup side builds two methods as the trainer does and
// runs their steps without leaking tensors, the printed ratio lines have their
// fixed form, and (only where /usr/bin/python3 has torch) the PyTorch mirror
// builds the same number of parameters and runs a step.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import * as tf from '../src/core/tf.js';
import { useBackend } from '../src/backend/select.js';
import { buildMethodStep, detcoLine, pickMethods, ratioLine, type MethodRow } from '../bench/method_steps.js';
import { PytorchServer, pytorchUnavailable } from '../bench/pytorch_server.js';
import { repoRoot } from '../bench/rows.js';

const TINY = { width: 4, batch: 8, datasetSize: 64 };

test('method steps: two tiny methods build and step on native without leaking tensors', async () => {
  await useBackend('native');
  for (const name of ['simclr', 'mocov2']) {
    const run = buildMethodStep(name, TINY);
    try {
      assert.ok(Number.isFinite(run.step()), `${name}: first step`);
      // The first step creates the optimizer's momentum slots; later ones make nothing that survives.
      const before = tf.memory().numTensors;
      assert.ok(Number.isFinite(run.step()), `${name}: second step`);
      assert.equal(tf.memory().numTensors, before, `${name} leaks tensors`);
      assert.ok(run.parameters > 0);
      assert.deepEqual(run.pytorchSpec.inputs.view1, [8, 1, 32, 32]);
      assert.deepEqual(run.pytorchSpec.inputs.view2, [8, 1, 32, 32]);
      assert.equal(run.pytorchSpec.width, 4);
    } finally {
      run.dispose();
    }
  }
  const moco = buildMethodStep('mocov2', TINY);
  try {
    // Resolved options travel to PyTorch: MoCo v2's temperature is filled in.
    assert.equal(moco.pytorchSpec.options.temperature, 0.1);
    assert.equal(moco.pytorchSpec.options.queueLength, 4096);
  } finally {
    moco.dispose();
  }
});

test('method steps: pretext batches carry labels of the right size and classes', async () => {
  await useBackend('native');
  const run = buildMethodStep('relloc', { ...TINY, width: 2 });
  try {
    assert.deepEqual(run.pytorchSpec.inputs.relloc, [8 * 16, 1, 16, 16]); // 8 pairs of 16 px patches (half the 32 px view)
    assert.deepEqual(run.pytorchSpec.labels['relloc.label'], { size: 8 * 8, classes: 8 });
  } finally {
    run.dispose();
  }
});

test('method steps: ratio lines and method selection', () => {
  assert.equal(ratioLine('detco', 1.234), 'method/pytorch detco: 1.23x');
  assert.equal(ratioLine('swav', undefined), 'method/pytorch swav: n/a');
  const row = (method: string, ms: number): MethodRow => ({
    method, batch: 256, width: 16, viewsPerSample: 2, selfsup: { msPerStep: ms, stepsMs: [ms] }, pytorch: { skipped: 'x' }, peakRssMiB: 1,
  });
  assert.equal(detcoLine([row('mocov2', 400), row('detco', 1000)]), 'detco/mocov2 step: 2.50x');
  assert.equal(detcoLine([row('detco', 1000)]), 'detco/mocov2 step: n/a');
  assert.equal(pickMethods(undefined).length, 16);
  assert.deepEqual(pickMethods('detco, mocov2'), ['detco', 'mocov2']);
  assert.throws(() => pickMethods('detco,nosuch'), /--rows: unknown method 'nosuch'/);
});

test('method steps: the PyTorch mirror has our parameter counts and steps', { skip: pytorchUnavailable() }, async () => {
  await useBackend('native');
  const script = path.join(repoRoot(), 'bench', 'pytorch_methods.py');
  for (const name of ['detco', 'swav']) {
    const run = buildMethodStep(name, TINY);
    const server = new PytorchServer(script, run.pytorchSpec, run.pytorchSpec.batch);
    try {
      assert.equal(await server.ready(), run.parameters, `${name}: parameters`);
      const ms = await server.steps(1, 2);
      assert.equal(ms.length, 2);
      assert.ok(ms.every((x) => x > 0));
    } finally {
      server.close();
      run.dispose();
    }
  }
});
