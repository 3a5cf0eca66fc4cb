// The detector's pieces and the fine-tuner: FPN's upsample2x and the
// backend's gatherRows (values and gradients against finite differences),
// FPN level assignment, detectron2's warm-up multi-step schedule, the
// semantic-segmentation confusion matrix, Mask R-CNN's losses at
// initialisation and its predictions, an exact fine-tune resume, and a
// 2-image overfit that must reach AP50 near 1 (the detector can learn at all).
// Native backend (what the protocols run on); the tiny models keep the file
// within about a minute on two cores.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import * as tf from '../src/core/tf.js';
import type { Tensor, Tensor4D } from '@tensorflow/tfjs-core';
import { gatherRows } from '../src/backend/ops.js';
import { useBackend } from '../src/backend/select.js';
import { Rng } from '../src/core/random.js';
import { missingPackages } from '../src/data/packages.js';
import { writeScenes } from '../src/data/scenes.js';
import { loadDetectionSet, makeDetectionBatch, type DetectionBatch, type DetectionSet } from '../src/detect/data.js';
import { finetune, type FinetuneTask, type LossPoint } from '../src/detect/finetune.js';
import { upsample2x } from '../src/detect/fpn.js';
import { defaultMaskRcnnSettings, MaskRCNN } from '../src/detect/mask_rcnn.js';
import { predictCoco } from '../src/detect/protocols/detect.js';
import { assignLevels, type GroundTruth } from '../src/detect/roi_heads.js';
import { backboneInput, finetuneSettings, preciseBatchNorm, sceneTask, TransferOptions } from '../src/detect/transfer.js';
import { evaluateCoco } from '../src/eval/coco_eval.js';
import { ConfusionMatrix } from '../src/eval/semseg.js';
import { ResNet } from '../src/nn/resnet.js';
import { warmupMultiStep } from '../src/train/schedules.js';
import { assertClose, assertGradientMatchesFiniteDifferences, interruptAfter, randomArray, randomTensor } from './helpers.js';

