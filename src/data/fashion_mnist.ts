// Fashion-MNIST (Xiao et al. 2017) from its IDX files. Debian's
// dataset-fashion-mnist package puts them in /usr/share/datasets/fashion-mnist.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readIdxFile } from './idx.js';
import type { ImageSet } from './image_set.js';

export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

export const FASHION_MNIST_CLASSES = [
  'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
  'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
];

const FILES = {
  train: ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte'],
  test: ['t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'],
} as const;

export interface FashionMnistOptions {
  /** Folder with the four IDX files, gzipped or not. */
  dir?: string;
  split?: 'train' | 'test';
  /** Keep only the first `limit` images. */
  limit?: number;
}

function locate(dir: string, base: string): string {
  for (const name of [`${base}.gz`, base]) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  const hint = dir === FASHION_MNIST_DIR ? ' (install it with `apt-get install dataset-fashion-mnist`)' : '';
  throw new Error(`Fashion-MNIST: ${join(dir, base)}.gz not found${hint}`);
}

export function loadFashionMnist(options: FashionMnistOptions = {}): ImageSet {
  const dir = options.dir ?? FASHION_MNIST_DIR;
  const split = options.split ?? 'train';
  const [imagesBase, labelsBase] = FILES[split];
  const imagesFile = locate(dir, imagesBase);
  const labelsFile = locate(dir, labelsBase);
  const images = readIdxFile(imagesFile, 3);
  const labels = readIdxFile(labelsFile, 1);
  const [count, height, width] = images.dims as [number, number, number];
  if (height !== 28 || width !== 28) {
    throw new Error(`${imagesFile}: Fashion-MNIST images are 28x28, the header says ${height}x${width}`);
  }
  if (labels.dims[0] !== count) {
    throw new Error(`${labelsFile}: ${labels.dims[0]} labels, but ${imagesFile} has ${count} images`);
  }
  const n = Math.min(count, options.limit ?? count);
  const lab = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = labels.data[i]!;
    if (v > 9) throw new Error(`${labelsFile}: label ${v} at index ${i} is not a Fashion-MNIST class (0-9)`);
    lab[i] = v;
  }
  return {
    images: images.data.subarray(0, n * height * width),
    count: n,
    height,
    width,
    channels: 1,
    labels: lab,
    classNames: FASHION_MNIST_CLASSES,
  };
}
