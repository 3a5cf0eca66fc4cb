// The supervised baseline: a ResNet and a linear classifier trained with
// softmax cross-entropy on the dataset's labels, on one MoCo v2 view per image
// (the "same augmentations" reference of DESIGN.md section 5). It exercises
// the whole training path and is the upper bound the self-supervised methods
// are read against.
import { Mulberry32 } from '../core/random.js';
import * as tf from '../core/tf.js';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import { mocoV2View, type PipelineSpec, type RecipeOptions } from '../data/index.js';
import { Linear } from '../nn/layers.js';
import { ResNet, type ResNetOptions } from '../nn/resnet.js';
import type { RunConfig } from '../train/config.js';
import { Method, type LossOutput, type TensorBatch } from './method.js';
import { backboneOptions } from './parts/options.js';

export interface SupervisedOptions {
  backbone: ResNetOptions;
  numClasses: number;
  recipe: RecipeOptions;
}

export class Supervised extends Method {
  readonly name = 'supervised';
  readonly backbone: ResNet;
  readonly classifier: Linear;
  readonly numClasses: number;
  private readonly recipe: RecipeOptions;

  constructor(o: SupervisedOptions) {
    super();
    if (!(o.numClasses >= 2)) throw new Error(`supervised: needs labeled data with at least 2 classes, got ${o.numClasses}`);
    this.numClasses = o.numClasses;
    this.recipe = o.recipe;
    this.backbone = this.addModule('backbone', new ResNet(o.backbone));
    this.classifier = this.addModule(
      'classifier',
      new Linear(this.backbone.featureDim, o.numClasses, { rng: new Mulberry32((o.backbone.seed ?? 0) + 1) }),
    );
  }

  static fromConfig(config: RunConfig, data: { channels: number; numClasses: number; recipe: RecipeOptions }): Supervised {
    const unknown = Object.keys(config.methodOptions);
    if (unknown.length) throw new Error(`methodOptions: supervised takes no options, got ${unknown.join(', ')}`);
    return new Supervised({ backbone: backboneOptions(config, data.channels), numClasses: data.numClasses, recipe: data.recipe });
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
