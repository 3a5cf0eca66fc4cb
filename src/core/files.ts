// Files: crash-safe replacement (write a temporary file next to the target,
// fsync it, rename it over the target, fsync the folder: a reader sees the old
// file or the new one, never half of one) and content checksums.
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';

export interface AtomicWriteHooks {
  /** Testing: runs once the temporary file is complete; throwing leaves it behind, as a kill there would. */
  beforeRename?: (tmp: string) => void;
}

export function writeFileAtomic(path: string, chunks: Uint8Array | string | Array<Uint8Array | string>, hooks: AtomicWriteHooks = {}): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const fd = openSync(tmp, 'w');
  try {
    for (const chunk of Array.isArray(chunks) ? chunks : [chunks]) {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      let written = 0;
      while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
    }
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  hooks.beforeRename?.(tmp);
  renameSync(tmp, path);
  // The rename itself is durable only once the folder's entry is on disk.
  try {
    const dfd = openSync(dir, 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // Some filesystems refuse fsync on folders; the data itself is already synced.
  }
}

/** sha256 of a file's bytes, hex. */
export function fileSha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** sha256 of a string, hex: short stable names for option sets and cache keys. */
export function textSha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
