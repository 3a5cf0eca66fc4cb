// A backbone without its method: what evaluation and transfer read from a
// checkpoint. Only the `backbone.*` tensors and the config's model, data and
// seed are used, so a checkpoint whose heads an older version shaped
// differently still evaluates.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileSha256 } from '../core/files.js';
import { archLabel, buildBackbone } from '../nn/backbone.js';
import type { ResNet } from '../nn/resnet.js';
import { checkpointMethodOptions, createMethod, methodContext, type Method } from '../methods/index.js';
import { LAST_CHECKPOINT, readCheckpoint, restoreMethod, restoreModule, type Checkpoint, type CheckpointConfig, type DataInfo } from './checkpoint.js';

/** Every method keeps its encoder under this name (methods/method.ts). */
export const BACKBONE_PREFIX = 'backbone.';

/** A checkpoint file, or a run folder meaning its last checkpoint; `flag` names the input in errors. */
export function resolveCheckpointPath(path: string, flag = '--checkpoint'): string {
  if (!existsSync(path)) throw new Error(`${flag}: ${path} does not exist`);
  if (!statSync(path).isDirectory()) return path;
  const last = join(path, LAST_CHECKPOINT);
  if (!existsSync(last)) throw new Error(`${flag}: the folder ${path} holds no ${LAST_CHECKPOINT}`);
  return last;
}

/** Loads the checkpoint's backbone tensors into `backbone`, as strictly as a whole method is restored. */
export function restoreBackbone(checkpoint: Checkpoint, backbone: ResNet): void {
  restoreModule(checkpoint, backbone, BACKBONE_PREFIX, `the ${checkpoint.method} backbone`);
}

export interface LoadedBackbone {
  /** In eval mode. */
  backbone: ResNet;
  checkpoint: {
    path: string;
    /** sha256 of the checkpoint file; null for an untrained backbone. */
    sha256: string | null;
    method: string;
    arch: string;
    randomInit: boolean;
  };
  /** The run's config as far as the backbone and its data go. */
  config: CheckpointConfig;
  data: DataInfo;
}

/**
 * The backbone a checkpoint (or run folder) holds. With `randomInit` the
 * run's architecture at its seed's initial weights instead: the baseline every
 * method must beat.
 */
export function loadBackbone(path: string, { randomInit = false }: { randomInit?: boolean } = {}): LoadedBackbone {
  const file = resolveCheckpointPath(path);
  const checkpoint = readCheckpoint(file);
  const { config, data } = checkpoint.state;
  const backbone = buildBackbone(config.model, data.channels, config.seed);
  try {
    if (!randomInit) restoreBackbone(checkpoint, backbone);
  } catch (err) {
    backbone.dispose();
    throw err;
  }
  backbone.eval();
  return {
    backbone,
    checkpoint: { path: file, sha256: randomInit ? null : fileSha256(file), method: checkpoint.method, arch: archLabel(config.model), randomInit },
    config,
    data: { channels: data.channels, numClasses: data.numClasses },
  };
}

/** The whole method that trained `checkpoint` (heads, momentum encoders, queues), rebuilt from its recorded config and data facts, restored unless `randomInit`, in eval mode. */
export function methodFromCheckpoint(checkpoint: Checkpoint, randomInit = false): Method {
  const { config, data } = checkpoint.state;
  const ctx = methodContext(config, { channels: data.channels, numClasses: data.numClasses, datasetSize: data.datasetCount });
  const name = checkpoint.method || config.method;
  const options = checkpointMethodOptions(name, (config as Record<string, unknown>).methodOptions, Object.keys(checkpoint.model));
  const method = createMethod(name, options, ctx);
  try {
    if (!randomInit) restoreMethod(checkpoint, method);
  } catch (err) {
    method.dispose();
    throw err;
  }
  return method.eval();
}