const missing = missingPackages(['tuxpaintStamps', 'openclipart']);
const needScenes = missing.length > 0 ? `synthetic scenes need Debian packages: apt-get install ${missing.join(' ')}` : false;
const tmp = mkdtempSync(join(tmpdir(), 'selfsup-detect-model-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

before(async () => {
  await useBackend('native');
});

const values = (t: Tensor) => Array.from(t.dataSync());

describe('upsample2x', () => {
  test('each value repeated over a 2x2 block, batch and channels kept apart', () => {
    // x[n, y, x, c] = 1000 n + 100 y + 10 x + c, so every output names its source.
    const [n, h, w, c] = [2, 2, 3, 2];
    const data: number[] = [];
    for (let b = 0; b < n; b++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) data.push(1000 * b + 100 * y + 10 * x + k);
    const x = tf.tensor4d(data, [n, h, w, c]);
    const up = upsample2x(x);
    assert.deepEqual(up.shape, [n, 2 * h, 2 * w, c]);
    const got = values(up);
    const want: number[] = [];
    for (let b = 0; b < n; b++) for (let y = 0; y < 2 * h; y++) for (let xx = 0; xx < 2 * w; xx++) for (let k = 0; k < c; k++) want.push(1000 * b + 100 * Math.floor(y / 2) + 10 * Math.floor(xx / 2) + k);
    // Catches a reshape that interleaves rows with channels, or repeats rows where columns belong.
    assert.deepEqual(got, want);
    tf.dispose([x, up]);
  });

  test('the gradient sums each 2x2 block of dy, and matches finite differences', () => {
    const x = randomTensor([2, 3, 2, 3], 1) as Tensor4D;
    const weights = randomTensor([2, 6, 4, 3], 2);
    const f = (t: Tensor) => tf.sum(tf.mul(upsample2x(t as Tensor4D), weights));
    const g = tf.tidy(() => values(tf.grad(f)(x)));
    // dL/dx[n, i, j, c] = sum over the block (2i..2i+1, 2j..2j+1) of the weights.
    const wv = weights.dataSync();
    const at = (b: number, y: number, xx: number, k: number) => wv[((b * 6 + y) * 4 + xx) * 3 + k]!;
    const want: number[] = [];
    for (let b = 0; b < 2; b++) for (let i = 0; i < 3; i++) for (let j = 0; j < 2; j++) for (let k = 0; k < 3; k++) {
      want.push(at(b, 2 * i, 2 * j, k) + at(b, 2 * i, 2 * j + 1, k) + at(b, 2 * i + 1, 2 * j, k) + at(b, 2 * i + 1, 2 * j + 1, k));
    }
    // Catches a gradient that sums the wrong axes (e.g. [1, 3] of the 6-d view) or averages.
    assertClose(g, want, { atol: 1e-5, rtol: 1e-5 }, 'block sums');
    assertGradientMatchesFiniteDifferences(f, x, { samples: 16 });
    tf.dispose([x, weights]);
  });
});

describe('gatherRows', () => {
  test('rows of a matrix and elements of a vector, in index order', () => {
    const x = tf.tensor2d([[0, 1, 2], [10, 11, 12], [20, 21, 22], [30, 31, 32]]);
    assert.deepEqual(values(gatherRows(x, Int32Array.from([2, 0, 2, 3]))), [20, 21, 22, 0, 1, 2, 20, 21, 22, 30, 31, 32]);
    const v = tf.tensor1d([5, 6, 7]);
    assert.deepEqual(values(gatherRows(v, Int32Array.from([1, 1, 0]))), [6, 6, 5]);
    assert.deepEqual(gatherRows(x, new Int32Array(0)).shape, [0, 3]);
    tf.dispose([x, v]);
  });

  test('the gradient scatter-adds dy, repeated indices accumulate, and matches finite differences', () => {
    const x = randomTensor([5, 3], 3);
    const indices = Int32Array.from([4, 1, 4, 0, 4, 1]);
    const weights = randomTensor([6, 3], 4);
    const f = (t: Tensor) => tf.sum(tf.mul(gatherRows(t, indices), weights));
    const g = tf.tidy(() => values(tf.grad(f)(x)));
    const w = weights.dataSync();
    const want = new Array(15).fill(0);
    indices.forEach((row, k) => {
      for (let c = 0; c < 3; c++) want[row * 3 + c] += w[k * 3 + c]!;
    });
    // Row 4 gathered three times gets three rows of dy; rows 2 and 3, never gathered, get zero.
    // Catches a scatter that overwrites instead of adding (row 4 would get only one row of dy).
    assertClose(g, want, { atol: 1e-6, rtol: 1e-6 }, 'scatter-add');
    assert.deepEqual(g.slice(6, 12), [0, 0, 0, 0, 0, 0]);
    assertGradientMatchesFiniteDifferences(f, x, { samples: 15 });
    // The flat form the RPN and the box loss use: a vector, elements repeated.
    const flat = randomTensor([7], 5);
    const picks = Int32Array.from([6, 6, 2]);
    assertGradientMatchesFiniteDifferences((t) => tf.sum(tf.square(gatherRows(t, picks))), flat, { samples: 7 });
    const gf = tf.tidy(() => values(tf.grad((t: Tensor) => tf.sum(gatherRows(t, picks)))(flat)));
    assert.deepEqual(gf, [0, 0, 1, 0, 0, 0, 2]);
    tf.dispose([x, weights, flat]);
  });

  test('an index outside the rows is an error, before any kernel runs', () => {
    const x = tf.zeros([4, 2]);
    assert.throws(() => gatherRows(x, Int32Array.from([0, 4])), /gatherRows: index 4 is outside 0\.\.3/);
    assert.throws(() => gatherRows(x, Int32Array.from([-1])), /gatherRows: index -1 is outside 0\.\.3/);
    x.dispose();
  });
});

test('assignLevels: floor(4 + log2(sqrt(area) / 56)), clamped to P2..P5', () => {
  // Square boxes of side s have sqrt(area) = s; the returned index is level - 2 (P2 = 0).
  const square = (s: number) => [0, 0, s, s];
  const boxes = Float32Array.from([
    ...square(56), // 4 + log2(1) = 4 -> P4 (2)
    ...square(28), // 3 -> P3 (1)
    ...square(14), // 2 -> P2 (0)
    ...square(10), // floor(4 + log2(10 / 56)) = floor(1.51) = 1 -> clamped to P2 (0)
    ...square(112), // 5 -> P5 (3)
    ...square(224), // 6 -> clamped to P5 (3)
    ...square(500), // clamped to P5 (3)
    ...square(55), // floor(3.97) = 3 -> P3 (1): the level changes exactly at 56
    10, 20, 38, 132, // 28 x 112: sqrt(area) = 56 -> P4 (2), area not width
  ]);
  assert.deepEqual(Array.from(assignLevels(boxes, 56)), [2, 1, 0, 0, 3, 3, 3, 1, 2]);
  // Fewer levels clamp lower: with 3 levels the top is P4 (2).
  assert.deepEqual(Array.from(assignLevels(Float32Array.from(square(224)), 56, 3)), [2]);
});

test('warmupMultiStep: detectron2 WarmupMultiStepLR, linear warm-up from peak x factor, x gamma at each milestone', () => {
  const lr = warmupMultiStep({ peak: 0.02, warmupIters: 10, warmupFactor: 0.001, milestones: [30, 40], gamma: 0.1 });
  // alpha = step / warmupIters; factor = 0.001 (1 - alpha) + alpha.
  const expected: Array<[number, number]> = [
    [0, 0.02 * 0.001], // starts at peak x factor, not at zero
    [1, 0.02 * (0.001 * 0.9 + 0.1)], // 0.0020018
    [5, 0.02 * (0.001 * 0.5 + 0.5)], // 0.01001
    [9, 0.02 * (0.001 * 0.1 + 0.9)],
    [10, 0.02], // the peak once warm-up is over
    [29, 0.02],
    [30, 0.002], // x 0.1 at the first milestone
    [39, 0.002],
    [40, 0.0002], // x 0.01 after the second
    [1000, 0.0002],
  ];
  for (const [step, want] of expected) assertClose([lr(step)], [want], { atol: 0, rtol: 1e-12 }, `lr(${step})`);
  // No warm-up: the peak from step 0; a milestone inside the warm-up multiplies the warm factor.
  assert.equal(warmupMultiStep({ peak: 0.1, warmupIters: 0, warmupFactor: 0.001, milestones: [5], gamma: 0.5 })(0), 0.1);
  assertClose([warmupMultiStep({ peak: 1, warmupIters: 10, warmupFactor: 0, milestones: [4], gamma: 0.5 })(5)], [0.25], { atol: 0, rtol: 1e-12 });
});

test('ConfusionMatrix: mIoU, fwIoU, mACC, pACC by hand; a class absent from the truth is left out; the ignore label is skipped', () => {
  const m = new ConfusionMatrix(3);
  // pixel: 0  1  2  3  4  5  6  7
  // truth: 0  0  0  0  1  1  1  255 (ignored, whatever its prediction)
  // pred:  0  0  1  2  1  1  0  2
  m.add(Int32Array.from([0, 0, 1, 2, 1, 1, 0, 2]), Int32Array.from([0, 0, 0, 0, 1, 1, 1, 255]));
  // Class 0: tp 2, gt 4, predicted 3 (pixels 0, 1, 6) -> IoU 2 / (4 + 3 - 2) = 0.4, acc 2/4.
  // Class 1: tp 2, gt 3, predicted 3 (pixels 2, 4, 5) -> IoU 2 / (3 + 3 - 2) = 0.5, acc 2/3.
  // Class 2: no ground-truth pixels -> perClass null and left out of mIoU and mACC (detectron2's
  //          SemSegEvaluator); its false positive at pixel 3 counts against class 0 (gt 0 there).
  const s = m.scores();
  assert.deepEqual(s.perClass.map((v) => (v === null ? null : Math.round(v * 1e9) / 1e9)), [40, 50, null]);
  assertClose([s.mIoU], [(100 * (0.4 + 0.5)) / 2], { atol: 1e-9, rtol: 0 }, 'mIoU = 45'); // 3 classes would give 30
  assertClose([s.mACC], [(100 * (0.5 + 2 / 3)) / 2], { atol: 1e-9, rtol: 0 }, 'mACC = 58.33');
  assertClose([s.fwIoU], [(100 * (4 * 0.4 + 3 * 0.5)) / 7], { atol: 1e-9, rtol: 0 }, 'fwIoU = 44.29');
  assertClose([s.pACC], [(100 * 4) / 7], { atol: 1e-9, rtol: 0 }, 'pACC = 57.14'); // counting the ignored pixel would give 4/8
  // A second batch adds to the counts: two class-2 pixels, both right, bring class 2 in; its
  // earlier false positive (pixel 3) is now in its union: IoU 2 / (2 + 3 - 2) = 2/3, not 1.
  m.add(Int32Array.from([2, 2]), Int32Array.from([2, 2]));
  const t = m.scores();
  assertClose([t.perClass[2]!], [(100 * 2) / 3], { atol: 1e-9, rtol: 0 }, 'class 2 IoU');
  assertClose([t.mIoU], [(100 * (0.4 + 0.5 + 2 / 3)) / 3], { atol: 1e-9, rtol: 0 }, 'mIoU with class 2');
  assertClose([t.pACC], [(100 * 6) / 9], { atol: 1e-9, rtol: 0 });
  assert.throws(() => m.add([3], [0]), /class 3 at pixel 0 is outside 0\.\.2/);
  assert.throws(() => m.add([0, 1], [0]), /2 predictions for 1 labels/);
  const empty = new ConfusionMatrix(2);
  empty.add([0], [255]);
  assert.throws(() => empty.scores(), /no labelled pixels/);
});

describe('MaskRCNN on a tiny backbone', () => {
  const S = 64;
  const K = 3;
  let model: MaskRCNN;
  let images: Tensor4D;
  const rect = (x0: number, y0: number, x1: number, y1: number) => {
    const m = new Uint8Array(S * S);
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) m[y * S + x] = 1;
    return m;
  };
  const truth: GroundTruth[] = [
    { boxes: Float32Array.from([8, 8, 40, 40]), classes: Int32Array.from([0]), masks: [rect(8, 8, 40, 40)] },
    { boxes: Float32Array.from([4, 20, 28, 60, 30, 2, 62, 30]), classes: Int32Array.from([2, 1]), masks: [rect(4, 20, 28, 60), rect(30, 2, 62, 30)] },
  ];

  before(() => {
    model = new MaskRCNN(new ResNet({ depth: 18, width: 4, stem: 'imagenet', seed: 0 }), defaultMaskRcnnSettings(K, 4, 0));
    images = tf.tensor4d(randomArray(2 * S * S * 3, 9), [2, S, S, 3]);
  });
  after(() => {
    model.dispose();
    images.dispose();
  });

  test('losses: five finite scalars, at their initial values, a gradient for every parameter, no tensor left behind', () => {
    model.train();
    const before = tf.memory().numTensors;
    let terms: Record<string, number> = {};
    const { value, grads } = tf.variableGrads(() => {
      const parts = model.losses(images, truth, Rng.seeded(0));
      for (const t of Object.values(parts)) assert.equal(t.rank, 0);
      terms = Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, v.dataSync()[0]!]));
      return tf.addN(Object.values(parts)) as tf.Scalar;
    });
    assert.deepEqual(Object.keys(terms).sort(), ['box', 'cls', 'mask', 'rpnBox', 'rpnObjectness']);
    for (const [k, v] of Object.entries(terms)) assert.ok(Number.isFinite(v) && v >= 0, `${k} = ${v}`);
    // detectron2's initialisation puts every predictor near zero: the RPN objectness conv and
    // the mask predictor are N(0, 0.01^2) and N(0, 0.001^2) with zero biases, the class scores
    // N(0, 0.01^2). So at step 0:
    // - each sampled anchor's BCE is log 2 (sigmoid(~0) = 1/2), and 256 anchors are sampled per
    //   image (there are ~1,000 negatives), normalised by 256 x images: rpnObjectness = log 2;
    // - each mask pixel's BCE is log 2, averaged: mask = log 2;
    // - softmax over K + 1 near-equal scores gives cls = log(K + 1) = log 4; the 256-wide fc2
    //   output times 0.01-std weights leaves logits of ~0.1-0.3, hence the looser tolerance.
    // A predictor initialised like the other layers (Kaiming or PyTorch's default), a normaliser
    // other than batchPerImage x images, or a sum instead of a mean would be far off these.
    assertClose([terms.rpnObjectness!], [Math.log(2)], { atol: 0.01, rtol: 0 }, 'rpnObjectness');
    assertClose([terms.mask!], [Math.log(2)], { atol: 0.01, rtol: 0 }, 'mask');
    assertClose([terms.cls!], [Math.log(K + 1)], { atol: 0.1, rtol: 0 }, 'cls');
    // The box losses are L1 distances to encoded targets: positive while the deltas are ~0 and
    // the sampled boxes are not all exactly the ground truth.
    assert.ok(terms.box! > 0 && terms.rpnBox! > 0, JSON.stringify(terms));
    assertClose([value.dataSync()[0]!], [Object.values(terms).reduce((a, b) => a + b)], { atol: 1e-4, rtol: 1e-5 }, 'total');
    // Every parameter (backbone, FPN, RPN, both heads) is on the tape with a finite gradient:
    // catches a head cut off the tape (a host round trip, a missing customGrad input).
    const names = new Map(model.namedParameters().map(([n, v]) => [v.name, n]));
    const missingGrads = [...names.keys()].filter((v) => !(v in grads)).map((v) => names.get(v));
    assert.deepEqual(missingGrads, [], 'parameters without a gradient');
    for (const [v, g] of Object.entries(grads)) assert.ok(values(g).every(Number.isFinite), `gradient of ${names.get(v)}`);
    value.dispose();
    tf.dispose(Object.values(grads));
    assert.equal(tf.memory().numTensors, before, 'tensors leaked by a training step');
  });

  test('losses of an image without objects stay finite (a scene whose every object was dropped)', () => {
    model.train();
    const empty: GroundTruth = { boxes: new Float32Array(0), classes: new Int32Array(0), masks: [] };
    const terms = tf.tidy(() => Object.fromEntries(Object.entries(model.losses(images, [truth[0]!, empty], Rng.seeded(1))).map(([k, v]) => [k, v.dataSync()[0]!])));
    for (const [k, v] of Object.entries(terms)) assert.ok(Number.isFinite(v) && v >= 0, `${k} = ${v}`);
    const none = tf.tidy(() => Object.fromEntries(Object.entries(model.losses(images, [empty, empty], Rng.seeded(1))).map(([k, v]) => [k, v.dataSync()[0]!])));
    for (const [k, v] of Object.entries(none)) assert.ok(Number.isFinite(v) && v >= 0, `no objects at all: ${k} = ${v}`);
    // No foreground RoI: the box and mask losses are zero (kept on the tape with a zero gradient).
    assert.ok(none.box === 0 && none.mask === 0, JSON.stringify(none));
  });

  test('predict: at most 100 detections per image, boxes inside the image, scores above 0.05 in decreasing order, masks in [0, 1]', () => {
    model.eval();
    const before = tf.memory().numTensors;
    const detections = model.predict(images);
    assert.equal(tf.memory().numTensors, before, 'predict frees every tensor it makes');
    assert.equal(detections.length, 2);
    for (const [i, d] of detections.entries()) {
      const n = d.scores.length;
      // Untrained, every class scores ~1/(K+1) = 0.25 > 0.05 on every proposal: hundreds of
      // candidates survive per-class NMS, so the cap of 100 must bite.
      assert.equal(n, 100, `image ${i}: ${n} detections`);
      assert.equal(d.boxes.length, 4 * n);
      assert.equal(d.classes.length, n);
      assert.equal(d.maskSize, 28);
      assert.equal(d.masks.length, n * 28 * 28);
      for (let k = 0; k < n; k++) {
        const [x0, y0, x1, y1] = d.boxes.subarray(4 * k, 4 * k + 4);
        assert.ok(x0! >= 0 && y0! >= 0 && x1! <= S && y1! <= S && x1! > x0! && y1! > y0!, `image ${i}, detection ${k}: box ${[x0, y0, x1, y1]}`);
        assert.ok(d.scores[k]! > 0.05 && d.scores[k]! <= 1, `score ${d.scores[k]}`);
        if (k > 0) assert.ok(d.scores[k]! <= d.scores[k - 1]!, `image ${i}: scores not sorted at ${k}`);
        assert.ok(d.classes[k]! >= 0 && d.classes[k]! < K);
      }
      assert.ok(d.masks.every((p) => p >= 0 && p <= 1));
      // Per-class NMS at 0.5: no two kept boxes of one class overlap more.
      const iou = (a: number, b: number) => {
        const A = d.boxes.subarray(4 * a, 4 * a + 4);
        const B = d.boxes.subarray(4 * b, 4 * b + 4);
        const w = Math.max(0, Math.min(A[2]!, B[2]!) - Math.max(A[0]!, B[0]!));
        const h = Math.max(0, Math.min(A[3]!, B[3]!) - Math.max(A[1]!, B[1]!));
        const inter = w * h;
        return inter / ((A[2]! - A[0]!) * (A[3]! - A[1]!) + (B[2]! - B[0]!) * (B[3]! - B[1]!) - inter);
      };
      for (let a = 0; a < n; a++) for (let b = a + 1; b < n; b++) if (d.classes[a] === d.classes[b]) assert.ok(iou(a, b) <= 0.5 + 1e-6, `image ${i}: ${a} and ${b} overlap ${iou(a, b)}`);
    }
  });
});

