// All-reduce bandwidth of the scale-out path (issue #24's bench bar): the
// gradient of ResNet-18 (CIFAR stem, width 64, 10-class head: 11.2 M floats,
// 44.7 MB) averaged across ranks through src/dist's Communicator, as the
// trainer does it (25 MiB buckets in reverse parameter order) and as one flat
// buffer, under Open MPI's default algorithm choice and under tuned ones.
//
//   node dist/bench/allreduce.js                       2 ranks, default vs ring vs segmented ring
//   node dist/bench/allreduce.js --np 3 --reps 5
//   node dist/bench/allreduce.js --width 16           the methods benchmark's network (0.7 M floats)
//   node dist/bench/allreduce.js --compute-ms 900 --gbps 10,100
//        ... adds the model of the speed-up on N machines: a step of a fixed
//        global batch costs compute/N + the ring all-reduce, 2 (N-1)/N x bytes / bandwidth
//        (no overlap with backward, as the trainer does it today).
//   node dist/bench/allreduce.js --step               a real pretraining step (MoCo v2, width 16, batch 256)
//        on 1 rank with every core against --np ranks with cores/np threads each,
//        the median step time of the same steps of each run; a check that the
//        scaling is right on one machine, not a speed-up.
//
// Started without an MPI launcher, this script launches itself under
// `mpirun -np N --oversubscribe` once per algorithm and prints a table; the
// ranks print RESULT lines. Timings are the slowest rank's, per repetition.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeWorld, launchedUnderMpi, worldCommunicator } from '../src/dist/communicator.js';
import { buildBackbone } from '../src/nn/backbone.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : fallback;
};

/** Open MPI's tuned-collective settings compared (coll_tuned_allreduce_algorithm). */
const ALGORITHMS: Array<{ name: string; mca: string[] }> = [
  { name: 'default decision', mca: [] },
  { name: 'ring (4)', mca: ['--mca', 'coll_tuned_use_dynamic_rules', '1', '--mca', 'coll_tuned_allreduce_algorithm', '4'] },
  { name: 'segmented ring (5)', mca: ['--mca', 'coll_tuned_use_dynamic_rules', '1', '--mca', 'coll_tuned_allreduce_algorithm', '5'] },
];

/** The parameter sizes of the gradient: ResNet-18 (width --width, 64 = torchvision), CIFAR stem, RGB, plus a 10-class linear head. */
function gradientSizes(): number[] {
  const net = buildBackbone({ arch: 'resnet18', width: Number(flag('width', '64')), stem: 'cifar' }, 3, 0);
  const sizes = net.namedParameters().map(([, v]) => v.size);
  const features = net.featureDim;
  net.dispose();
  return [...sizes, features * 10, 10];
}

interface RankResult {
  floats: number;
  arrays: number;
  bucketedMs: number[];
  flatMs: number[];
}

