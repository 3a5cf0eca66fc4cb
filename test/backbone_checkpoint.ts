// A checkpoint file holding only an untrained backbone (ResNet-18 width 4,
// CIFAR stem), for tests of what reads checkpoints (protocols, --compare).
import { CheckpointConfig, saveCheckpoint, type CheckpointState } from '../src/io/checkpoint.js';
import { Module } from '../src/nn/module.js';
import { ResNet } from '../src/nn/resnet.js';

class BackboneHolder extends Module {
  constructor(backbone: ResNet) {
    super();
    this.addModule('backbone', backbone);
  }
}

/** Writes `path`: a `method` checkpoint whose backbone takes `channels`-channel images, its weights drawn from `seed`. */
export function writeBackboneCheckpoint(path: string, { channels, seed, method = 'mocov2' }: { channels: number; seed: number; method?: string }): string {
  const backbone = new ResNet({ depth: 18, stem: 'cifar', width: 4, inChannels: channels, seed });
  const state: CheckpointState = {
    config: CheckpointConfig.parse({ method, seed, model: { arch: 'resnet18', width: 4, stem: 'cifar' }, dataset: {} }),
    position: { step: 1, epoch: 1, batch: 0 },
    data: { channels, numClasses: 10, seed: 0, datasetCount: 64, batchSize: 16, stepsPerEpoch: 4 },
    metrics: [],
    epoch: { sums: {}, batches: 0, images: 0, seconds: 0 },
    elapsed: 0,
  };
  try {
    saveCheckpoint(path, new BackboneHolder(backbone), null, state);
  } finally {
    backbone.dispose();
  }
  return path;
}
