// The one in-memory dataset type every source produces: N images of the same
// size as uint8 HWC, plus integer labels. Bytes rather than floats because
// Fashion-MNIST's 60k images then fit in 47 MB, and because a
// SharedArrayBuffer of bytes is what the loader's workers read without copying.

export interface ImageSet {
  /** N * height * width * channels bytes, images back to back, HWC. */
  images: Uint8Array;
  count: number;
  height: number;
  width: number;
  /** 1 (grey) or 3 (RGB). */
  channels: number;
  /** One per image; -1 where the set is unlabeled. */
  labels: Int32Array;
  /** Label i's name, when known. */
  classNames?: string[];
}

/** Bytes per image. */
export function imageBytes(set: Pick<ImageSet, 'height' | 'width' | 'channels'>): number {
  return set.height * set.width * set.channels;
}

/**
 * Wraps arrays an API user already has. `images` may be bytes (0..255) or
 * floats in [0, 1]; floats are quantised to bytes, which loses nothing an
 * 8-bit source had.
 */
export function arrayImageSet(
  images: Uint8Array | Float32Array,
  shape: { count: number; height: number; width: number; channels: number },
  labels?: ArrayLike<number>,
  classNames?: string[],
): ImageSet {
  const { count, height, width, channels } = shape;
  if (channels !== 1 && channels !== 3) throw new Error(`arrayImageSet: channels must be 1 or 3, got ${channels}`);
  const expected = count * height * width * channels;
  if (images.length !== expected) {
    throw new Error(
      `arrayImageSet: ${count} images of ${height}x${width}x${channels} need ${expected} values, got ${images.length}`,
    );
  }
  if (labels && labels.length !== count) {
    throw new Error(`arrayImageSet: ${count} images but ${labels.length} labels`);
  }
  let bytes: Uint8Array;
  if (images instanceof Uint8Array) {
    bytes = images;
  } else {
    bytes = new Uint8Array(images.length);
    for (let i = 0; i < images.length; i++) bytes[i] = Math.round(Math.min(1, Math.max(0, images[i]!)) * 255);
  }
  const lab = new Int32Array(count).fill(-1);
  if (labels) for (let i = 0; i < count; i++) lab[i] = labels[i]!;
  return { images: bytes, count, height, width, channels, labels: lab, classNames };
}

/** The first `n` images (a view, not a copy). */
export function takeImages(set: ImageSet, n: number): ImageSet {
  const count = Math.min(n, set.count);
  return {
    ...set,
    count,
    images: set.images.subarray(0, count * imageBytes(set)),
    labels: set.labels.subarray(0, count),
  };
}

/** The images at `indices`, copied into a new set. */
export function selectImages(set: ImageSet, indices: ArrayLike<number>): ImageSet {
  const bytes = imageBytes(set);
  const images = new Uint8Array(indices.length * bytes);
  const labels = new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const j = indices[i]!;
    images.set(set.images.subarray(j * bytes, (j + 1) * bytes), i * bytes);
    labels[i] = set.labels[j]!;
  }
  return { ...set, images, labels, count: indices.length };
}

/**
 * The same set backed by SharedArrayBuffers, so worker threads read the pixels
 * in place. Returns `set` itself when it already is.
 */
export function toSharedImageSet(set: ImageSet): ImageSet {
  if (set.images.buffer instanceof SharedArrayBuffer && set.labels.buffer instanceof SharedArrayBuffer) return set;
  const images = new Uint8Array(new SharedArrayBuffer(set.images.byteLength));
  images.set(set.images);
  const labels = new Int32Array(new SharedArrayBuffer(set.labels.byteLength));
  labels.set(set.labels);
  return { ...set, images, labels };
}
