// Seeded parameter initialisers. Every layer draws from one `Mulberry32` stream in
// construction order, so a model built with the same seed is the same model on
// every backend and every run.
import * as tf from '../core/tf.js';
import type { Tensor } from '@tensorflow/tfjs-core';
import type { RandomStream } from '../core/random.js';

function sizeOf(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** N(0, std^2) entries. */
export function normal(shape: number[], std: number, rng: RandomStream): Tensor {
  const v = new Float32Array(sizeOf(shape));
  for (let i = 0; i < v.length; i++) v[i] = std * rng.normal();
  return tf.tensor(v, shape);
}

/** U(-bound, bound) entries. */
export function uniform(shape: number[], bound: number, rng: RandomStream): Tensor {
  const v = new Float32Array(sizeOf(shape));
  for (let i = 0; i < v.length; i++) v[i] = bound * (2 * rng.uniform() - 1);
  return tf.tensor(v, shape);
}

/**
 * Kaiming (He et al. 2015, eq. 10) normal init for a conv followed by ReLU, in
 * torchvision's ResNet mode: std = sqrt(2 / fan_out), fan_out = k*k*out.
 * Weights are HWIO, the tfjs layout.
 */
export function kaimingNormalFanOut(shape: [number, number, number, number], rng: RandomStream): Tensor {
  const [kh, kw, , out] = shape;
  return normal(shape, Math.sqrt(2 / (kh * kw * out)), rng);
}

/**
 * PyTorch's default for Linear and conv biases (and Linear weights):
 * kaiming_uniform(a = sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
 */
export function fanInUniform(shape: number[], fanIn: number, rng: RandomStream): Tensor {
  return uniform(shape, 1 / Math.sqrt(fanIn), rng);
}

/**
 * detectron2's c2_xavier_fill (Caffe2's "XavierFill"): kaiming_uniform with
 * a = 1, i.e. U(+-sqrt(3 / fan_in)). Its FPN and box-head layers start so.
 */
export function xavierFanInUniform(shape: number[], fanIn: number, rng: RandomStream): Tensor {
  return uniform(shape, Math.sqrt(3 / fanIn), rng);
}
