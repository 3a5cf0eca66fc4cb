// Image folders: one subfolder per class (ImageNet's layout), or a flat
// unlabeled folder. Images are decoded with sharp and resized once to the
// working resolution, then cached as one binary file plus a JSON manifest, so
// later epochs and runs never decode again.
//
// The manifest records each file's size and mtime. On load, files whose
// size and mtime are unchanged are taken from the old cache; the rest are
// decoded. Files sharp cannot read are skipped and reported in one warning.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { extname, join, relative, sep } from 'node:path';
import { writeFileAtomic } from '../core/files.js';
import { decodeResized, type Fit } from './decode.js';
import type { ImageSet } from './image_set.js';
import { mapLimited } from './map_limited.js';

const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif']);
const CACHE_VERSION = 1;

export interface ImageFolderOptions {
  /** Working resolution: a side, or [height, width]. */
  size: number | [number, number];
  /** 3 (RGB, default) or 1 (grey). */
  channels?: 1 | 3;
  /** How images are fitted to the size: centre crop (default), letterbox, or stretch. */
  fit?: Fit;
  /** Where caches live; null disables caching. Default $XDG_CACHE_HOME/selfsup/image-folders. */
  cacheDir?: string | null;
  /** Receives the one warning about skipped files (default console.warn). */
  warn?: (message: string) => void;
  /** Images decoded at once (default 4). */
  concurrency?: number;
}

export interface SkippedFile {
  file: string;
  reason: string;
}

export interface ImageFolder extends ImageSet {
  /** Path of each image relative to the folder. */
  files: string[];
  skipped: SkippedFile[];
  /** How many images came from the cache rather than the decoder. */
  cachedCount: number;
}

interface ManifestEntry {
  file: string;
  size: number;
  mtimeMs: number;
  label: number;
  /** Index of the image in the binary file, or -1 for a skipped file. */
  slot: number;
  reason?: string;
}

interface Manifest {
  version: number;
  dir: string;
  height: number;
  width: number;
  channels: number;
  fit: Fit;
  classNames: string[] | null;
  binBytes: number;
  entries: ManifestEntry[];
}

export function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'selfsup', 'image-folders');
}

function listImages(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && IMAGE_EXTENSIONS.has(extname(e.name).toLowerCase())) out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out;
}

/**
 * Scans `dir`: labeled when every image sits in a subfolder (the class is the
 * top-level subfolder's name, classes sorted), unlabeled otherwise.
 */
function scan(dir: string): { files: string[]; labels: number[]; classNames: string[] | null } {
  const files = listImages(dir);
  const labeled = files.length > 0 && files.every((f) => f.includes(sep));
  if (!labeled) return { files, labels: files.map(() => -1), classNames: null };
  const classNames = [...new Set(files.map((f) => f.split(sep)[0]!))].sort();
  const index = new Map(classNames.map((c, i) => [c, i]));
  return { files, labels: files.map((f) => index.get(f.split(sep)[0]!)!), classNames };
}

function readManifest(path: string): Manifest | null {
  try {
    const m = JSON.parse(readFileSync(path, 'utf8')) as Manifest;
    return m.version === CACHE_VERSION ? m : null;
  } catch {
    return null;
  }
}

export async function loadImageFolder(dir: string, options: ImageFolderOptions): Promise<ImageFolder> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`image folder ${dir}: not a folder`);
  const root = realpathSync(dir);
  const [height, width] = typeof options.size === 'number' ? [options.size, options.size] : options.size;
  const channels = options.channels ?? 3;
  const fit = options.fit ?? 'cover';
  const warn = options.warn ?? ((m: string) => console.warn(m));
  const bytes = height * width * channels;

  const { files, labels, classNames } = scan(root);
  if (files.length === 0) throw new Error(`image folder ${dir}: no images (looked for ${[...IMAGE_EXTENSIONS].join(' ')})`);
  const stats = files.map((f) => statSync(join(root, f)));

  const cacheDir = options.cacheDir === undefined ? defaultCacheDir() : options.cacheDir;
  const key = createHash('sha1').update(JSON.stringify({ root, height, width, channels, fit, v: CACHE_VERSION })).digest('hex').slice(0, 16);
  const binPath = cacheDir ? join(cacheDir, `${key}.bin`) : '';
  const manifestPath = cacheDir ? join(cacheDir, `${key}.json`) : '';

  // What the previous cache holds, by file, when size and mtime still match.
  const old = cacheDir ? readManifest(manifestPath) : null;
  let oldBin: Uint8Array | null = null;
  const reusable = new Map<string, ManifestEntry>();
  if (old && existsSync(binPath)) {
    oldBin = readFileSync(binPath);
    if (oldBin.length === old.binBytes) {
      for (const e of old.entries) reusable.set(e.file, e);
    }
  }

  const decoded = await mapLimited(files, options.concurrency ?? 4, async (file, i) => {
    const prev = reusable.get(file);
    if (prev && prev.size === stats[i]!.size && prev.mtimeMs === stats[i]!.mtimeMs) {
      if (prev.slot < 0) return { reason: prev.reason ?? 'unreadable', cached: true };
      return { pixels: oldBin!.subarray(prev.slot * bytes, (prev.slot + 1) * bytes), cached: true };
    }
    try {
      return { pixels: (await decodeResized(join(root, file), width, height, channels, fit)).data, cached: false };
    } catch (err) {
      return { reason: (err as Error).message.replace(`${join(root, file)}: `, ''), cached: false };
    }
  });

  const okCount = decoded.filter((d) => d.pixels).length;
  const images = new Uint8Array(okCount * bytes);
  const outLabels = new Int32Array(okCount);
  const outFiles: string[] = [];
  const skipped: SkippedFile[] = [];
  const entries: ManifestEntry[] = [];
  let cachedCount = 0;
  let changed = !old || decoded.length !== old.entries.length;
  decoded.forEach((d, i) => {
    const entry: ManifestEntry = { file: files[i]!, size: stats[i]!.size, mtimeMs: stats[i]!.mtimeMs, label: labels[i]!, slot: -1 };
    if (!d.cached) changed = true;
    if (d.pixels) {
      entry.slot = outFiles.length;
      images.set(d.pixels, entry.slot * bytes);
      outLabels[entry.slot] = labels[i]!;
      outFiles.push(files[i]!);
      if (d.cached) cachedCount++;
    } else {
      entry.reason = d.reason;
      skipped.push({ file: files[i]!, reason: d.reason! });
    }
    entries.push(entry);
  });

  if (cacheDir && changed) {
    const manifest: Manifest = { version: CACHE_VERSION, dir: root, height, width, channels, fit, classNames, binBytes: images.length, entries };
    // The manifest is the commit point: it is written only after the pixels it describes.
    writeFileAtomic(binPath, images);
    writeFileAtomic(manifestPath, JSON.stringify(manifest));
  }
  if (skipped.length > 0) {
    const list = skipped.map((s) => `  ${s.file}: ${s.reason}`).join('\n');
    warn(`image folder ${dir}: skipped ${skipped.length} of ${files.length} files that could not be decoded:\n${list}`);
  }
  if (okCount === 0) throw new Error(`image folder ${dir}: none of its ${files.length} images could be decoded`);

  return {
    images,
    count: okCount,
    height,
    width,
    channels,
    labels: outLabels,
    classNames: classNames ?? undefined,
    files: outFiles,
    skipped,
    cachedCount,
  };
}
