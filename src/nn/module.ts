// A small module system over tfjs variables, shaped like torch.nn.Module:
// hierarchical names (`layer1.0.conv1.weight`), train/eval mode, non-trainable
// buffers, state dicts and weight-decay groups. Names follow torchvision, so a
// state dict lines up with a PyTorch checkpoint key for key (tensors are NHWC /
// HWIO / [in, out] here).
import * as tf from '../core/tf.js';
import type { Tensor, Variable } from '@tensorflow/tfjs-core';

/** Name -> tensor. From `stateDict()` these are the live variables: clone to snapshot. */
export type StateDict = Record<string, Tensor>;

/** Optimizer parameter groups: weight decay applies to `decay` only (not to BN or biases). */
export interface ParameterGroups {
  decay: Variable[];
  noDecay: Variable[];
}

interface Parameter {
  variable: Variable;
  decay: boolean;
}

export abstract class Module {
  /** Training mode: batch statistics in BN (and running-stat updates). */
  training = true;
  private readonly params = new Map<string, Parameter>();
  private readonly buffers = new Map<string, Variable>();
  private readonly children = new Map<string, Module>();

  /** Registers a trainable parameter; takes ownership of `init`. */
  protected addParameter(name: string, init: Tensor, { decay = true } = {}): Variable {
    const variable = toVariable(init, true);
    this.params.set(name, { variable, decay });
    return variable;
  }

  /** Registers a non-trainable buffer (saved in the state dict, never optimised). */
  protected addBuffer(name: string, init: Tensor): Variable {
    const variable = toVariable(init, false);
    this.buffers.set(name, variable);
    return variable;
  }

  protected addModule<M extends Module>(name: string, module: M): M {
    this.children.set(name, module);
    return module;
  }

  /** This module and every descendant, depth first, with dotted names ('' for this one). */
  namedModules(prefix = ''): Array<[string, Module]> {
    const out: Array<[string, Module]> = [[prefix, this]];
    for (const [name, child] of this.children) out.push(...child.namedModules(join(prefix, name)));
    return out;
  }

  /** Own parameters first, then each child's, in registration order (as PyTorch). */
  namedParameters(): Array<[string, Variable]> {
    return this.collect((m) => [...m.params].map(([n, p]) => [n, p.variable]));
  }

  namedBuffers(): Array<[string, Variable]> {
    return this.collect((m) => [...m.buffers]);
  }

  parameters(): Variable[] {
    return this.namedParameters().map(([, v]) => v);
  }

  numParameters(): number {
    return this.parameters().reduce((n, v) => n + v.size, 0);
  }

  parameterGroups(): ParameterGroups {
    const groups: ParameterGroups = { decay: [], noDecay: [] };
    for (const [, p] of this.collect((m) => [...m.params])) (p.decay ? groups.decay : groups.noDecay).push(p.variable);
    return groups;
  }

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Records every submodule's mode; calling the result puts each one back. */
  saveModes(): () => void {
    const modes = this.namedModules().map(([, m]) => [m, m.training] as const);
    return () => {
      for (const [m, training] of modes) m.training = training;
    };
  }

  /** Parameters and buffers by name. The tensors are the live variables. */
  stateDict(): StateDict {
    return Object.fromEntries([...this.namedParameters(), ...this.namedBuffers()]);
  }

  /**
   * Copies `state` into the parameters and buffers. Strict by default: a
   * missing or unexpected name, or a shape mismatch, is an error naming it.
   */
  loadStateDict(state: StateDict, { strict = true } = {}): void {
    const own = new Map([...this.namedParameters(), ...this.namedBuffers()]);
    if (strict) {
      const missing = [...own.keys()].filter((k) => !(k in state));
      const unexpected = Object.keys(state).filter((k) => !own.has(k));
      const problems = [missing.length ? `missing ${missing.join(', ')}` : '', unexpected.length ? `unexpected ${unexpected.join(', ')}` : ''];
      if (missing.length || unexpected.length) throw new Error(`loadStateDict: ${problems.filter(Boolean).join('; ')}`);
    }
    const updates = [...own].filter(([name]) => state[name] !== undefined);
    for (const [name, variable] of updates) {
      const { shape } = state[name]!;
      if (!tf.util.arraysEqual(shape, variable.shape)) {
        throw new Error(`loadStateDict: ${name} has shape [${shape}], expected [${variable.shape}]`);
      }
    }
    for (const [name, variable] of updates) {
      const value = state[name]!;
      if (value.dataId === variable.dataId) continue; // its own live tensor: assigning would free it
      tf.tidy(() => variable.assign(value.dtype === variable.dtype ? value : tf.cast(value, variable.dtype)));
    }
  }

  dispose(): void {
    for (const [, v] of [...this.namedParameters(), ...this.namedBuffers()]) v.dispose();
  }

  private collect<T>(own: (m: Module) => Array<[string, T]>, prefix = ''): Array<[string, T]> {
    const out: Array<[string, T]> = own(this).map(([n, t]) => [join(prefix, n), t]);
    for (const [name, child] of this.children) out.push(...child.collect(own, join(prefix, name)));
    return out;
  }
}

function join(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

// tfjs variable names are global, so ours live in the module tree and tfjs
// picks unique ones; two models can then coexist.
function toVariable(init: Tensor, trainable: boolean): Variable {
  const variable = tf.variable(init, trainable);
  init.dispose();
  return variable;
}

/**
 * Runs `fn` without recording to the gradient tape (torch.no_grad), for side
 * effects such as BN running statistics inside a training step. It must not
 * start a gradient computation of its own.
 */
export function noGrad<T>(fn: () => T): T {
  const state = (tf.engine() as unknown as { state: { gradientDepth: number } }).state;
  const depth = state.gradientDepth;
  state.gradientDepth = 0;
  try {
    return fn();
  } finally {
    state.gradientDepth = depth;
  }
}
