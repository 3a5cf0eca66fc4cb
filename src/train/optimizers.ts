// Optimizers over tfjs variables: SGD (momentum, Nesterov), LARS and AdamW.
//
// Each parameter is named (its state-dict name), so the optimizer state of a
// checkpoint is keyed `<param>.<slot>` and loads into any process that builds
// the same model, whatever names tfjs gave the variables. Weight decay applies
// to the `decay` group only (not BN, not biases). Every update of one
// parameter runs in one tidy: the only tensors that survive a step are the new
// parameter values and the new slots.
import * as tf from '../core/tf.js';
import type { NamedTensorMap, Scalar, Tensor, Variable } from '@tensorflow/tfjs-core';
import type { Module } from '../nn/module.js';
import type { RunConfig } from './config.js';
import { sgdMomentumUpdate } from '../backend/ops.js';

/** One optimised parameter. */
export interface NamedParameter {
  name: string;
  variable: Variable;
  /** In the weight-decay group (LARS also adapts only these). */
  decay: boolean;
}

/** The trainable parameters of `module`, by state-dict name, with their group. */
export function namedParameters(module: Module): NamedParameter[] {
  const decay = new Set(module.parameterGroups().decay);
  return module
    .namedParameters()
    .filter(([, v]) => v.trainable)
    .map(([name, variable]) => ({ name, variable, decay: decay.has(variable) }));
}

export abstract class Optimizer {
  protected readonly params: NamedParameter[];
  /** Optimizer steps taken so far. */
  protected steps = 0;
  /** Per-parameter slots (momentum buffer, Adam moments), created on first use. */
  private readonly slots = new Map<string, Variable>();

  constructor(params: NamedParameter[]) {
    const seen = new Set<string>();
    for (const p of params) {
      if (seen.has(p.name)) throw new Error(`optimizer: parameter '${p.name}' is listed twice`);
      seen.add(p.name);
    }
    this.params = params;
  }

  get stepCount(): number {
    return this.steps;
  }

  /**
   * One update with learning rate `lr`. `grads` is keyed by tfjs variable name,
   * as tf.variableGrads returns it; a parameter without a gradient is skipped
   * (PyTorch's `grad is None`).
   */
  step(grads: NamedTensorMap, lr: number): void {
    this.steps++;
    for (const p of this.params) {
      const g = grads[p.variable.name];
      if (g) tf.tidy(() => this.update(p, g, lr));
    }
  }

  /** Drops the slots of the parameters whose names start with `prefix`: they restart from zeros, as a fresh optimizer's would. */
  resetSlots(prefix: string): void {
    for (const [key, v] of this.slots) {
      if (key.startsWith(prefix)) {
        v.dispose();
        this.slots.delete(key);
      }
    }
  }

  protected abstract update(p: NamedParameter, grad: Tensor, lr: number): void;

  /** The slot `slot` of parameter `p`, zeros until first written. */
  protected slot(p: NamedParameter, slot: string): Variable {
    const key = `${p.name}.${slot}`;
    let v = this.slots.get(key);
    if (!v) {
      // The zeros are copied into the variable; outside step()'s tidy (a resume's loadState) they would leak.
      const zeros = tf.zerosLike(p.variable);
      v = tf.variable(zeros, false);
      zeros.dispose();
      this.slots.set(key, v);
    }
    return v;
  }

  /** Everything a checkpoint needs: `step` and every slot, as copies the caller disposes. */
  state(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [key, v] of this.slots) out[key] = tf.clone(v);
    out.step = tf.scalar(this.steps, 'int32');
    return out;
  }

  /** Restores `state()`; a slot for an unknown parameter or of the wrong shape is an error naming it. */
  loadState(state: Record<string, Tensor>): void {
    const byName = new Map(this.params.map((p) => [p.name, p]));
    const stepTensor = state.step;
    if (!stepTensor) throw new Error('optimizer state: no `step` entry');
    const entries = Object.entries(state).filter(([k]) => k !== 'step');
    for (const [key, value] of entries) {
      const dot = key.lastIndexOf('.');
      const p = byName.get(key.slice(0, dot));
      if (dot < 0 || !p) throw new Error(`optimizer state: '${key}' belongs to no parameter of this model`);
      if (!tf.util.arraysEqual(value.shape, p.variable.shape)) {
        throw new Error(`optimizer state: '${key}' has shape [${value.shape}], the parameter has [${p.variable.shape}]`);
      }
    }
    this.steps = stepTensor.dataSync()[0]!;
    for (const [key, value] of entries) {
      const p = byName.get(key.slice(0, key.lastIndexOf('.')))!;
      const v = this.slot(p, key.slice(key.lastIndexOf('.') + 1));
      tf.tidy(() => v.assign(value.dtype === 'float32' ? value : tf.cast(value, 'float32')));
    }
  }

  dispose(): void {
    for (const v of this.slots.values()) v.dispose();
    this.slots.clear();
  }
}

export interface SgdOptions {
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
}

/**
 * PyTorch's SGD: g' = g + wd p;  b = mu b + g';  p -= lr (nesterov ? g' + mu b : b).
 * The buffer starts at zero, which equals PyTorch's b_1 = g'_1 (no dampening).
 */
export class SGD extends Optimizer {
  readonly momentum: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;

  constructor(params: NamedParameter[], { momentum = 0.9, nesterov = false, weightDecay = 0 }: SgdOptions = {}) {
    super(params);
    if (nesterov && momentum <= 0) throw new Error('SGD: nesterov needs momentum > 0');
    this.momentum = momentum;
    this.nesterov = nesterov;
    this.weightDecay = weightDecay;
  }

