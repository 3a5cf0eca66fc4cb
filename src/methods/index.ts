// The method registry: a run config's `method` name -> a factory. A new method
// is one file in this folder plus one line here.
import { FASHION_MNIST_STATS, type RecipeOptions } from '../data/index.js';
import type { RunConfig } from '../train/config.js';
import type { Method } from './method.js';
import { Supervised } from './supervised.js';
import { MoCo } from './moco.js';
import { DetCo } from './detco.js';
import { InsDis } from './insdis.js';
import { SimCLR } from './simclr.js';
import { BYOL } from './byol.js';
import { PIRL } from './pirl.js';

/** What a factory learns about the training data besides the config. */
export interface MethodData {
  /** 1 (grey) or 3 (RGB): the backbone's input channels. */
  channels: number;
  /** Classes of the labels (0 when unlabeled); only supervised baselines use it. */
  numClasses: number;
  /** View size and normalisation for the recipes of src/data/recipes.ts. */
  recipe: RecipeOptions;
}

export type MethodFactory = (config: RunConfig, data: MethodData) => Method;

const registry = new Map<string, MethodFactory>([
  ['supervised', (config, data) => Supervised.fromConfig(config, data)],
  ['mocov1', (config, data) => MoCo.fromConfig('v1', config, data)],
  ['mocov2', (config, data) => MoCo.fromConfig('v2', config, data)],
  ['detco', (config, data) => DetCo.fromConfig(config, data)],
  ['insdis', (config, data) => InsDis.fromConfig(config, data)],
  ['simclr', (config, data) => SimCLR.fromConfig(config, data)],
  ['byol', (config, data) => BYOL.fromConfig(config, data)],
  ['pirl', (config, data) => PIRL.fromConfig(config, data)],
]);

/** Adds (or replaces) a method; for plug-ins and tests. */
export function registerMethod(name: string, factory: MethodFactory): void {
  registry.set(name, factory);
}

export function methodNames(): string[] {
  return [...registry.keys()].sort();
}

/**
 * What the config alone says about the data: Fashion-MNIST is grey with 10
 * classes; an image folder is RGB with unknown classes. The trainer passes
 * the loaded set's real figures instead.
 */
export function methodDataFor(config: RunConfig): MethodData {
  const grey = config.dataset.name === 'fashion-mnist';
  return {
    channels: grey ? 1 : 3,
    numClasses: grey ? 10 : 0,
    recipe: { size: config.dataset.size, normalize: grey ? FASHION_MNIST_STATS : null },
  };
}

/** Builds the method `config.method` names; an unknown name is an error listing the known ones. */
export function createMethod(config: RunConfig, data: MethodData = methodDataFor(config)): Method {
  const factory = registry.get(config.method);
  if (!factory) throw new Error(`method: unknown method '${config.method}'; choose one of ${methodNames().join(', ')}`);
  return factory(config, data);
}

export { Method, type LossOutput, type StepContext, type TensorBatch } from './method.js';
export { Supervised } from './supervised.js';
