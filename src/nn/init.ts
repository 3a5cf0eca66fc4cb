// Seeded parameter initialisers. Every layer draws from one `Rng` stream in
// construction order, so a model built with the same seed is the same model on
// every backend and every run.
import * as tf from '../core/tf.js';
import type { Tensor } from '@tensorflow/tfjs-core';

/** Mulberry32 uniforms and Box-Muller normals: small, seedable, fast enough for 25M weights. */
export class Rng {
  private state: number;
  private spare: number | undefined;

  constructor(seed = 0) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Standard normal. */
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    const u = 1 - this.uniform(); // (0, 1], so log(u) is finite
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * this.uniform();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
}

function sizeOf(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** N(0, std^2) entries. */
export function normal(shape: number[], std: number, rng: Rng): Tensor {
  const v = new Float32Array(sizeOf(shape));
  for (let i = 0; i < v.length; i++) v[i] = std * rng.normal();
  return tf.tensor(v, shape);
}

/** U(-bound, bound) entries. */
export function uniform(shape: number[], bound: number, rng: Rng): Tensor {
  const v = new Float32Array(sizeOf(shape));
  for (let i = 0; i < v.length; i++) v[i] = bound * (2 * rng.uniform() - 1);
  return tf.tensor(v, shape);
}

/**
 * Kaiming (He et al. 2015, eq. 10) normal init for a conv followed by ReLU, in
 * torchvision's ResNet mode: std = sqrt(2 / fan_out), fan_out = k*k*out.
 * Weights are HWIO, the tfjs layout.
 */
export function kaimingNormalFanOut(shape: [number, number, number, number], rng: Rng): Tensor {
  const [kh, kw, , out] = shape;
  return normal(shape, Math.sqrt(2 / (kh * kw * out)), rng);
}

/**
 * PyTorch's default for Linear and conv biases (and Linear weights):
 * kaiming_uniform(a = sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
 */
export function fanInUniform(shape: number[], fanIn: number, rng: Rng): Tensor {
  return uniform(shape, 1 / Math.sqrt(fanIn), rng);
}
