// Extracted features on disk, so a linear probe or a second kNN run on the
// same checkpoint does not push 70k images through the backbone again. One
// file per (checkpoint checksum, stage, split, preprocessing), under the run
// folder, written atomically; the key is stored inside the file and checked
// on load, so a stale or damaged file is recomputed, never trusted.
//
// The key holds a digest of the images and labels themselves: a split's tag
// (a folder's path, `fashion-mnist`) says where the data came from, not what
// it was, and features once outlived every image of a folder being replaced.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { textSha256, writeFileAtomic } from '../core/files.js';
import type { ImageSet } from '../data/image_set.js';
import type { Features } from './features.js';

const MAGIC = 'SSFEAT01';

/** Everything the features depend on. */
export interface FeatureCacheKey {
  /** sha256 of the checkpoint file. */
  checkpoint: string;
  stage: string;
  /** Data set and split, e.g. `fashion-mnist:train`. */
  split: string;
  /** Number of images (the first `count` of the split). */
  count: number;
  /** imageSetDigest of the images the features are of. */
  data: string;
  size: number;
  fit: string;
  mean: number[] | null;
  std: number[] | null;
}

function keyText(key: FeatureCacheKey): string {
  const { checkpoint, stage, split, count, data, size, fit, mean, std } = key;
  return JSON.stringify({ checkpoint, stage, split, count, data, size, fit, mean, std });
}

/** sha256 of a set's shape, pixels and labels (about 35 ms for Fashion-MNIST's 60,000 images). */
export function imageSetDigest(set: ImageSet): string {
  const { count, height, width, channels, images, labels } = set;
  return createHash('sha256')
    .update(JSON.stringify({ count, height, width, channels }))
    .update(images)
    .update(new Uint8Array(labels.buffer, labels.byteOffset, labels.byteLength))
    .digest('hex');
}

/** Where the features for `key` live under `dir`. */
export function featureCachePath(dir: string, key: FeatureCacheKey): string {
  const hash = textSha256(keyText(key)).slice(0, 16);
  const split = key.split.replace(/[^A-Za-z0-9_-]+/g, '_');
  return join(dir, `${split}-${key.stage}-${hash}.features`);
}

/** Layout: magic, u32 header length, JSON header, zero padding to 4 bytes, float32 features. */
export function writeFeatureFile(path: string, key: FeatureCacheKey, { features, dim }: Features): void {
  const header = Buffer.from(JSON.stringify({ key: JSON.parse(keyText(key)), dim, rows: features.length / dim }));
  const prefix = MAGIC.length + 4 + header.length;
  const pad = (4 - (prefix % 4)) % 4;
  const head = Buffer.alloc(prefix + pad);
  head.write(MAGIC, 0, 'latin1');
  head.writeUInt32LE(header.length, MAGIC.length);
  header.copy(head, MAGIC.length + 4);
  writeFileAtomic(path, [head, new Uint8Array(features.buffer, features.byteOffset, features.byteLength)]);
}

/** The features stored for `key`, or undefined when the file is missing, damaged or for another key. */
export function readFeatureFile(path: string, key: FeatureCacheKey): Features | undefined {
  if (!existsSync(path)) return undefined;
  const bytes = readFileSync(path);
  if (bytes.length < MAGIC.length + 4 || bytes.toString('latin1', 0, MAGIC.length) !== MAGIC) return undefined;
  const headerLength = bytes.readUInt32LE(MAGIC.length);
  const prefix = MAGIC.length + 4 + headerLength;
  if (prefix > bytes.length) return undefined;
  let header: { key?: unknown; dim?: number; rows?: number };
  try {
    header = JSON.parse(bytes.toString('utf8', MAGIC.length + 4, prefix));
  } catch {
    return undefined;
  }
  if (JSON.stringify(header.key) !== keyText(key)) return undefined;
  const { dim, rows } = header;
  if (!Number.isInteger(dim) || !Number.isInteger(rows) || rows !== key.count) return undefined;
  const start = prefix + ((4 - (prefix % 4)) % 4);
  if (bytes.length !== start + rows! * dim! * 4) return undefined;
  const features = new Float32Array(rows! * dim!);
  new Uint8Array(features.buffer).set(bytes.subarray(start));
  return { features, dim: dim! };
}

/**
 * The features for `key`: read from `dir` when a valid file is there, else
 * computed and stored. `dir` null turns caching off.
 */
export async function cachedFeatures(
  dir: string | null,
  key: FeatureCacheKey,
  compute: () => Promise<Features>,
): Promise<Features & { cached: boolean }> {
  const path = dir === null ? undefined : featureCachePath(dir, key);
  const stored = path ? readFeatureFile(path, key) : undefined;
  if (stored) return { ...stored, cached: true };
  const fresh = await compute();
  if (path) writeFeatureFile(path, key, fresh);
  return { ...fresh, cached: false };
}
