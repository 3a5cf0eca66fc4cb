// src/nn: naming and counts against torchvision, stage shapes, state dicts,
// batch-norm statistics, parameter groups and init options. All on the pure-JS
// cpu backend with tiny widths, so the file runs in seconds.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '../src/core/tf.js';
import type { Tensor, Tensor2D, Tensor4D, Variable } from '@tensorflow/tfjs-core';
import { BatchNorm2d, Conv2d, ConvNet, estimateRunningStats, MLP, ResNet, withRunningStatsFrozen, type Module } from '../src/nn/index.js';
import { assertClose, bufferValues, randomTensor } from './helpers.js';

before(async () => {
  await tf.setBackend('cpu');
});

const values = (t: Tensor) => Array.from(t.dataSync());
const namesOf = (m: Module) => m.namedParameters().map(([n]) => n);

function nameIndex(m: Module): Map<Variable, string> {
  return new Map(m.namedParameters().map(([n, v]) => [v, n]));
}

describe('ResNet parameters', () => {
  test('ResNet-18, CIFAR stem, width 64, 10 classes: torchvision names and 11,173,962 parameters', () => {
    // torchvision resnet18(num_classes=10) has 11,181,642; the CIFAR stem's 3x3x3x64
    // conv1 replaces the 7x7x3x64 one: 11,181,642 - 9,408 + 1,728.
    const model = new ResNet({ stem: 'cifar', width: 64, inChannels: 3, numClasses: 10 });
    try {
      assert.equal(model.numParameters(), 11_173_962);
      assert.equal(model.parameters().length, 62);
      assert.equal(model.namedBuffers().length, 40);
      const names = namesOf(model);
      assert.deepEqual(names.slice(0, 4), ['conv1.weight', 'bn1.weight', 'bn1.bias', 'layer1.0.conv1.weight']);
      for (const n of ['layer2.0.downsample.0.weight', 'layer2.0.downsample.1.bias', 'layer4.1.bn2.weight', 'fc.weight', 'fc.bias']) {
        assert.ok(names.includes(n), n);
      }
      assert.ok(!names.includes('layer1.0.downsample.0.weight'), 'layer1 keeps the identity shortcut');
      const state = model.stateDict();
      assert.deepEqual(state['conv1.weight']!.shape, [3, 3, 3, 64], 'conv weights are HWIO');
      assert.deepEqual(state['fc.weight']!.shape, [512, 10], 'linear weights are [in, out]');
      assert.ok('layer3.1.bn1.running_var' in state);
    } finally {
      model.dispose();
    }
  });

  test('ResNet-50, ImageNet stem: torchvision count 25,557,032', () => {
    const model = new ResNet({ depth: 50, stem: 'imagenet', numClasses: 1000 });
    try {
      assert.equal(model.numParameters(), 25_557_032);
      assert.equal(model.featureDim, 2048);
      assert.ok(namesOf(model).includes('layer4.2.conv3.weight'));
    } finally {
      model.dispose();
    }
  });

  test('width multiplier and input channels', () => {
    const model = new ResNet({ stem: 'cifar', width: 16, inChannels: 1 });
    try {
      assert.deepEqual(model.channels, { stem: 16, res2: 16, res3: 32, res4: 64, res5: 128 });
      assert.deepEqual(model.stateDict()['conv1.weight']!.shape, [3, 3, 1, 16]);
      assert.ok(!namesOf(model).some((n) => n.startsWith('fc.')), 'no classifier without numClasses');
    } finally {
      model.dispose();
    }
  });

  test('the same seed gives the same weights, another seed others; conv init is Kaiming fan-out', () => {
    const a = new ResNet({ stem: 'cifar', width: 16, seed: 3 });
    const b = new ResNet({ stem: 'cifar', width: 16, seed: 3 });
    const c = new ResNet({ stem: 'cifar', width: 16, seed: 4 });
    try {
      const w = (m: ResNet) => m.stateDict()['layer3.0.conv2.weight']!;
      assert.deepEqual(values(w(a)), values(w(b)));
      assert.notDeepEqual(values(w(a)), values(w(c)));
      const std = Math.sqrt(tf.tidy(() => tf.moments(w(a)).variance.dataSync()[0]!));
      assertClose([std], [Math.sqrt(2 / (3 * 3 * 64))], { atol: 0, rtol: 0.05 }, 'conv weight std');
    } finally {
      [a, b, c].forEach((m) => m.dispose());
    }
  });
});

