// What a run file says about its data, and the image sets it means: the
// training split, the test split (Fashion-MNIST's own, an objects folder's
// val; plain image folders have none), and the facts a method is built from
// (channels, classes, count).
import { resolve } from 'node:path';
import { z } from 'zod';
import { loadFashionMnist } from './fashion_mnist.js';
import { loadImageFolder } from './image_folder.js';
import { takeImages, type ImageSet } from './image_set.js';
import { loadObjectImages } from './objects.js';
import { FASHION_MNIST_STATS, type RecipeOptions } from './recipes.js';

const FOLDER_PREFIX = 'folder:';
const OBJECTS_PREFIX = 'objects:';

export const DatasetConfig = z
  .object({
    /**
     * `fashion-mnist`, `folder:PATH` for an image folder, or `objects:DIR` for
     * a `selfsup data objects` folder (DIR/train, with DIR/val as the test split).
     */
    name: z
      .string()
      .regex(/^(fashion-mnist|folder:.+|objects:.+)$/, 'expected fashion-mnist, folder:PATH or objects:DIR')
      .default('fashion-mnist'),
    /** Folder holding the Fashion-MNIST IDX files (default: Debian's dataset-fashion-mnist). */
    dir: z.string().optional(),
    /** Use only the first N training images. */
    limit: z.number().int().positive().optional(),
    /** Working resolution (Fashion-MNIST's 28x28 is padded to 32 for the CIFAR stem). */
    size: z.number().int().min(8).default(32),
  })
  .strict();
export type DatasetConfig = z.infer<typeof DatasetConfig>;

/** The folder of an `objects:DIR` data set, or null for another kind. */
export function objectsDir(dataset: Pick<DatasetConfig, 'name'>): string | null {
  return dataset.name.startsWith(OBJECTS_PREFIX) ? dataset.name.slice(OBJECTS_PREFIX.length) : null;
}

/** Whether `dataset` has its own test split (else evaluation holds out part of the training images). */
export function hasTestSplit(dataset: Pick<DatasetConfig, 'name'>): boolean {
  return dataset.name === 'fashion-mnist' || objectsDir(dataset) !== null;
}

/** The val splits of objects folders this process has read, by folder: loadTestSet hands them out synchronously. */
const objectsVal = new Map<string, ImageSet | null>();

const objectsWho = (dir: string) => `--dataset (dataset.name) objects:${dir}`;

async function loadObjectsSplit(dir: string, split: 'train' | 'val'): Promise<ImageSet | null> {
  const set = await loadObjectImages(dir, split, { who: objectsWho(dir) });
  if (split === 'val') objectsVal.set(resolve(dir), set);
  return set;
}

/**
 * The training images `dataset` names, the first `limit` of them when set.
 * An objects folder is read at the size it was generated at (views are then
 * cut at `dataset.size`), and its val split is read along with it.
 */
export async function loadTrainingSet(dataset: DatasetConfig): Promise<ImageSet> {
  if (dataset.name === 'fashion-mnist') return loadFashionMnist({ dir: dataset.dir, split: 'train', limit: dataset.limit });
  const dir = objectsDir(dataset);
  if (dir !== null) {
    const train = (await loadObjectsSplit(dir, 'train'))!;
    await loadObjectsSplit(dir, 'val');
    return dataset.limit ? takeImages(train, dataset.limit) : train;
  }
  const folder = await loadImageFolder(dataset.name.slice(FOLDER_PREFIX.length), { size: dataset.size, channels: 3 });
  return dataset.limit ? takeImages(folder, dataset.limit) : folder;
}

/**
 * The first `limit` test images: Fashion-MNIST's test split, or an objects
 * folder's val split (read by loadTrainingSet, which must come first; null
 * when the folder has no val images). Plain image folders have none
 * (evaluation then holds out part of the folder).
 */
export function loadTestSet(dataset: DatasetConfig, limit: number): ImageSet | null {
  if (dataset.name === 'fashion-mnist') return loadFashionMnist({ dir: dataset.dir, split: 'test', limit });
  const dir = objectsDir(dataset);
  if (dir === null) return null;
  const val = objectsVal.get(resolve(dir));
  if (val === undefined) throw new Error(`${objectsWho(dir)}: its val split is read by loadTrainingSet; call that (or loadTestSplit) first`);
  return val && takeImages(val, limit);
}

/** loadTestSet without the ordering rule: reads an objects folder's val split itself. */
export async function loadTestSplit(dataset: DatasetConfig, limit: number): Promise<ImageSet | null> {
  const dir = objectsDir(dataset);
  if (dir !== null && !objectsVal.has(resolve(dir))) await loadObjectsSplit(dir, 'val');
  return loadTestSet(dataset, limit);
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
