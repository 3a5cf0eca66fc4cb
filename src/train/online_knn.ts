// Online kNN: a cheap read-out of the representation after each epoch, on a
// fixed held-out subset, as solo-learn and MoCo monitor training. Queries are
// the first `testSamples` test images; the memory is the first `trainSamples`
// training images. Image folders have no test split, so a seeded permutation
// splits the folder into disjoint queries and memory. Features are the
// backbone's pooled res5 in eval mode (src/eval/features.ts), votes weighted
// by exp(cos / 0.1) (src/eval/knn.ts).
import { selectImages, type ImageSet } from '../data/image_set.js';
import { extractFeatures } from '../eval/features.js';
import { knnAccuracy } from '../eval/knn.js';
import { holdoutSplit } from '../eval/splits.js';
import type { ResNet } from '../nn/resnet.js';
import type { RunConfig } from './config.js';
import type { KnnMetrics } from './metrics.js';

const HOLDOUT_STREAM = 0x6b6e6e;

function range(n: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => i);
}

export class OnlineKnn {
  constructor(
    readonly memory: ImageSet,
    readonly queries: ImageSet,
    /** Normalisation is extractFeatures' default, the one training used (src/train/data.ts). */
    readonly options: { size: number; k: number; numClasses: number },
  ) {}

  /**
   * The held-out sets a config asks for, or a reason there are none (online
   * kNN off, or unlabeled data).
   */
  static fromConfig(config: RunConfig, train: ImageSet, test: ImageSet | null, numClasses: number): OnlineKnn | string {
    const o = config.onlineKnn;
    if (o.every === 0) return 'online kNN is off (onlineKnn.every = 0)';
    if (numClasses < 2) return 'online kNN needs labels, and the training set has none';
    const options = { size: config.dataset.size, k: o.k, numClasses };
    if (test) {
      return new OnlineKnn(selectImages(train, range(Math.min(o.trainSamples, train.count))), selectImages(test, range(Math.min(o.testSamples, test.count))), options);
    }
    if (train.count < 2) return 'online kNN needs at least two images';
    const held = Math.min(o.testSamples, Math.floor(train.count / 2));
    const split = holdoutSplit(train, { seed: config.seed, stream: HOLDOUT_STREAM, held, trainLimit: Math.min(o.trainSamples, train.count - held) });
    return new OnlineKnn(split.train, split.test, options);
  }

  /** Top-1 kNN accuracy of `backbone`'s features; the backbone's modes are left as they were. */
  async evaluate(backbone: ResNet): Promise<KnnMetrics> {
    const { size, k, numClasses } = this.options;
    const extract = (set: ImageSet) => extractFeatures(backbone, set, { size, batchSize: 256 });
    const memory = await extract(this.memory);
    const queries = await extract(this.queries);
    const acc = knnAccuracy(memory.features, this.memory.labels, queries.features, this.queries.labels, memory.dim, {
      k,
      temperature: 0.1,
      weighted: true,
      numClasses,
    });
    return { top1: acc.top1, k, queries: this.queries.count, memory: this.memory.count };
  }
}
