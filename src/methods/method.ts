// The one interface every self-supervised (or supervised) method implements.
// A method is a Module: its backbone, heads, EMA twins (as buffers), queues
// and memory banks all live in its state dict, so a checkpoint of the method
// is its stateDict() and nothing else. The trainer knows nothing else about it.
// Each method file also exports a spec (defineMethod): its names, options
// schema, recipe defaults and factory; the registry is built from the specs.
import type { z } from 'zod';
import type { NamedTensorMap, Scalar, Tensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-core';
import type { PipelineSpec, RecipeOptions } from '../data/index.js';
import { SingleCommunicator, type Communicator } from '../dist/communicator.js';
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

/** Parts of a method that exchange data between ranks (key queues, memory banks) implement this. */
export interface UsesCommunicator {
  useCommunicator(comm: Communicator): void;
}

/**
 * Methods whose cross-rank parts are not written yet, and what each lacks
 * (issue #24). Data-parallel training refuses them rather than silently
 * training something other than the method.
 */
const NOT_DATA_PARALLEL: Record<string, string> = {
  swav: 'its Sinkhorn-Knopp normalisation would run per rank; the reference all-reduces it over the global batch, not written yet',
  barlow: 'its cross-correlation matrix would be per rank; the reference all-reduces it, not written yet',
  deepcluster: "its clustering reads BN running statistics, which are kept per rank (rank 0's are saved); syncing them before each clustering is not written yet",
};

export abstract class Method extends Module {
  abstract readonly name: string;
  /** The ranks this method trains with; single until the trainer says otherwise. */
  protected comm: Communicator = new SingleCommunicator();
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
  /**
   * Optional (DeepCluster): at the start of each epoch, unless a run resumes
   * mid-epoch, the backbone's pooled features of every training image (eval
   * mode, no augmentation), row-major [count, dim]. Returns the images' new
   * clusters and those they replace (null the first time); the trainer logs
   * their NMI.
   */
  recluster?(features: Float32Array, dim: number, epoch: number): Reclustering;
  /**
   * Optional: the `count` dataset indices epoch `epoch` visits, instead of the
   * loader's shuffle (DeepCluster samples its clusters uniformly). A pure
   * function of the method's state and the epoch, so a resumed run visits the
   * same batches.
   */
  epochOrder?(epoch: number, count: number): Int32Array;
  /** When an epoch begins, before its first batch (a resumed run mid-epoch calls it too). */
  onEpochStart(epoch: number): void {
    void epoch;
  }
  /** Before each step's loss, off the tape (SwAV normalises its prototypes here). */
  beforeStep(ctx: StepContext): void {
    void ctx;
  }
  /**
   * The gradients, keyed by each trainable Variable's `name`, before clipping
   * and the optimizer step; may return changed ones (SwAV zeroes its
   * prototypes' in the first epoch). The trainer disposes every tensor of both maps.
   */
  transformGradients(grads: NamedTensorMap, ctx: StepContext): NamedTensorMap {
    void ctx;
    return grads;
  }
  /** After the optimizer step: EMA updates, queue enqueues. */
  afterStep(ctx: StepContext): void {
    void ctx;
  }

  /**
   * Trains with `comm`'s ranks from now on: every part that exchanges data
   * between ranks (key queues, memory banks) is told, so a method whose
   * state is parameters, BN statistics, EMA twins and such parts needs
   * nothing else. Called once, by the trainer, before the first step.
   */
  useCommunicator(comm: Communicator): void {
    this.comm = comm;
    for (const [, m] of this.namedModules()) {
      if (m !== this && typeof (m as Partial<UsesCommunicator>).useCommunicator === 'function') (m as unknown as UsesCommunicator).useCommunicator(comm);
    }
  }

  /**
   * Why this method cannot train on several ranks yet, or null. Every rank
   * computes its loss on its own shard, so a method is fine when its loss is
   * a mean over samples and its cross-sample state lives in parts that
   * gather across ranks; one that needs the global batch inside the loss is not.
   */
  dataParallelIssue(): string | null {
    return NOT_DATA_PARALLEL[this.name] ?? null;
  }
}

/** What `recluster` returns: a cluster per training image, now and before. */
export interface Reclustering {
  assignments: Int32Array;
  previous: Int32Array | null;
  /** One line for the log (inertia, re-seeded clusters, ...). */
  summary: string;
  /** State-dict name prefixes of re-initialised parameters whose optimizer state restarts (momentum of the old weights). */
  resetOptimizerState?: readonly string[];
}

/** What a method is built from besides its options: the data and the run's backbone. */
export interface MethodContext {
  /** A fresh backbone of the run's architecture; every call gives the same initial weights. */
  backbone: () => ResNet;
  /** 1 (grey) or 3 (RGB): the backbone's input channels. */
  channels: number;
  /** Classes of the labels (0 when unlabeled); only supervised baselines use it. */
  numClasses: number;
  /** Training images: memory banks hold one row each. */
  datasetSize: number;
  /** View size and normalisation for the recipes of src/data/recipes.ts. */
  recipe: RecipeOptions;
  /** The run's seed; heads and per-step draws derive their streams from it. */
  seed: number;
}

/** Training defaults a method's recipe needs, used where the run config sets none. */
export interface MethodRecipe {
  /** Peak SGD learning rate (used when the run sets no lr and keeps SGD). */
  lr?: number;
  warmupEpochs?: number;
  /** The learning-rate schedule's shape (used when the run names none). */
  schedule?: 'cosine' | 'step' | 'constant';
}

export interface MethodSpec<S extends z.ZodTypeAny = z.ZodTypeAny> {
  /** Run-config names; one spec may serve several (mocov1, mocov2). */
  names: readonly string[];
  /** One line for `--help`. */
  description: string;
  /** Strict zod object with defaults: `methodOptions`, validated when the config is parsed. */
  options: S;
  recipe?: MethodRecipe;
  /**
   * Fills in the defaults that depend on the method's name or the data. The
   * result is recorded in the run's config, so a resumed run builds exactly
   * what ran; resolving resolved options must change nothing.
   */
  resolve?(name: string, options: z.infer<S>, ctx: MethodContext): z.infer<S>;
  /**
   * The options a checkpoint was trained with, where its recorded options
   * predate an option added later whose default changes the model: read
   * from the checkpoint's tensor names, so old runs still load and resume.
   */
  fromCheckpoint?(options: Record<string, unknown>, tensorNames: readonly string[]): Record<string, unknown>;
  create(name: string, options: z.infer<S>, ctx: MethodContext): Method;
}

/** Declares a method spec; the identity, for type inference. */
export function defineMethod<S extends z.ZodTypeAny>(spec: MethodSpec<S>): MethodSpec<S> {
  return spec;
}