describe('ResNet stages', () => {
  const shapes = (m: ResNet, x: Tensor4D) =>
    tf.tidy(() => Object.fromEntries(Object.entries(m.forward(x)).map(([k, v]) => [k, v.shape])));

  test('CIFAR stem on 32x32: res2 32, res3 16, res4 8, res5 4', () => {
    const model = new ResNet({ stem: 'cifar', width: 4 });
    const x = tf.zeros([2, 32, 32, 3]) as Tensor4D;
    try {
      assert.deepEqual(shapes(model, x), {
        stem: [2, 32, 32, 4],
        res2: [2, 32, 32, 4],
        res3: [2, 16, 16, 8],
        res4: [2, 8, 8, 16],
        res5: [2, 4, 4, 32],
      });
      assert.deepEqual(tf.tidy(() => model.features(x).shape), [2, 32]);
    } finally {
      model.dispose();
      x.dispose();
    }
  });

  test('ImageNet stem on 64x64 (stride 4 after the max-pool), bottleneck widths', () => {
    const model = new ResNet({ depth: 50, stem: 'imagenet', width: 2, numClasses: 5 });
    const x = tf.zeros([1, 64, 64, 3]) as Tensor4D;
    try {
      assert.deepEqual(shapes(model, x), {
        stem: [1, 16, 16, 2],
        res2: [1, 16, 16, 8],
        res3: [1, 8, 8, 16],
        res4: [1, 4, 4, 32],
        res5: [1, 2, 2, 64],
      });
      assert.deepEqual(tf.tidy(() => model.logits(x).shape), [1, 5]);
    } finally {
      model.dispose();
      x.dispose();
    }
  });

  test('one training step reaches every parameter with a gradient', () => {
    const model = new ResNet({ stem: 'cifar', width: 2, numClasses: 3 });
    const x = randomTensor([2, 8, 8, 3], 1) as Tensor4D;
    try {
      const { grads } = tf.variableGrads(() => tf.sum(model.logits(x)), model.parameters());
      const missing = model.namedParameters().filter(([, v]) => !grads[v.name]).map(([n]) => n);
      tf.dispose(grads);
      assert.deepEqual(missing, []);
    } finally {
      model.dispose();
      x.dispose();
    }
  });
});

describe('state dict', () => {
  test('round trip: a model loaded from another computes the same outputs', () => {
    const a = new ResNet({ stem: 'cifar', width: 2, numClasses: 3, seed: 1 });
    const b = new ResNet({ stem: 'cifar', width: 2, numClasses: 3, seed: 2 });
    const x = randomTensor([2, 8, 8, 3], 5) as Tensor4D;
    try {
      tf.tidy(() => a.forward(x)); // moves a's running statistics off their initial values
      b.loadStateDict(a.stateDict());
      for (const [name, t] of Object.entries(a.stateDict())) assert.deepEqual(values(b.stateDict()[name]!), values(t), name);
      a.eval();
      b.eval();
      assertClose(tf.tidy(() => values(b.logits(x))), tf.tidy(() => values(a.logits(x))), {}, 'logits');
    } finally {
      [a, b].forEach((m) => m.dispose());
      x.dispose();
    }
  });

  test('strict loading names missing and unexpected keys and shape mismatches', () => {
    const model = new ConvNet({ numClasses: 4 });
    try {
      const state = { ...model.stateDict() };
      delete state['bn2.running_mean'];
      state['head.weight'] = tf.zeros([1]);
      assert.throws(() => model.loadStateDict(state), /missing bn2\.running_mean; unexpected head\.weight/);
      const wrong = { ...model.stateDict(), 'fc.bias': tf.zeros([5]) };
      assert.throws(() => model.loadStateDict(wrong), /fc\.bias has shape \[5\], expected \[4\]/);
      tf.dispose([state['head.weight']!, wrong['fc.bias']]);
    } finally {
      model.dispose();
    }
  });
});

