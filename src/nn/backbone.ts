// What a run file says about its backbone, and the ResNet it means. The
// checkpoint reader, the methods and the evaluation protocols all build
// backbones from this one description.
import { z } from 'zod';
import { ResNet, type ResNetDepth, type ResNetOptions } from './resnet.js';

export const ARCHS = ['resnet18', 'resnet34', 'resnet50'] as const;
export const STEMS = ['cifar', 'imagenet'] as const;

export const BackboneConfig = z
  .object({
    arch: z.enum(ARCHS).default('resnet18'),
    width: z.number().int().positive().default(16),
    stem: z.enum(STEMS).default('cifar'),
  })
  .strict();
export type BackboneConfig = z.infer<typeof BackboneConfig>;

/** The ResNet options of `model` for `channels`-channel images, initialised from `seed`. */
export function backboneOptions(model: BackboneConfig, channels: number, seed: number): ResNetOptions {
  return { depth: Number(model.arch.slice('resnet'.length)) as ResNetDepth, width: model.width, stem: model.stem, inChannels: channels, seed };
}

/** A fresh ResNet of `model`: the same seed gives the same initial weights. */
export function buildBackbone(model: BackboneConfig, channels: number, seed: number): ResNet {
  return new ResNet(backboneOptions(model, channels, seed));
}

/** "resnet18 width 16 cifar stem": how checkpoints name an architecture. */
export function archLabel(model: BackboneConfig): string {
  return `${model.arch} width ${model.width} ${model.stem} stem`;
}