/** Every tensor of the state dict, by name, as raw bytes (bit-for-bit comparisons). */
function stateBytes(model: MaskRCNN): Map<string, Buffer> {
  return new Map(Object.entries(model.stateDict()).map(([k, t]) => {
    const v = t.dataSync() as Float32Array;
    return [k, Buffer.from(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength))];
  }));
}

test('a real SIGINT stops a fine-tuning process after the step, with the state saved, and it exits normally', async () => {
  // A process, not an AbortSignal: the signal reaches the loop only if the loop yields to the
  // event loop. Before it did, Ctrl-C during `eval detect` was ignored to the last iteration.
  const stateFile = join(tmp, 'sigint-finetune.safetensors');
  const url = (path: string) => JSON.stringify(fileURLToPath(new URL(path, import.meta.url)));
  const script = `
    const tf = await import(${url('../src/core/tf.js')});
    const { useBackend } = await import(${url('../src/backend/select.js')});
    const { finetune } = await import(${url('../src/detect/finetune.js')});
    const { Linear } = await import(${url('../src/nn/layers.js')});
    await useBackend('cpu');
    const model = new Linear(4, 2);
    const x = tf.ones([8, 4]);
    const task = {
      model,
      itersPerEpoch: 10,
      batch: (epoch, index) => {
        if (epoch === 0 && index === 2) process.stdout.write('iter\\n');
        return x;
      },
      losses: (b) => ({ square: tf.mean(tf.square(model.forward(b))) }),
    };
    const settings = { iters: 20000, batchSize: 8, lr: 0.001, momentum: 0.9, weightDecay: 0, warmupIters: 0, warmupFactor: 1, milestones: [], gamma: 0.1, seed: 0, checkpointEvery: 20000 };
    const r = await finetune(task, settings, { stateFile: ${JSON.stringify(stateFile)}, fingerprint: 'sigint', log: () => undefined, quiet: true });
    process.stdout.write(JSON.stringify({ iterations: r.iterations, stopped: r.stopped }));`;
  const { code, rest } = await interruptAfter(script, 'iter\n');
  assert.equal(code, 0, rest);
  const result = JSON.parse(rest) as { iterations: number; stopped: string };
  assert.equal(result.stopped, 'SIGINT');
  assert.ok(result.iterations >= 3 && result.iterations < 20000, `stopped after ${result.iterations} iterations`);
  assert.ok(existsSync(stateFile), 'the state is saved on the stop');
});

