// The steady-speed check (Performance II, part 5): a method's training speed
// must not drift over a run, nor after other rows trained in the same
// process, against the same run in a fresh process.
//
//   npm run bench:steady                                     MoCo v1, then DetCo, then MoCo v1 again
//   npm run bench:steady -- --method mocov2 --other swav --epochs 3
//
// Sequence (each run a fresh run folder under --out, online kNN and precise
// BN off, so an epoch's images/s is training alone):
//   1. a child process trains --method for --epochs epochs (fresh reference);
//   2. this process trains --method (the long run), then --other for one
//      epoch, then --method again (the run after another row);
//   3. a second child trains --method again (the reference, later in time,
//      so drift of the machine shows as a gap between the two references).
// The reference speed is the median images/s over both children's epochs
// after their first (the first holds the kernels' one-time setup). It fails
// (exit 1) when any epoch of step 2's --method runs after the first one of
// the process is off the reference by more than --tolerance (10%), and
// reports RSS and the live tensor count after each run.
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import * as tf from '../src/core/tf.js';
import { nativeAddon } from '../src/backend/native_addon.js';
import { parseRunConfig, train } from '../src/app/index.js';
import { nonNegativeNumber, positiveInt } from '../src/app/flags.js';
import { writeFileAtomic } from '../src/core/files.js';
import { median, runSelfInChild } from './rows.js';

interface Flags {
  method: string;
  other: string;
  limit: number;
  epochs: number;
  batchSize: number;
  width: number;
  tolerance: number;
  out: string;
  child?: string;
}

interface RunSpeed {
  label: string;
  method: string;
  /** Images/s of each epoch. */
  perEpoch: number[];
  rssMb: number;
  tensors: number;
}

const say = (line: string) => void process.stderr.write(`${line}\n`);

async function timedRun(flags: Flags, method: string, epochs: number, label: string): Promise<RunSpeed> {
  const out = join(flags.out, label);
  rmSync(out, { recursive: true, force: true });
  const config = parseRunConfig(
    {
      method,
      out,
      epochs,
      batchSize: flags.batchSize,
      workers: 1,
      dataset: { name: 'fashion-mnist', limit: flags.limit },
      model: { arch: 'resnet18', width: flags.width, stem: 'cifar' },
      backend: 'native',
      onlineKnn: { every: 0 },
      preciseBn: { images: 0 },
    },
    `bench:steady run ${label}`,
  );
  say(`\n== ${label}: ${method}, ${epochs} epoch(s) of ${flags.limit} images`);
  const trained = await train(config, { log: say });
  if (trained.stoppedEarly) throw new Error(`${label}: training was interrupted`);
  return { label, method, perEpoch: trained.metrics.map((m) => m.imagesPerSec), rssMb: process.memoryUsage().rss / 2 ** 20, tensors: tf.memory().numTensors };
}

const resultPath = (flags: Flags, label: string) => join(flags.out, `${label}.json`);

async function main(): Promise<void> {
  const program = new Command('bench:steady')
    .description('training speed over a run and across rows in one process, against fresh processes')
    .option('--method <name>', 'the method whose speed is checked', 'mocov1')
    .option('--other <name>', 'the method trained between its two runs in one process', 'detco')
    .option('--limit <n>', 'training images per epoch', positiveInt, 5120)
    .option('--epochs <n>', 'epochs of each run of --method', positiveInt, 5)
    .option('--batch-size <n>', 'images per step', positiveInt, 256)
    .option('--width <n>', 'ResNet-18 width', positiveInt, 16)
    .option('--tolerance <f>', 'largest allowed relative gap to the fresh-process speed', nonNegativeNumber, 0.1)
    .option('--out <dir>', 'folder of the runs and steady.json', 'runs/bench-steady')
    .addOption(new Option('--child <label>', 'internal: train --method once and write <label>.json').hideHelp());
  const flags = program.parse().opts<Flags>();
  const info = nativeAddon().info();
  mkdirSync(flags.out, { recursive: true });

  if (flags.child) {
    writeFileAtomic(resultPath(flags, flags.child), JSON.stringify(await timedRun(flags, flags.method, flags.epochs, flags.child)));
    return;
  }
  const fresh = (label: string): RunSpeed => {
    runSelfInChild(['--child'], ['--child', label], `the fresh-process run ${label}`);
    return JSON.parse(readFileSync(resultPath(flags, label), 'utf8')) as RunSpeed;
  };
  say(`bench:steady on native (oneDNN ${info.onednn}, ${info.threads} threads): ${flags.method}, with ${flags.other} between`);
  const before = fresh('fresh-before');
  const long = await timedRun(flags, flags.method, flags.epochs, 'long-run');
  const other = await timedRun(flags, flags.other, 1, 'other-row');
  const after = await timedRun(flags, flags.method, flags.epochs, 'after-other');
  const later = fresh('fresh-after');

  const reference = median([...before.perEpoch.slice(1), ...later.perEpoch.slice(1)]);
  // The process's first epoch pays the kernels' setup, as the children's first epochs do.
  const checked = [...long.perEpoch.slice(1).map((s, i) => ({ what: `long run epoch ${i + 2}`, s })), ...after.perEpoch.map((s, i) => ({ what: `after ${flags.other}, epoch ${i + 1}`, s }))];
  const worst = checked.reduce((a, b) => (Math.abs(b.s / reference - 1) > Math.abs(a.s / reference - 1) ? b : a));
  const pass = Math.abs(worst.s / reference - 1) <= flags.tolerance;
  const fmt = (r: RunSpeed) => `${r.label.padEnd(13)} ${r.method.padEnd(8)} ${r.perEpoch.map((s) => s.toFixed(0).padStart(5)).join(' ')} img/s; RSS ${r.rssMb.toFixed(0)} MB, ${r.tensors} tensors`;
  const lines = [
    `${flags.method} at ${flags.limit} images x batch ${flags.batchSize}, width ${flags.width}, images/s per epoch:`,
    ...[before, long, other, after, later].map(fmt),
    `reference (fresh processes, epochs after the first): ${reference.toFixed(0)} img/s; the two fresh runs' medians ${median(before.perEpoch.slice(1)).toFixed(0)} and ${median(later.perEpoch.slice(1)).toFixed(0)}`,
    `steady/fresh ${flags.method}: worst ${(worst.s / reference).toFixed(3)}x (${worst.what}); long run median ${(median(long.perEpoch.slice(1)) / reference).toFixed(3)}x, after ${flags.other} median ${(median(after.perEpoch) / reference).toFixed(3)}x`,
    `${pass ? 'PASS' : 'FAIL'}: every checked epoch within ${(flags.tolerance * 100).toFixed(0)}% of the fresh-process speed`,
  ];
  writeFileAtomic(join(flags.out, 'steady.json'), `${JSON.stringify({ flags, reference, runs: [before, long, other, after, later], worst, pass }, null, 2)}\n`);
  process.stdout.write(`${lines.join('\n')}\n`);
  if (!pass) process.exitCode = 1;
}

main().catch((err: unknown) => {
  say(`bench:steady: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
