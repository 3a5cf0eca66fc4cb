// What the benchmarks (bench/engines.ts, bench/methods.ts, bench/transfer.ts)
// share: the repository root, running one unit of work in a child process of
// the same script with the same flags, and rewriting a marked block of
// README.md (a summary there, the full tables in docs/benchmarks.md).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../src/core/files.js';

/**
 * The repository root: the nearest folder above this file whose package.json
 * is selfsup's (this file runs as dist/bench/rows.js).
 */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'selfsup') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the selfsup repository above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/**
 * This script's flags without those in `drop` (each with its value, as
 * `--flag value` or `--flag=value`) and without `--readme [file]`: the
 * child's table and README update are left to the parent.
 */
export function forwardedArgs(argv: string[], drop: string[]): string[] {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (drop.includes(a)) i++;
    else if (a === '--readme' && argv[i + 1] !== undefined && !argv[i + 1]!.startsWith('--')) i++;
    else if (!drop.some((d) => a.startsWith(`${d}=`)) && !a.startsWith('--readme')) args.push(a);
  }
  return args;
}

/**
 * This script again (same Node flags and script flags, less `drop`) with
 * `extra` appended, its stdout dropped and its stderr (the log) passed on;
 * throws when it fails. `what` names the work in the error.
 */
export function runSelfInChild(drop: string[], extra: string[], what: string): void {
  const args = forwardedArgs(process.argv.slice(2), drop);
  const child = spawnSync(process.execPath, [...process.execArgv, process.argv[1]!, ...args, ...extra], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (child.error) throw child.error;
  if (child.status !== 0) throw new Error(`${what} failed (exit ${child.status ?? child.signal}); its log is above`);
}

/** The block of `text` between `start` and `end` (markers kept) replaced by `body`. */
export function replaceBlock(text: string, start: string, end: string, body: string, what = 'the text'): string {
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a < 0 || b < a) throw new Error(`${what} has no ${start} ... ${end} block to rewrite`);
  return `${text.slice(0, a + start.length)}\n${body}\n${text.slice(b)}`;
}

/** Rewrites the `start` ... `end` block of the file with `body`. */
export function updateReadmeBlock(file: string, start: string, end: string, body: string): void {
  const path = resolve(file);
  writeFileAtomic(path, replaceBlock(readFileSync(path, 'utf8'), start, end, body, file));
}

/** docs/benchmarks.md beside a README: where a benchmark's full tables go when the README keeps a summary. */
export function benchmarksPageOf(readme: string): string {
  return join(dirname(resolve(readme)), 'docs', 'benchmarks.md');
}

/**
 * The README's block gets the summary and the same block of
 * docs/benchmarks.md beside it the full tables. Both blocks are checked
 * before either file is written, so a missing marker changes nothing.
 */
export function updateSummaryAndFull(readme: string, start: string, end: string, summary: string, full: string): string[] {
  const page = benchmarksPageOf(readme);
  const writes = [
    { path: resolve(readme), body: summary },
    { path: page, body: full },
  ].map((w) => {
    if (!existsSync(w.path)) throw new Error(`${w.path} does not exist: it needs a ${start} ... ${end} block to rewrite`);
    return { path: w.path, text: replaceBlock(readFileSync(w.path, 'utf8'), start, end, w.body, w.path) };
  });
  for (const w of writes) writeFileAtomic(w.path, w.text);
  return writes.map((w) => w.path);
}

/** A benchmark's stored result at `path`, or null when there is none; a damaged file is an error saying to delete it to `redo`. */
export function readResultFile<T>(path: string, redo: string): T | null {
  if (!existsSync(path)) return null;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch (err) {
    throw new Error(`${path}: not a readable result (${err instanceof Error ? err.message : String(err)}); delete it to ${redo}`);
  }
}

/** The median of `xs` (the mean of the middle two for an even count; NaN for none). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length === 0 ? NaN : s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