describe('fine-tuning resume', { skip: needScenes }, () => {
  const dir = join(tmp, 'scenes-resume');
  const stateFile = join(tmp, 'finetune.safetensors');
  let set: DetectionSet;
  // 8 scenes in batches of 2: 4 iterations per epoch, so iteration 3 (where the run stops)
  // is mid-epoch and the resumed task must skip into its epoch, and 6 iterations cross into
  // epoch 1. Milestones at round(0.75 x 6) = 5 and round(11/12 x 6) = 6: a rate drop after the resume.
  const o = TransferOptions.parse({ scenes: dir, iters: 6, batchSize: 2, warmupIters: 2, checkpointEvery: 3, lr: 0.01 });
  const settings = finetuneSettings(o);
  const input = backboneInput(3);
  const makeModel = (seed: number) => new MaskRCNN(new ResNet({ depth: 18, width: 4, stem: 'imagenet', seed }), defaultMaskRcnnSettings(set.numClasses, 4, seed));
  const makeTask = (model: MaskRCNN) => sceneTask(model, set, o, input, (images, batch, rng) => model.losses(images, batch.targets, rng));
  const quiet = { log: () => undefined, quiet: true };
  let curves: { straight: LossPoint[]; resumed: LossPoint[] } | undefined;

  before(async () => {
    await writeScenes(dir, { count: 8, size: 64, seed: 11, valFraction: 0, backgrounds: 'procedural', maxObjects: 2 });
    set = await loadDetectionSet(dir, 'train');
  });

  test('6 iterations straight through == 3, a stop with the state saved, a fresh process-like resume to 6: every tensor bit-identical', async () => {
    assert.deepEqual(settings.milestones, [5, 6]);
    const straight = makeModel(0);
    const stopped = makeModel(0);
    // The resumed run starts from another initialisation, as a new process would build its
    // model before loading the state: anything the state file misses (a buffer, a head, the
    // momentum slots) leaves a difference.
    const resumed = makeModel(1);
    try {
      const a = await finetune(makeTask(straight), settings, { stateFile: null, fingerprint: 'f', ...quiet });
      assert.deepEqual([a.iterations, a.resumedAt, a.stopped], [6, 0, null]);

      // Ctrl-C equivalent: the signal aborts while iteration 2's batch is being taken; the loop
      // finishes that step and stops with the state saved at iteration 3.
      const controller = new AbortController();
      const task = makeTask(stopped);
      const interrupted: FinetuneTask<DetectionBatch> = {
        ...task,
        batch(epoch, index) {
          if (epoch * task.itersPerEpoch + index === 2) controller.abort();
          return task.batch(epoch, index);
        },
      };
      const b = await finetune(interrupted, settings, { stateFile, fingerprint: 'f', signal: controller.signal, ...quiet });
      assert.deepEqual([b.iterations, b.stopped], [3, 'aborted']);

      const lines: string[] = [];
      const c = await finetune(makeTask(resumed), settings, { stateFile, fingerprint: 'f', log: (l) => lines.push(l), quiet: true });
      assert.deepEqual([c.iterations, c.resumedAt, c.stopped], [6, 3, null]);
      assert.ok(lines.some((l) => l.includes(`resume: ${stateFile} at iteration 3 of 6`)), lines.join('\n'));

      const want = stateBytes(straight);
      const got = stateBytes(resumed);
      assert.deepEqual([...got.keys()], [...want.keys()]);
      const differing = [...want].filter(([k, v]) => !v.equals(got.get(k)!)).map(([k]) => k);
      assert.deepEqual(differing, [], 'tensors that differ between the straight and the resumed run');
      // The comparison can fail: the interrupted model stopped at 3 differs from the finished one.
      const mid = stateBytes(stopped);
      assert.ok([...want].some(([k, v]) => !v.equals(mid.get(k)!)), 'iterations 3..5 changed the weights');
      assert.deepEqual(c.lossCurve.map((p) => p.iter), a.lossCurve.map((p) => p.iter));
      curves = { straight: a.lossCurve, resumed: c.lossCurve };
    } finally {
      for (const m of [straight, stopped, resumed]) m.dispose();
    }
  });

  test(
    "the resumed run's loss curve equals the straight run's (the report's finalLoss is its last point)",
    () => {
      assert.ok(curves, 'the resume test ran');
      // Before the state file kept the unfinished window: straight [{iter 6, loss 3.76}] vs resumed [{iter 6, loss 3.03}].
      assertClose(curves.resumed.map((p) => p.loss), curves.straight.map((p) => p.loss), { atol: 0, rtol: 1e-6 }, 'loss curve');
    },
  );

  test('a state file saved under another fingerprint is refused, naming the file', async () => {
    const model = makeModel(0);
    try {
      await assert.rejects(
        finetune(makeTask(model), settings, { stateFile, fingerprint: 'another', ...quiet }),
        (err: Error) => err.message.includes(stateFile) && /other settings/.test(err.message),
      );
    } finally {
      model.dispose();
    }
  });
});

