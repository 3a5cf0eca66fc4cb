// What a run file says about its data, and the image sets it means: the
// training split, the test split (Fashion-MNIST's own; image folders have
// none), and the facts a method is built from (channels, classes, count).
import { z } from 'zod';
import { loadFashionMnist } from './fashion_mnist.js';
import { loadImageFolder } from './image_folder.js';
import { takeImages, type ImageSet } from './image_set.js';
import { FASHION_MNIST_STATS, type RecipeOptions } from './recipes.js';

const FOLDER_PREFIX = 'folder:';

export const DatasetConfig = z
  .object({
    /** `fashion-mnist`, or `folder:PATH` for an image folder. */
    name: z.string().regex(/^(fashion-mnist|folder:.+)$/, 'expected fashion-mnist or folder:PATH').default('fashion-mnist'),
    /** Folder holding the Fashion-MNIST IDX files (default: Debian's dataset-fashion-mnist). */
    dir: z.string().optional(),
    /** Use only the first N training images. */
    limit: z.number().int().positive().optional(),
    /** Working resolution (Fashion-MNIST's 28x28 is padded to 32 for the CIFAR stem). */
    size: z.number().int().min(8).default(32),
  })
  .strict();
export type DatasetConfig = z.infer<typeof DatasetConfig>;

/** The training images `dataset` names, the first `limit` of them when set. */
export async function loadTrainingSet(dataset: DatasetConfig): Promise<ImageSet> {
  if (dataset.name === 'fashion-mnist') return loadFashionMnist({ dir: dataset.dir, split: 'train', limit: dataset.limit });
  const folder = await loadImageFolder(dataset.name.slice(FOLDER_PREFIX.length), { size: dataset.size, channels: 3 });
  return dataset.limit ? takeImages(folder, dataset.limit) : folder;
}

/** Fashion-MNIST's test split; image folders have none (evaluation then holds out part of the folder). */
export function loadTestSet(dataset: DatasetConfig, limit: number): ImageSet | null {
  if (dataset.name !== 'fashion-mnist') return null;
  return loadFashionMnist({ dir: dataset.dir, split: 'test', limit });
}

/** What a method is built from besides its options. */
export interface DataFacts {
  /** 1 (grey) or 3 (RGB). */
  channels: number;
  /** Classes of the labels (0 when unlabeled). */
  numClasses: number;
}

export function dataFacts(set: ImageSet): DataFacts {
  let max = -1;
  for (let i = 0; i < set.labels.length; i++) max = Math.max(max, set.labels[i]!);
  return { channels: set.channels, numClasses: Math.max(set.classNames?.length ?? 0, max + 1) };
}

/**
 * The per-channel statistics training and evaluation normalise with:
 * Fashion-MNIST's for grey images (docs/data.md), none for colour sets, whose
 * statistics we do not know.
 */
export function defaultNormalization(channels: number): { mean: number[]; std: number[] } | null {
  return channels === 1 ? FASHION_MNIST_STATS : null;
}

/** View size and normalisation for the recipes of recipes.ts. */
export function recipeOptions(size: number, channels: number): RecipeOptions {
  return { size, normalize: defaultNormalization(channels) };
}
