// Loader throughput, for `npm run bench` (bench/engines.ts). Views are output
// images: a jigsaw set of 9 patches counts 9.
import type { ImageSet } from './image_set.js';
import { Loader } from './loader.js';
import { viewsPerSample, type PipelineSpec } from './pipeline.js';

export interface ThroughputOptions {
  dataset: ImageSet;
  pipeline: PipelineSpec;
  batchSize: number;
  workers: number;
  /** Batches timed (default 20), after `warmup` untimed ones (default 2: worker start-up, JIT). */
  batches?: number;
  warmup?: number;
  seed?: number;
}

export interface ThroughputResult {
  workers: number;
  batchSize: number;
  batches: number;
  seconds: number;
  samplesPerSecond: number;
  viewsPerSample: number;
  viewsPerSecond: number;
}

export async function measureLoaderThroughput(o: ThroughputOptions): Promise<ThroughputResult> {
  const batches = o.batches ?? 20;
  const warmup = o.warmup ?? 2;
  const loader = new Loader(o.dataset, o.pipeline, {
    batchSize: o.batchSize,
    workers: o.workers,
    seed: o.seed ?? 0,
    dropLast: true,
  });
  try {
    let seen = 0;
    let samples = 0;
    let start = performance.now();
    for (let epoch = 0; seen < warmup + batches; epoch++) {
      for await (const batch of loader.epoch(epoch)) {
        seen++;
        // The clock starts when the last warm-up batch has arrived.
        if (seen === warmup) start = performance.now();
        else if (seen > warmup) samples += batch.indices.length;
        if (seen >= warmup + batches) break;
      }
    }
    const seconds = (performance.now() - start) / 1000;
    const perSample = viewsPerSample(o.pipeline);
    return {
      workers: o.workers,
      batchSize: o.batchSize,
      batches,
      seconds,
      samplesPerSecond: samples / seconds,
      viewsPerSample: perSample,
      viewsPerSecond: (samples * perSample) / seconds,
    };
  } finally {
    await loader.close();
  }
}