  protected update(p: NamedParameter, grad: Tensor, lr: number): void {
    if (this.momentum === 0) {
      const g = p.decay && this.weightDecay > 0 ? tf.add(grad, tf.mul(p.variable, this.weightDecay)) : grad;
      p.variable.assign(tf.sub(p.variable, tf.mul(g, lr)));
      return;
    }
    const buf = this.slot(p, 'momentum');
    const weightDecay = p.decay ? this.weightDecay : 0;
    const [value, velocity] = sgdMomentumUpdate(p.variable, grad, buf, { lr, momentum: this.momentum, weightDecay, nesterov: this.nesterov });
    buf.assign(velocity);
    p.variable.assign(value);
  }
}

export interface LarsOptions {
  momentum?: number;
  weightDecay?: number;
  /** eta of You et al. 2017 (SimCLR and BYOL: 0.001). */
  trustCoefficient?: number;
}

/**
 * LARS (You et al. 2017) as SimCLR, BYOL and Barlow Twins use it:
 *   g' = g + wd p;  g'' = g' * eta ||p|| / ||g'||  (1 where either norm is 0);
 *   b = mu b + g'';  p -= lr b.
 * BN parameters and biases (the `noDecay` group) get neither weight decay nor
 * the trust ratio, as in those papers. The learning rate multiplies the buffer
 * rather than entering it (Barlow Twins' form); with a constant rate this is
 * SimCLR's update exactly.
 */
export class LARS extends Optimizer {
  readonly momentum: number;
  readonly weightDecay: number;
  readonly trustCoefficient: number;

  constructor(params: NamedParameter[], { momentum = 0.9, weightDecay = 0, trustCoefficient = 0.001 }: LarsOptions = {}) {
    super(params);
    this.momentum = momentum;
    this.weightDecay = weightDecay;
    this.trustCoefficient = trustCoefficient;
  }

  protected update(p: NamedParameter, grad: Tensor, lr: number): void {
    let g = grad;
    if (p.decay) {
      if (this.weightDecay > 0) g = tf.add(g, tf.mul(p.variable, this.weightDecay));
      const wNorm = tf.norm(p.variable);
      const gNorm = tf.norm(g);
      const ratio = tf.div(tf.mul(wNorm, this.trustCoefficient), tf.maximum(gNorm, 1e-30));
      const bothPositive = tf.logicalAnd(tf.greater(wNorm, 0), tf.greater(gNorm, 0));
      g = tf.mul(g, tf.where(bothPositive, ratio, tf.onesLike(ratio)) as Scalar);
    }
    const buf = this.slot(p, 'momentum');
    const b = this.momentum > 0 ? tf.add(tf.mul(buf, this.momentum), g) : g;
    buf.assign(b);
    p.variable.assign(tf.sub(p.variable, tf.mul(b, lr)));
  }
}

export interface AdamWOptions {
  betas?: readonly [number, number];
  eps?: number;
  weightDecay?: number;
}

/**
 * AdamW (Loshchilov & Hutter 2019, algorithm 2) in PyTorch's form:
 *   p *= 1 - lr wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *   p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 */
export class AdamW extends Optimizer {
  readonly betas: readonly [number, number];
  readonly eps: number;
  readonly weightDecay: number;

  constructor(params: NamedParameter[], { betas = [0.9, 0.999], eps = 1e-8, weightDecay = 0.01 }: AdamWOptions = {}) {
    super(params);
    this.betas = betas;
    this.eps = eps;
    this.weightDecay = weightDecay;
  }

  protected update(p: NamedParameter, grad: Tensor, lr: number): void {
    const [b1, b2] = this.betas;
    const t = this.steps;
    let w: Tensor = p.variable;
    if (p.decay && this.weightDecay > 0) w = tf.mul(w, 1 - lr * this.weightDecay);
    const m = this.slot(p, 'exp_avg');
    const v = this.slot(p, 'exp_avg_sq');
    const m1 = tf.add(tf.mul(m, b1), tf.mul(grad, 1 - b1));
    const v1 = tf.add(tf.mul(v, b2), tf.mul(tf.square(grad), 1 - b2));
    m.assign(m1);
    v.assign(v1);
    const denom = tf.add(tf.div(tf.sqrt(v1), Math.sqrt(1 - b2 ** t)), this.eps);
    p.variable.assign(tf.sub(w, tf.mul(tf.div(m1, denom), lr / (1 - b1 ** t))));
  }
}

/** The optimizer `config.optimizer` names, over `params`. */
export function createOptimizer(config: RunConfig['optimizer'], params: NamedParameter[]): Optimizer {
  switch (config.name) {
    case 'sgd':
      return new SGD(params, { momentum: config.momentum, nesterov: config.nesterov, weightDecay: config.weightDecay });
    case 'lars':
      return new LARS(params, {
        momentum: config.momentum,
        weightDecay: config.weightDecay,
        trustCoefficient: config.trustCoefficient,
      });
    case 'adamw':
      return new AdamW(params, { betas: config.betas, weightDecay: config.weightDecay });
  }
}

/**
 * Scales `grads` in place so their global L2 norm is at most `maxNorm`
 * (PyTorch's clip_grad_norm_, with its 1e-6 guard). Returns the norm before
 * clipping. Replaced gradients are disposed.
 */
export function clipGradNorm(grads: NamedTensorMap, maxNorm: number): number {
  const names = Object.keys(grads);
  if (names.length === 0) return 0;
  const total = tf.tidy(() => tf.sqrt(tf.addN(names.map((n) => tf.sum(tf.square(grads[n]!))))).dataSync()[0]!);
  const scale = maxNorm / (total + 1e-6);
  if (scale < 1) {
    for (const n of names) {
      const old = grads[n]!;
      grads[n] = tf.mul(old, scale);
      old.dispose();
    }
  }
  return total;
}
