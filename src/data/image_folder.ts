// Image folders: one subfolder per class (ImageNet's layout), or a flat
// unlabeled folder. Images are decoded with sharp and resized once to the
// working resolution, then cached as one binary file plus a JSON manifest, so
// later epochs and runs never decode again.
//
// The manifest records each file's size and mtime. On load, files whose
// size and mtime are unchanged are taken from the old cache; the rest are
// decoded. Files sharp cannot read are skipped and reported in one warning.
//
// The two cache files cannot be replaced together, so the manifest (written
// last) is the one commit point: it carries the sha256 of the binary file it
// describes, and a binary file that does not match is ignored. A crash between
// the two renames then costs a re-decode, never pixels paired with the wrong
// file (an old manifest's slots over a new binary file of the same length).
//
// Symbolic links are followed, to files and to folders; a folder reached
// twice (a link loop, or two links to one folder) is listed once. What the
// scan found, used and left out is counted in `summary`.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, type Stats } from 'node:fs';
import { homedir } from 'node:os';
import { extname, join, relative, sep } from 'node:path';
import { writeFileAtomic } from '../core/files.js';
import { decodeResized, type Fit } from './decode.js';
import type { ImageSet } from './image_set.js';
import { mapLimited } from './map_limited.js';

const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif']);
/** Part of the cache key: a new key would orphan every existing cache. */
const KEY_VERSION = 1;
/** 2: the manifest carries the binary file's sha256. */
const CACHE_VERSION = 2;
/** A temporary cache file this old belongs to no live write, whatever wrote it. */
const STALE_TEMP_MS = 24 * 3600 * 1000;

/** The steps of a cache write, in order, as the `onCacheWrite` hook names them. */
export const CACHE_WRITE_STEPS = ['data-temp', 'data', 'manifest-temp', 'manifest'] as const;
export type CacheWriteStep = (typeof CACHE_WRITE_STEPS)[number];
/** Testing: `SELFSUP_IMAGE_CACHE_KILL=<step>` SIGKILLs the process at that step of a cache write. */
const KILL_ENV = 'SELFSUP_IMAGE_CACHE_KILL';

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
  /**
   * Testing: called at each step of a cache write (a temporary file complete,
   * then renamed into place); throwing there leaves the cache as a kill would.
   */
  onCacheWrite?: (step: CacheWriteStep) => void;
}

export interface SkippedFile {
  file: string;
  reason: string;
}

/** Why a file was left out. */
export type SkipReason = 'not an image' | 'unreadable' | 'broken link' | 'link loop' | 'folder listed twice';

export interface FolderSummary {
  /** Files (and links to files or folders) under the folder; hidden ones are not counted. */
  found: number;
  /** Images in the set. */
  used: number;
  /** Entries left out, by reason (only reasons that occurred). */
  skipped: Partial<Record<SkipReason, number>>;
}

export interface ImageFolder extends ImageSet {
  /** Path of each image relative to the folder. */
  files: string[];
  /** Image files that were left out (unreadable, broken links, loops), with the reason. */
  skipped: SkippedFile[];
  /** How many images came from the cache rather than the decoder. */
  cachedCount: number;
  summary: FolderSummary;
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
  binSha256: string;
  entries: ManifestEntry[];
}

export function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  return join(base, 'selfsup', 'image-folders');
}

interface Listing {
  files: string[];
  /** Entries left out other than non-images, which are only counted. */
  skipped: Array<SkippedFile & { kind: SkipReason }>;
  found: number;
  notImages: number;
}

const errorCode = (err: unknown) => (err as NodeJS.ErrnoException).code ?? (err as Error).message;

/**
 * Image files under `dir`, sorted, following symbolic links (Dirent's
 * isFile/isDirectory are both false for a link, which once dropped linked
 * images without a word). Each folder is listed once by its real path, which
 * ends link loops.
 */
function listImages(dir: string, rootReal: string): Listing {
  const listing: Listing = { files: [], skipped: [], found: 0, notImages: 0 };
  const skip = (p: string, kind: SkipReason, detail?: string) => {
    listing.skipped.push({ file: relative(dir, p), kind, reason: detail ? `${kind} (${detail})` : kind });
  };
  const listed = new Set<string>([rootReal]);
  const onPath = new Set<string>([rootReal]);
  const walk = (d: string) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
    } catch (err) {
      skip(d, 'unreadable', `folder: ${errorCode(err)}`);
      return;
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const p = join(d, e.name);
      let isDirectory = e.isDirectory();
      let isFile = e.isFile();
      if (e.isSymbolicLink()) {
        let target: Stats;
        try {
          target = statSync(p);
        } catch (err) {
          listing.found++;
          const code = errorCode(err);
          if (code === 'ELOOP') skip(p, 'link loop', code);
          else if (code === 'ENOENT' || code === 'ENOTDIR') skip(p, 'broken link', code);
          else skip(p, 'unreadable', code);
          continue;
        }
        isDirectory = target.isDirectory();
        isFile = target.isFile();
      }
      if (isDirectory) {
        let real: string;
        try {
          real = realpathSync(p);
        } catch (err) {
          skip(p, 'unreadable', `folder: ${errorCode(err)}`);
          continue;
        }
        if (onPath.has(real) || listed.has(real)) {
          listing.found++;
          if (onPath.has(real)) skip(p, 'link loop', `back to ${relative(dir, real) || '.'}`);
          else skip(p, 'folder listed twice', `same folder as one listed before`);
          continue;
        }
        listed.add(real);
        onPath.add(real);
        walk(p);
        onPath.delete(real);
      } else {
        listing.found++;
        if (isFile && IMAGE_EXTENSIONS.has(extname(e.name).toLowerCase())) listing.files.push(relative(dir, p));
        else listing.notImages++;
      }
    }
  };
  walk(dir);
  return listing;
}

