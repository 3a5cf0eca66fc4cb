// Momentum (EMA) encoders: MoCo's key encoder (He et al. 2020, eq. 2) and
// BYOL's target network (Grill et al. 2020, eq. 1) are twins of an online
// module whose weights follow
//
//   θ_ema <- m·θ_ema + (1 − m)·θ_online
//
// and are never trained. The twin's weights are buffers: they are in the
// method's state dict (so checkpoints hold them) but not in its parameters (so
// the optimizer never sees them). BN running statistics are copied from the
// online module rather than averaged (as timm's ModelEmaV2 and MoCo's
// evaluation of the key encoder do), so an EMA twin evaluated in eval mode
// sees the online module's statistics.
import * as tf from '../../core/tf.js';
import { axpbyAll } from '../../backend/ops.js';
import type { Variable } from '@tensorflow/tfjs-core';
import { Module } from '../../nn/module.js';

/** The private registries of a Module; only `freezeAsBuffers` reaches into them. */
interface ModuleInternals {
  params: Map<string, { variable: Variable; decay: boolean }>;
  buffers: Map<string, Variable>;
}

/**
 * Turns every parameter of `module` (and its descendants) into a buffer of the
 * same name, in place. Names in the state dict are unchanged.
 */
export function freezeAsBuffers<M extends Module>(module: M): M {
  // Module has no public way to demote a parameter; a frozen copy is the one
  // place that needs it, so it is done here, once.
  for (const [, m] of module.namedModules()) {
    const internals = m as unknown as ModuleInternals;
    const moved = new Map<string, Variable>();
    for (const [name, p] of internals.params) {
      p.variable.trainable = false;
      moved.set(name, p.variable);
    }
    internals.params.clear();
    internals.buffers = new Map([...moved, ...internals.buffers]);
  }
  return module;
}

/**
 * An online module and its EMA twin. `build` must construct the same
 * architecture as `online`; the twin starts as an exact copy of it.
 */
export class EmaPair<M extends Module> {
  readonly target: M;
  /** Online parameter name -> twin buffer. */
  private readonly pairs: Array<[Variable, Variable, 'average' | 'copy']> = [];

  constructor(readonly online: M, build: () => M) {
    this.target = freezeAsBuffers(build());
    const twin = new Map(this.target.namedBuffers());
    const link = (name: string, v: Variable, mode: 'average' | 'copy') => {
      const t = twin.get(name);
      if (!t || !tf.util.arraysEqual(t.shape, v.shape)) {
        throw new Error(`EmaPair: the twin has no ${name} of shape [${v.shape}]; build() must make the online architecture`);
      }
      this.pairs.push([v, t, mode]);
    };
    for (const [name, v] of online.namedParameters()) link(name, v, 'average');
    for (const [name, v] of online.namedBuffers()) link(name, v, 'copy');
    if (this.pairs.length !== twin.size) throw new Error('EmaPair: the twin has tensors the online module lacks');
    this.update(0);
  }

  /** θ_ema <- m·θ_ema + (1 − m)·θ_online; buffers (BN running stats) are copied. m = 0 copies everything. */
  update(momentum: number): void {
    if (!(momentum >= 0 && momentum <= 1)) throw new Error(`EmaPair.update: momentum must be in [0, 1], got ${momentum}`);
    tf.tidy(() => {
      const averaged = momentum === 0 ? [] : this.pairs.filter(([, , mode]) => mode === 'average');
      // One kernel call for every averaged tensor: per-tensor ops cost ~8 ms a step in dispatch alone.
      const updated = axpbyAll(
        averaged.map(([, target]) => target),
        averaged.map(([online]) => online),
        momentum,
        1 - momentum,
      );
      averaged.forEach(([, target], i) => target.assign(updated[i]!));
      for (const [online, target, mode] of this.pairs) if (mode === 'copy' || momentum === 0) target.assign(tf.clone(online));
    });
  }
}

/**
 * BYOL's target momentum (Grill et al. 2020, section 3.2):
 *   tau(k) = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2,
 * from tau_base at step 0 to 1 at step K = totalSteps.
 */
export function emaMomentum(step: number, totalSteps: number, base: number): number {
  const t = totalSteps > 0 ? Math.min(1, step / totalSteps) : 1;
  return 1 - ((1 - base) * (Math.cos(Math.PI * t) + 1)) / 2;
}