describe('2-image overfit', { skip: needScenes }, () => {
  const S = 64;
  const dir = join(tmp, 'scenes-overfit');
  let set: DetectionSet;

  before(async () => {
    // Two 64 px scenes with 1-2 objects of 19-38 px (the scenes' scale range, 0.3-0.6 of the side).
    await writeScenes(dir, { count: 2, size: S, seed: 3, valFraction: 0, backgrounds: 'procedural', minObjects: 1, maxObjects: 2, scaleRange: [0.3, 0.6] });
    set = await loadDetectionSet(dir, 'train');
  });

  test('a random-init Mask R-CNN fine-tuned on 2 images detects their objects: box AP50 >= 0.9 on the same images', async (t) => {
    const settings = defaultMaskRcnnSettings(set.numClasses, 8, 0);
    // 32 sampled RoIs per image instead of 128: with 1-2 objects per image only ~5 proposals
    // (and the ground-truth box) overlap an object at IoU 0.5, so of 128 RoIs ~4% are foreground
    // and the classifier's foreground signal is diluted 25x. Measured: after 50 iterations at
    // 128, the ground-truth boxes still got only ~0.06 for their own class (AP50 0.5 or 1 by
    // chance); at 32 they get 0.8-0.95 after 40. Everything else is the protocol's configuration.
    settings.roi.batchPerImage = 32;
    const model = new MaskRCNN(new ResNet({ depth: 18, width: 8, stem: 'imagenet', seed: 0 }), settings);
    const input = backboneInput(3);
    // The same two images every iteration, never flipped.
    const batch = makeDetectionBatch(set, [0, 1], { flip: [false, false], mean: input.mean, std: input.std });
    const task: FinetuneTask<DetectionBatch> = {
      model,
      itersPerEpoch: 1,
      batch: () => batch,
      losses: (b, rng) => model.losses(input.toTensor(b, S, S), b.targets, rng),
    };
    const iters = 80;
    const started = performance.now();
    try {
      const fit = await finetune(
        task,
        { iters, batchSize: 2, lr: 0.05, momentum: 0.9, weightDecay: 1e-4, warmupIters: 5, warmupFactor: 0.001, milestones: [Math.round(iters * 0.8)], gamma: 0.1, seed: 0, checkpointEvery: 1000 },
        { stateFile: null, fingerprint: 'overfit', log: () => undefined, quiet: true },
      );
      assert.equal(fit.iterations, iters);
      // The protocol's precise BN (one batch: both images), then its prediction path.
      preciseBatchNorm(model, set, TransferOptions.parse({ scenes: dir, batchSize: 2, preciseBnBatches: 1 }), input, (images) => void model.pyramid(images));
      const results = predictCoco(model, set, input, 2);
      const box = evaluateCoco(set.split.coco, results.bbox, { iouType: 'bbox' }).named;
      const mask = evaluateCoco(set.split.coco, results.segm, { iouType: 'segm' }).named;
      const curve = fit.lossCurve.map((p) => p.loss.toFixed(3)).join(' -> ');
      t.diagnostic(`${iters} iterations in ${((performance.now() - started) / 1000).toFixed(1)} s; loss ${curve}; ${results.bbox.length} detections; box AP50 ${box.AP50}, AP ${box.AP}; mask AP50 ${mask.AP50}`);
      // A detector that cannot fit two images has a broken piece: labels or box targets
      // misassigned, a gradient that does not reach a head, test-time decoding that does not
      // invert training's encoding, or eval-mode BN statistics that do not match training's.
      // 80 iterations, not 40: at 40 a change of rounding in the batch-norm sums turned scene
      // seed 3's AP50 from 1.0 to 0.75. At 80, scene seeds 3, 5, 8, 11 and 13 all reached 1.0 at
      // one thread and at two (whose rounding differs again). Mask AP is not asserted: after 40
      // iterations the 28x28 mask probabilities follow the targets (correlation 0.5 with them,
      // 0.39 with their transpose) but mostly stay below the 0.5 paste threshold.
      assert.ok(box.AP50! >= 0.9, `box AP50 ${box.AP50} (loss ${curve})`);
      assert.ok(fit.lossCurve.at(-1)!.loss < fit.lossCurve[0]!.loss, `loss went down: ${curve}`);
    } finally {
      model.dispose();
    }
  });
});
