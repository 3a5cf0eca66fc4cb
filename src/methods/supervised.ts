// The supervised baseline: a ResNet and a linear classifier trained with
// softmax cross-entropy on the dataset's labels, on one MoCo v2 view per image
// (the "same augmentations" reference of docs/architecture.md). It exercises
// the whole training path and is the upper bound the self-supervised methods
// are read against.
import { z } from 'zod';
import { Mulberry32 } from '../core/random.js';
import * as tf from '../core/tf.js';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import { mocoV2View, type PipelineSpec, type RecipeOptions } from '../data/index.js';
import { Linear } from '../nn/layers.js';
import type { ResNet } from '../nn/resnet.js';
import { Method, defineMethod, type LossOutput, type MethodContext, type TensorBatch } from './method.js';

export const SupervisedOptions = z.object({}).strict();

export class Supervised extends Method {
  readonly name = 'supervised';
  readonly backbone: ResNet;
  readonly classifier: Linear;
  readonly numClasses: number;
  private readonly recipe: RecipeOptions;

  constructor(ctx: MethodContext) {
    super();
    if (!(ctx.numClasses >= 2)) throw new Error(`supervised: needs labeled data with at least 2 classes, got ${ctx.numClasses}`);
    this.numClasses = ctx.numClasses;
    this.recipe = ctx.recipe;
    this.backbone = this.addModule('backbone', ctx.backbone());
    this.classifier = this.addModule('classifier', new Linear(this.backbone.featureDim, ctx.numClasses, { rng: new Mulberry32(ctx.seed + 1) }));
  }

  pipeline(): PipelineSpec {
    return { outputs: [{ kind: 'view', name: 'view', view: mocoV2View(this.recipe) }] };
  }

  logits(x: TensorBatch['views'][string]): Tensor2D {
    return this.classifier.forward(this.backbone.features(x));
  }

  loss(batch: TensorBatch): LossOutput {
    const logits = this.logits(batch.views.view!);
    const targets = tf.oneHot(batch.labels, this.numClasses);
    const loss = tf.losses.softmaxCrossEntropy(targets, logits);
    const acc = tf.mean(tf.cast(tf.equal(tf.argMax(logits, 1), batch.labels), 'float32'));
    return { loss, terms: { ce: loss, acc } } as LossOutput;
  }
}

export const supervisedSpec = defineMethod({
  names: ['supervised'],
  description: 'the supervised baseline: cross-entropy on the labels, same augmentations',
  options: SupervisedOptions,
  create: (_name, _o, ctx) => new Supervised(ctx),
});