describe('BatchNorm2d', () => {
  // Two samples per channel: channel 0 sees 1 and 3, channel 1 sees 2 and 6.
  const x = () => tf.tensor4d([1, 2, 3, 6], [2, 1, 1, 2]);

  test('training normalises with batch statistics and updates running ones with the unbiased variance', () => {
    const bn = new BatchNorm2d(2);
    const input = x();
    try {
      // Inside a gradient computation, as in a real step: the update must not disturb it.
      const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(bn.forward(input), tf.tensor1d([1, 2]))), bn.parameters());
      // Batch mean [2, 4], biased variance [1, 4] -> y = [-1, -1, 1, 1] (up to eps).
      assertClose(values(grads[bn.bias.name]!), [2, 4], {}, 'dL/dbeta');
      assertClose(values(value), [0], { atol: 1e-3 }, 'sum of y * w');
      tf.dispose([value, ...Object.values(grads)]);
      // running_mean = 0.9 * 0 + 0.1 * [2, 4]; running_var = 0.9 * 1 + 0.1 * [2, 8] (n / (n - 1) = 2).
      assertClose(values(bn.runningMean), [0.2, 0.4], { atol: 1e-6 }, 'running_mean');
      assertClose(values(bn.runningVar), [1.1, 1.7], { atol: 1e-6 }, 'running_var');
      assert.equal(bn.runningMean.trainable, false);
      tf.tidy(() => bn.forward(input));
      assertClose(values(bn.runningMean), [0.38, 0.76], { atol: 1e-6 }, 'running_mean after two steps');
      assertClose(values(bn.runningVar), [1.19, 2.33], { atol: 1e-6 }, 'running_var after two steps');
    } finally {
      bn.dispose();
      input.dispose();
    }
  });

  test('eval mode uses the running statistics and leaves them alone', () => {
    const bn = new BatchNorm2d(2, { eps: 0 });
    const input = x();
    try {
      bn.loadStateDict({
        weight: tf.tensor1d([2, 1]),
        bias: tf.tensor1d([0, 1]),
        running_mean: tf.tensor1d([1, 2]),
        running_var: tf.tensor1d([4, 16]),
      });
      bn.eval();
      // channel 0: 2 (x - 1) / 2; channel 1: (x - 2) / 4 + 1
      assertClose(tf.tidy(() => values(bn.forward(input))), [0, 1, 2, 2]);
      assertClose(values(bn.runningMean), [1, 2], {}, 'running_mean');
      assertClose(values(bn.runningVar), [4, 16], {}, 'running_var');
    } finally {
      bn.dispose();
      input.dispose();
    }
  });

  test('withRunningStatsFrozen: the same batch-normalised output, running statistics untouched, tracking back on after', () => {
    const net = new ResNet({ stem: 'cifar', width: 2 });
    const input = tf.randomNormal([4, 8, 8, 3], 0, 1, 'float32', 3) as Tensor4D;
    const runningStats = () => bufferValues(net);
    try {
      const before = runningStats();
      const frozen = tf.tidy(() => values(withRunningStatsFrozen(net, () => net.forward(input).res5)));
      assert.deepEqual(runningStats(), before, 'a frozen pass changed running statistics');
      const tracked = tf.tidy(() => values(net.forward(input).res5));
      assertClose(frozen, tracked, { atol: 0 }, 'frozen and tracked passes');
      assert.notDeepEqual(runningStats(), before, 'the pass after the frozen one should update running statistics');
      assert.throws(() => withRunningStatsFrozen(net, () => { throw new Error('inside'); }), /inside/);
      const after = runningStats();
      tf.tidy(() => net.forward(input));
      assert.notDeepEqual(runningStats(), after, 'tracking should resume after an exception inside');
    } finally {
      net.dispose();
      input.dispose();
    }
  });

  test('estimateRunningStats: the plain mean of the passes\' batch statistics; momenta and modes restored', () => {
    const bn = new BatchNorm2d(2);
    // Per channel, batch means [2, 4], [6, 1], [2, 4]; unbiased variances [2, 8], [2, 2], [0, 0].
    const batches = [x(), tf.tensor4d([5, 0, 7, 2], [2, 1, 1, 2]), tf.tensor4d([2, 4, 2, 4], [2, 1, 1, 2])];
    try {
      tf.tidy(() => bn.forward(batches[1]!)); // running statistics that must be replaced, not blended
      bn.eval();
      estimateRunningStats(bn, 3, (b) => tf.tidy(() => void bn.forward(batches[b]!)));
      assertClose(values(bn.runningMean), [10 / 3, 3], { atol: 1e-6 }, 'running_mean');
      assertClose(values(bn.runningVar), [4 / 3, 10 / 3], { atol: 1e-6 }, 'running_var');
      assert.equal(bn.momentum, 0.1);
      assert.equal(bn.training, false);
      assert.throws(() => estimateRunningStats(bn, 1, () => { throw new Error('inside'); }), /inside/);
      assert.equal(bn.momentum, 0.1, 'momentum restored after an exception');
      assert.equal(bn.training, false, 'mode restored after an exception');
    } finally {
      bn.dispose();
      tf.dispose(batches);
    }
  });

  test('zeroInit starts gamma at 0; ResNet zeroInitResidual applies it to the last BN of each block only', () => {
    const basic = new ResNet({ stem: 'cifar', width: 2, zeroInitResidual: true });
    const bottleneck = new ResNet({ depth: 50, width: 1, zeroInitResidual: true });
    const plain = new ResNet({ stem: 'cifar', width: 2 });
    try {
      const gammas = (m: ResNet, pattern: RegExp) =>
        Object.entries(m.stateDict()).filter(([n]) => pattern.test(n)).flatMap(([, t]) => values(t));
      const lastBasic = /^layer\d\.\d\.bn2\.weight$/;
      const lastBottleneck = /^layer\d\.\d\.bn3\.weight$/;
      assert.equal(gammas(basic, lastBasic).length, 2 * (2 + 4 + 8 + 16));
      assert.ok(gammas(basic, lastBasic).every((g) => g === 0));
      assert.ok(gammas(basic, /bn1\.weight$|downsample\.1\.weight$/).every((g) => g === 1));
      assert.ok(gammas(bottleneck, lastBottleneck).every((g) => g === 0));
      assert.ok(gammas(bottleneck, /bn2\.weight$/).every((g) => g === 1));
      assert.ok(gammas(plain, lastBasic).every((g) => g === 1));
    } finally {
      [basic, bottleneck, plain].forEach((m) => m.dispose());
    }
  });
});

