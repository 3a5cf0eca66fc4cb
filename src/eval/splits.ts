// Held-out splits of one image set, for data with no test split of its own
// (image folders): a seeded permutation, its first `held` images the test
// side and the next ones the training side. Each user draws from its own
// stream, so evaluation and online kNN hold out different images.
import { Rng } from '../core/random.js';
import { selectImages, type ImageSet } from '../data/image_set.js';

export interface HoldoutOptions {
  seed: number;
  /** The stream of `Rng.seeded(seed)` the permutation comes from. */
  stream: number;
  /** Images held out for testing: the first `held` of the permutation. */
  held: number;
  /** Keep only this many of the held-out images (default all). */
  testLimit?: number;
  /** Keep only this many training images, the next after the held-out ones (default all). */
  trainLimit?: number;
}

export function holdoutSplit(set: ImageSet, o: HoldoutOptions): { train: ImageSet; test: ImageSet } {
  const perm = Rng.seeded(o.seed).split(o.stream).permutation(set.count);
  const test = perm.subarray(0, Math.min(o.held, o.testLimit ?? o.held));
  const train = perm.subarray(o.held, o.held + (o.trainLimit ?? set.count));
  return { train: selectImages(set, train), test: selectImages(set, test) };
}