function rank(): void {
  const comm = worldCommunicator();
  const reps = Number(flag('reps', '5'));
  const sizes = gradientSizes();
  const floats = sizes.reduce((a, b) => a + b, 0);
  const arrays = sizes.map((n) => Float32Array.from({ length: n }, (_, i) => (i % 7) + comm.rank));
  const flat = new Float32Array(floats).fill(comm.rank + 1);
  const timed = (fn: () => void) => {
    comm.barrier();
    const t0 = performance.now();
    fn();
    const ms = Float64Array.of(performance.now() - t0);
    comm.allreduceF64(ms, 'max');
    return ms[0]!;
  };
  // One untimed round each: connection setup and first-touch of the buffers.
  comm.allreduce(arrays, 'mean');
  comm.allreduce([flat], 'mean');
  const bucketedMs: number[] = [];
  const flatMs: number[] = [];
  for (let r = 0; r < reps; r++) {
    bucketedMs.push(timed(() => comm.allreduce(arrays, 'mean')));
    flatMs.push(timed(() => comm.allreduce([flat], 'mean')));
  }
  if (comm.rank === 0) process.stdout.write(`RESULT ${JSON.stringify({ floats, arrays: sizes.length, bucketedMs, flatMs } satisfies RankResult)}\n`);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function parent(): void {
  const np = Number(flag('np', '2'));
  const rows: Array<{ algorithm: string } & RankResult> = [];
  for (const alg of ALGORITHMS) {
    const r = spawnSync(
      'mpirun',
      ['-np', String(np), '--oversubscribe', '--bind-to', 'none', '--mca', 'btl', 'self,vader', ...alg.mca, process.execPath, fileURLToPath(import.meta.url), ...args],
      {
        encoding: 'utf8',
        timeout: 600_000,
        // Open MPI refuses root without both (containers, CI).
        env: { ...process.env, ...(process.getuid?.() === 0 ? { OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' } : {}) },
      },
    );
    const line = /^RESULT (.*)$/m.exec(r.stdout ?? '');
    if (r.status !== 0 || !line) {
      process.stderr.write(`allreduce bench: mpirun (${alg.name}) failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stderr}\n`);
      process.exit(1);
    }
    rows.push({ algorithm: alg.name, ...(JSON.parse(line[1]!) as RankResult) });
  }
  const bytes = rows[0]!.floats * 4;
  console.log(`all-reduce (mean) of a ResNet-18 (width ${flag('width', '64')}) gradient: ${rows[0]!.floats} floats (${(bytes / 1e6).toFixed(1)} MB) in ${rows[0]!.arrays} arrays, ${np} ranks, one host`);
  console.log('| algorithm | bucketed (25 MiB) ms: median [min-max] | algbw GB/s | one buffer ms: median [min-max] | algbw GB/s |');
  console.log('|---|---|---|---|---|');
  for (const r of rows) {
    const cell = (ms: number[]) => `${median(ms).toFixed(0)} [${Math.min(...ms).toFixed(0)}-${Math.max(...ms).toFixed(0)}] | ${(bytes / 1e6 / median(ms)).toFixed(2)}`;
    console.log(`| ${r.algorithm} | ${cell(r.bucketedMs)} | ${cell(r.flatMs)} |`);
  }
  const computeMs = Number(flag('compute-ms', '0'));
  if (computeMs > 0) {
    const links = flag('gbps', '10,25,100').split(',').map(Number);
    console.log(`\nmodel: a step of ${computeMs} ms on one machine, split over N machines, plus a ring all-reduce of ${(bytes / 1e6).toFixed(1)} MB (no overlap):`);
    console.log(`| N | ${links.map((g) => `${g} Gb/s: step ms (speed-up)`).join(' | ')} |`);
    console.log(`|---|${links.map(() => '---').join('|')}|`);
    for (const n of [2, 4, 8, 16, 32]) {
      const cells = links.map((g) => {
        const allreduceMs = (((2 * (n - 1)) / n) * bytes * 8) / (g * 1e9) * 1000;
        const step = computeMs / n + allreduceMs;
        return `${step.toFixed(0)} (${(computeMs / step).toFixed(1)}x)`;
      });
      console.log(`| ${n} | ${cells.join(' | ')} |`);
    }
  }
}

/** Median milliseconds per step over steps 2..N-1 of a run's metrics.jsonl (steps 0-1 warm caches up). */
function stepMs(metricsFile: string): { median: number; losses: number[] } {
  const steps = readFileSync(metricsFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { kind: string; elapsed: number; loss: number }).filter((l) => l.kind === 'step');
  const gaps = steps.slice(2).map((s, i) => (s.elapsed - steps[i + 1]!.elapsed) * 1000);
  return { median: median(gaps), losses: steps.map((s) => s.loss) };
}

/** The methods benchmark's MoCo v2 step, timed on 1 rank and on --np ranks of the same global batch. */
function stepCheck(): void {
  const np = Number(flag('np', '2'));
  const steps = Number(flag('steps', '12'));
  const cores = cpus().length;
  const dir = mkdtempSync(join(tmpdir(), 'selfsup-step-'));
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const config = join(dir, 'run.yaml');
  // bnSplits np x fewer per rank, so each BN group holds the same 64 images (exactly where np divides 4).
  const yaml = (splits: number) =>
    `method: mocov2\nmethodOptions: { bnSplits: ${splits} }\nepochs: 1\nbatchSize: 256\nworkers: 0\ndataset: { name: fashion-mnist, limit: ${256 * steps} }\n` +
    'model: { arch: resnet18, width: 16, stem: cifar }\nonlineKnn: { every: 0 }\npreciseBn: { images: 0 }\n';
  const root = process.getuid?.() === 0 ? { OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' } : {};
  const run = (name: string, command: string, argv: string[], threads: number, splits: number) => {
    writeFileSync(config, yaml(splits));
    const out = join(dir, name);
    const r = spawnSync(command, [...argv, cli, 'pretrain', '--config', config, '--out', out, '--quiet'], {
      encoding: 'utf8',
      timeout: 900_000,
      env: { ...process.env, ...root, SELFSUP_THREADS: String(threads) },
    });
    if (r.status !== 0) throw new Error(`${name}: pretrain failed (${r.error?.message ?? `exit ${r.status}`}):\n${r.stderr.slice(-2000)}`);
    return stepMs(join(out, 'metrics.jsonl'));
  };
  try {
    const one = run('one-rank', process.execPath, [], cores, 4);
    const many = run(`${np}-ranks`, 'mpirun', ['-np', String(np), '--oversubscribe', '--bind-to', 'none', '--mca', 'btl', 'self,vader', '-x', 'SELFSUP_THREADS', process.execPath], Math.max(1, Math.floor(cores / np)), Math.max(1, Math.round(4 / np)));
    console.log(`MoCo v2 step, ResNet-18 width 16, global batch 256, ${steps} steps (median of steps 2-${steps - 1}), ${cores} cores:`);
    console.log(`| run | ms per step |\n|---|---:|\n| 1 rank x ${cores} threads | ${one.median.toFixed(0)} |\n| ${np} ranks x ${Math.max(1, Math.floor(cores / np))} threads | ${many.median.toFixed(0)} |`);
    console.log(`${np}-rank/1-rank step: ${(many.median / one.median).toFixed(2)}x`);
    const worst = Math.max(...one.losses.map((l, i) => Math.abs(l - many.losses[i]!)));
    console.log(`losses per step: largest |1 rank - ${np} ranks| ${worst.toFixed(4)} (BN statistics are per rank, so not identical)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (launchedUnderMpi()) {
  rank();
  await closeWorld();
} else if (args.includes('--step')) {
  stepCheck();
} else {
  parent();
}