describe('layers', () => {
  test('parameter groups: no weight decay on BN parameters and biases', () => {
    const model = new ResNet({ stem: 'cifar', width: 2, numClasses: 3 });
    const head = new MLP([8, 16, 4], { batchNorm: true });
    try {
      for (const m of [model, head] as Module[]) {
        const names = nameIndex(m);
        const { decay, noDecay } = m.parameterGroups();
        assert.equal(decay.length + noDecay.length, m.parameters().length);
        for (const v of noDecay) assert.match(names.get(v)!, /bn\d?\.(weight|bias)$|downsample\.1\.(weight|bias)$|\.bias$/);
        for (const v of decay) assert.match(names.get(v)!, /(conv\d|downsample\.0|fc\d?)\.weight$/);
      }
      assert.deepEqual(
        head.parameterGroups().noDecay.map((v) => nameIndex(head).get(v)),
        ['bn0.weight', 'bn0.bias', 'fc1.bias'],
        'the hidden Linear drops its bias before BN',
      );
    } finally {
      model.dispose();
      head.dispose();
    }
  });

  test('Conv2d pads symmetrically like PyTorch, not like tfjs "same"', () => {
    const conv = new Conv2d(1, 1, 3, { stride: 2 });
    const input = tf.ones([1, 4, 4, 1]);
    try {
      conv.loadStateDict({ weight: tf.ones([3, 3, 1, 1]) });
      // Windows centred on rows/cols 0 and 2 of the 4x4 input, one zero row/col each side.
      assert.deepEqual(tf.tidy(() => values(conv.forward(input as Tensor4D))), [4, 6, 6, 9]);
    } finally {
      conv.dispose();
      input.dispose();
    }
  });

  test('MLP and ConvNet shapes', () => {
    const head = new MLP([8, 16, 4]);
    const net = new ConvNet({ inChannels: 1, numClasses: 10 });
    const x = tf.zeros([3, 8]) as Tensor2D;
    const images = tf.zeros([2, 8, 8, 1]) as Tensor4D;
    try {
      assert.deepEqual(namesOf(head), ['fc0.weight', 'fc0.bias', 'fc1.weight', 'fc1.bias']);
      assert.deepEqual(tf.tidy(() => head.forward(x).shape), [3, 4]);
      assert.deepEqual(tf.tidy(() => net.logits(images).shape), [2, 10]);
      // 3x3 convs without bias, BN gamma and beta each, linear 128 -> 10.
      assert.equal(net.numParameters(), 9 * (1 * 32 + 32 * 64 + 64 * 128) + 2 * (32 + 64 + 128) + 128 * 10 + 10);
    } finally {
      head.dispose();
      net.dispose();
      x.dispose();
      images.dispose();
    }
  });

  test('dispose releases every variable', () => {
    const before = tf.memory().numTensors;
    const model = new ResNet({ stem: 'cifar', width: 2, numClasses: 3 });
    model.dispose();
    assert.equal(tf.memory().numTensors, before);
  });
});
