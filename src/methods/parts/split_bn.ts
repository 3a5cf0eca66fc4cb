// Shuffle-BN on one process. MoCo (He et al. 2020, section 3.3) computes BN
// per GPU and shuffles the key batch across GPUs, so a query and its positive
// key never share batch statistics (which would leak a "this pair belongs
// together" signal the model can cheat with). Single-GPU MoCo implementations
// (the authors' CIFAR colab) emulate the GPUs with SplitBatchNorm: BN over G
// groups of the batch separately, and a random permutation of the key batch
// before the key encoder, undone after it.
import { Mulberry32 } from '../../core/random.js';
import * as tf from '../../core/tf.js';
import type { Tensor, Tensor1D } from '@tensorflow/tfjs-core';
import { batchNormTrain, type BatchNormEpilogue } from '../../backend/ops.js';
import { BatchNorm2d } from '../../nn/layers.js';
import { Module, noGrad } from '../../nn/module.js';

/**
 * BatchNorm whose training mode normalises each of `groups` consecutive
 * slices of the batch with that slice's statistics; the running statistics
 * follow the mean of the groups' (as the colab's SplitBatchNorm). Eval mode
 * is plain BN. Same parameters and buffers as BatchNorm2d.
 */
export class SplitBatchNorm extends BatchNorm2d {
  groups = 1;

  override forward<T extends Tensor>(x: T, epilogue: BatchNormEpilogue = {}): T {
    const G = this.groups;
    if (!this.training || G === 1) return super.forward(x, epilogue);
    const { y, mean, variance } = batchNormTrain(x, this.weight as Tensor1D, this.bias as Tensor1D, this.eps, G, epilogue);
    this.updateGroupStats(mean, variance, x.size / (G * this.numFeatures));
    return y as T;
  }

  private updateGroupStats(mean: Tensor1D, variance: Tensor1D, perGroup: number): void {
    if (this.tracksRunningStats) noGrad(() =>
      tf.tidy(() => {
        const G = this.groups;
        const m = this.momentum;
        const groupMean = tf.mean(tf.reshape(mean, [G, this.numFeatures]), 0);
        const unbiased = tf.mean(tf.reshape(tf.mul(variance, perGroup / Math.max(perGroup - 1, 1)), [G, this.numFeatures]), 0);
        this.runningMean.assign(tf.add(tf.mul(this.runningMean, 1 - m), tf.mul(groupMean, m)));
        this.runningVar.assign(tf.add(tf.mul(this.runningVar, 1 - m), tf.mul(unbiased, m)));
      }),
    );
    mean.dispose();
    variance.dispose();
  }
}

/**
 * Makes every BatchNorm of `module` a SplitBatchNorm over `groups`, in place
 * (the layers keep their variables and names). Our ResNet builds its BN layers
 * itself, so they are converted after construction, as the colab passes
 * `norm_layer=SplitBatchNorm`.
 */
export function useSplitBatchNorm<M extends Module>(module: M, groups: number): M {
  if (!(Number.isInteger(groups) && groups >= 1)) throw new Error(`SplitBatchNorm: groups must be a positive integer, got ${groups}`);
  for (const [, m] of module.namedModules()) {
    if (!(m instanceof BatchNorm2d)) continue;
    if (!(m instanceof SplitBatchNorm)) Object.setPrototypeOf(m, SplitBatchNorm.prototype);
    (m as SplitBatchNorm).groups = groups;
  }
  return module;
}

/** Fisher-Yates permutation of 0..n-1 and its inverse. */
export function batchShuffle(n: number, rng: Mulberry32): { perm: Int32Array; inverse: Int32Array } {
  const perm = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  const inverse = new Int32Array(n);
  perm.forEach((p, i) => (inverse[p] = i));
  return { perm, inverse };
}

/** encode(x[perm])[inverse]: the key side of shuffle-BN. The output rows line up with x's. */
export function shuffledForward<T extends Tensor>(x: Tensor, rng: Mulberry32, encode: (shuffled: Tensor) => T): T {
  const { perm, inverse } = batchShuffle(x.shape[0]!, rng);
  return tf.gather(encode(tf.gather(x, perm)), inverse) as T;
}
