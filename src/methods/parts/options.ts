// What every method factory does with a run config: validate its
// `methodOptions` (unknown keys are errors naming the method) and build the
// backbone the config's `model` describes.
import type { z } from 'zod';
import { ResNet, type ResNetDepth, type ResNetOptions } from '../../nn/resnet.js';
import type { RunConfig } from '../../train/config.js';

/** `config.methodOptions` parsed by `schema` (a strict zod object with defaults). */
export function parseMethodOptions<S extends z.ZodTypeAny>(method: string, schema: S, config: RunConfig): z.infer<S> {
  const result = schema.safeParse(config.methodOptions);
  if (result.success) return result.data;
  // Each line names the key and where it lives in a run file.
  const lines = result.error.issues.map((i) => {
    const key = i.path.join('.');
    return key ? `  ${key}: ${i.message} (methodOptions.${key})` : `  (root): ${i.message}`;
  });
  throw new Error(`methodOptions for ${method} are invalid:\n${lines.join('\n')}`);
}

/** The options of the ResNet `config.model` describes, for `channels`-channel images, seeded by the run. */
export function backboneOptions(config: RunConfig, channels: number): ResNetOptions {
  const { arch, width, stem } = config.model;
  return { depth: Number(arch.slice('resnet'.length)) as ResNetDepth, width, stem, inChannels: channels, seed: config.seed };
}

/** The ResNet of `config.model` (see backboneOptions). */
export function backboneFor(config: RunConfig, channels: number): ResNet {
  return new ResNet(backboneOptions(config, channels));
}

/**
 * Training images, for memory banks: the config's `dataset.limit`, else the
 * whole Fashion-MNIST training split; an image folder without a limit needs
 * the count from `methodOptions.bankSize`.
 */
export function trainingSetSize(method: string, config: RunConfig, bankSize?: number): number {
  if (bankSize !== undefined) return bankSize;
  const full = config.dataset.name === 'fashion-mnist' ? 60_000 : undefined;
  const size = config.dataset.limit !== undefined ? Math.min(config.dataset.limit, full ?? Infinity) : full;
  if (size === undefined) {
    throw new Error(`methodOptions for ${method}: set bankSize to the number of training images (the memory bank holds one row per image)`);
  }
  return size;
}

/** A seed for step `step`'s random draws: a resumed run draws the very same ones. */
export function stepSeed(seed: number, step: number): number {
  return (Math.imul(seed + 1, 0x9e3779b1) + step) >>> 0;
}
