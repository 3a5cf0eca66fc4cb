// The one interface every self-supervised (or supervised) method implements.
// A method is a Module: its backbone, heads, EMA twins (as buffers), queues
// and memory banks all live in its state dict, so a checkpoint of the method
// is its stateDict() and nothing else. The trainer knows nothing else about it.
import type { Scalar, Tensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-core';
import type { PipelineSpec } from '../data/index.js';
import { Module } from '../nn/module.js';
import type { ResNet } from '../nn/resnet.js';

/** One loader batch as tensors: each pipeline output by name, NHWC. */
export interface TensorBatch {
  views: Record<string, Tensor4D>;
  /** Aux arrays of the pipeline (jigsaw permutations, rotation labels, ...), as tensors. */
  aux: Record<string, Tensor>;
  /** Dataset labels (-1 when unlabeled); only supervised baselines and evaluation may read them. */
  labels: Tensor1D;
  /** Dataset index of each sample (memory banks key on it). */
  indices: Int32Array;
}

export interface StepContext {
  /** Global optimizer step, from 0. */
  step: number;
  epoch: number;
  totalSteps: number;
}

export interface LossOutput {
  /** What the optimizer minimises. */
  loss: Scalar;
  /** Every term, logged separately (may include `loss` itself). */
  terms: Record<string, Scalar>;
}

export abstract class Method extends Module {
  abstract readonly name: string;
  /** The encoder evaluation reads features from. */
  abstract readonly backbone: ResNet;
  /** The views the loader must produce for this method. */
  abstract pipeline(): PipelineSpec;
  /** The loss of one batch; runs under tf.variableGrads, so it must be a pure tensor computation. */
  abstract loss(batch: TensorBatch, ctx: StepContext): LossOutput;
  /**
   * Optional: one forward-only pass over the training set before the first
   * step (of a fresh run, or one resumed at step 0), batch by batch, in
   * training mode and off the tape. Memory-bank methods fill their bank here,
   * so that the first epoch's positives and negatives are embeddings of the
   * images rather than random vectors.
   */
  warmUp?(batch: TensorBatch): void;
  /** After the optimizer step: EMA updates, queue enqueues. */
  afterStep(ctx: StepContext): void {
    void ctx;
  }
}