/**
 * Scans `dir`: labeled when every image sits in a subfolder (the class is the
 * top-level subfolder's name, classes sorted), unlabeled otherwise.
 */
function scan(dir: string): Listing & { labels: number[]; classNames: string[] | null } {
  const listing = listImages(dir, dir);
  const { files } = listing;
  const labeled = files.length > 0 && files.every((f) => f.includes(sep));
  if (!labeled) return { ...listing, labels: files.map(() => -1), classNames: null };
  const classNames = [...new Set(files.map((f) => f.split(sep)[0]!))].sort();
  const index = new Map(classNames.map((c, i) => [c, i]));
  return { ...listing, labels: files.map((f) => index.get(f.split(sep)[0]!)!), classNames };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Removes temporary files a killed cache write left in `cacheDir`: this key's
 * when the process that wrote them is gone (this process's own are never in
 * flight here, as cache writes are synchronous), any key's once a day old.
 */
function removeStaleTemps(cacheDir: string, key: string): void {
  let names: string[];
  try {
    names = readdirSync(cacheDir);
  } catch {
    return;
  }
  const now = Date.now();
  for (const name of names) {
    const m = /^([0-9a-f]+)\.(?:bin|json)\.tmp-(\d+)-/.exec(name);
    if (!m) continue;
    const path = join(cacheDir, name);
    const pid = Number(m[2]);
    let stale = m[1] === key && (pid === process.pid || !isAlive(pid));
    if (!stale) {
      try {
        stale = now - statSync(path).mtimeMs > STALE_TEMP_MS;
      } catch {
        continue;
      }
    }
    if (stale) rmSync(path, { force: true });
  }
}

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

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

  const listing = scan(root);
  const { files, labels, classNames } = listing;
  const summarySkips: Partial<Record<SkipReason, number>> = {};
  const count = (kind: SkipReason, n = 1) => void (n > 0 && (summarySkips[kind] = (summarySkips[kind] ?? 0) + n));
  count('not an image', listing.notImages);
  for (const s of listing.skipped) count(s.kind);
  if (files.length === 0) {
    const left = Object.entries(summarySkips).map(([k, n]) => `${n} ${k}`).join(', ');
    throw new Error(`image folder ${dir}: no images (looked for ${[...IMAGE_EXTENSIONS].join(' ')}; found ${listing.found} files${left ? `: ${left}` : ''})`);
  }
  const stats = files.map((f) => statSync(join(root, f)));

  const cacheDir = options.cacheDir === undefined ? defaultCacheDir() : options.cacheDir;
  const key = createHash('sha1').update(JSON.stringify({ root, height, width, channels, fit, v: KEY_VERSION })).digest('hex').slice(0, 16);
  const binPath = cacheDir ? join(cacheDir, `${key}.bin`) : '';
  const manifestPath = cacheDir ? join(cacheDir, `${key}.json`) : '';
  if (cacheDir) removeStaleTemps(cacheDir, key);

  // What the previous cache holds, by file, when size and mtime still match,
  // and only when the binary file is exactly the one the manifest committed.
  const old = cacheDir ? readManifest(manifestPath) : null;
  let oldBin: Uint8Array | null = null;
  const reusable = new Map<string, ManifestEntry>();
  if (old && existsSync(binPath)) {
    oldBin = readFileSync(binPath);
    if (oldBin.length === old.binBytes && sha256(oldBin) === old.binSha256) {
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
  const skipped: SkippedFile[] = listing.skipped.map(({ file, reason }) => ({ file, reason }));
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
      count('unreadable');
    }
    entries.push(entry);
  });

  if (cacheDir && changed) {
    const binSha256 = sha256(images);
    const manifest: Manifest = { version: CACHE_VERSION, dir: root, height, width, channels, fit, classNames, binBytes: images.length, binSha256, entries };
    const step = (s: CacheWriteStep) => {
      if (process.env[KILL_ENV] === s) process.kill(process.pid, 'SIGKILL');
      options.onCacheWrite?.(s);
    };
    writeFileAtomic(binPath, images, { beforeRename: () => step('data-temp') });
    step('data');
    writeFileAtomic(manifestPath, JSON.stringify(manifest), { beforeRename: () => step('manifest-temp') });
    step('manifest');
  }
  if (skipped.length > 0) {
    const kinds = Object.entries(summarySkips).filter(([k]) => k !== 'not an image').map(([k, n]) => `${n} ${k}`);
    const list = skipped.map((s) => `  ${s.file}: ${s.reason}`).join('\n');
    warn(`image folder ${dir}: skipped ${skipped.length} of ${files.length + listing.skipped.length} files (${kinds.join(', ')}):\n${list}`);
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
    summary: { found: listing.found, used: okCount, skipped: summarySkips },
  };
}
