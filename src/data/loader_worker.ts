// Worker side of the loader: builds the batches it is asked for and transfers
// their buffers back, so a batch crosses threads without a copy. The dataset
// arrives in SharedArrayBuffers and is read in place.
import { parentPort, workerData } from 'node:worker_threads';
import type { ImageSet } from './image_set.js';
import { batchBuffers, buildBatch, type PipelineSpec } from './pipeline.js';
import { Rng } from '../core/random.js';

export interface WorkerInit {
  dataset: ImageSet;
  pipeline: PipelineSpec;
  /** Key words of the augmentation root generator. */
  key0: number;
  key1: number;
}

export interface BatchRequest {
  id: number;
  epoch: number;
  index: number;
  indices: Int32Array;
}

const init = workerData as WorkerInit;
const root = new Rng(init.key0, init.key1);

parentPort!.on('message', (req: BatchRequest) => {
  try {
    const batch = buildBatch(init.dataset, init.pipeline, root, req.epoch, req.index, req.indices);
    parentPort!.postMessage({ id: req.id, batch }, batchBuffers(batch));
  } catch (err) {
    parentPort!.postMessage({ id: req.id, error: err instanceof Error ? err.message : String(err) });
  }
});
