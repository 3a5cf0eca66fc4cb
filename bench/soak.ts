// The soak check (the Reliability bar): a long run killed at random moments
// and resumed until it completes must end bit for bit where the same run ends
// uninterrupted, without its memory growing from session to session.
//
//   npm run bench:soak                                   10,000 steps, a kill every ~3 min
//   npm run bench:soak -- --steps 600 --every 50 --kill-every 8     a short check
//
// ResNet-18 (width --width, CIFAR stem) trains --method (supervised) on the
// first --limit Fashion-MNIST training images at batch --batch-size, with
// `workers: 0`, no online kNN, a checkpoint every --every steps
// (`checkpoint.everySteps`) and at the end; the epochs are --steps divided by
// the steps per epoch, rounded up (the run's steps are printed). It trains in
// a child process (this script with --child), which is sent SIGKILL at random
// moments, timed from its start (seeded by --seed; --jitter exp draws the
// delays from an exponential distribution of mean --kill-every seconds,
// uniform from [0.5, 1.5] x --kill-every), and started again with resume
// until the run finishes. Then the same config trains in one uninterrupted
// child (the reference), and the two final checkpoints are compared tensor
// by tensor (every model.* and optimizer.* tensor: name, dtype, shape,
// bytes), with their positions and the per-step losses and learning rates of
// metrics.jsonl. Both children run with SELFSUP_THREADS=1 (and
// OMP_WAIT_POLICY=PASSIVE unless set): oneDNN's reductions are only
// reproducible at a fixed thread count.
//
// Memory: each child reports, every 10 steps, its RSS (process.memoryUsage)
// and live tensor count (tf.memory().numTensors) on stdout; the parent also
// reads the child's VmRSS from /proc/<pid>/status every 2 s (startup
// included). Reported per session: first/last/max/median RSS and the tensor
// counts. It fails (exit 1) when the checkpoints differ, a child fails, the
// last soak session with samples has a median RSS over --rss-growth (1.5) x
// the first one's, the reference run's last tenth of samples has a median
// RSS over --rss-growth x that of its second tenth (its first tenth is
// warm-up), or a session's tensor count rises after its first logged step.
//
// <out> (runs/bench-soak) holds soak/ and reference/ (each a run folder with
// child.log, the children's logs) and soak.json (the report); it is wiped at
// the start unless --keep, in which case the soak run resumes where it is and
// a finished reference run is reused.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import * as tf from '../src/core/tf.js';
import { nonNegativeInt, positiveInt, positiveNumber } from '../src/app/flags.js';
import { parseRunConfig, train } from '../src/app/index.js';
import { useBackend } from '../src/backend/select.js';
import { writeFileAtomic } from '../src/core/files.js';
import { LAST_CHECKPOINT, readCheckpoint, type Checkpoint } from '../src/io/checkpoint.js';
import type { RunConfig } from '../src/train/config.js';
import { MetricsLog, type StepMetrics } from '../src/train/metrics.js';
import { forwardedArgs, median } from './rows.js';

interface Flags {
  steps: number;
  every: number;
  killEvery: number;
  jitter: string;
  seed: number;
  out: string;
  width: number;
  limit: number;
  batchSize: number;
  method: string;
  rssGrowth: number;
  keep: boolean;
  child?: string;
}

const say = (line: string) => void process.stderr.write(`${line}\n`);
const REPORT_EVERY = 10;

/** The run both the soak and the reference train; the steps round up to whole epochs. */
function runConfig(flags: Flags, out: string): RunConfig {
  const stepsPerEpoch = Math.ceil(flags.limit / flags.batchSize);
  const epochs = Math.ceil(flags.steps / stepsPerEpoch);
  return parseRunConfig(
    {
      method: flags.method,
      out,
      epochs,
      batchSize: flags.batchSize,
      seed: flags.seed,
      workers: 0,
      backend: 'native',
      dataset: { name: 'fashion-mnist', limit: flags.limit },
      model: { arch: 'resnet18', width: flags.width, stem: 'cifar' },
      checkpoint: { everySteps: flags.every, everyEpochs: epochs },
      onlineKnn: { every: 0 },
    },
    'bench:soak run',
  );
}

// ---------------------------------------------------------------- the child

interface ChildLine {
  step: number;
  rss: number;
  tensors: number;
  done?: { steps: number; stoppedEarly: boolean };
}

/** Trains (or resumes) the run in `dir`, reporting memory on stdout every REPORT_EVERY steps and at the end. */
async function child(flags: Flags, dir: string): Promise<void> {
  if ((await useBackend('native')) !== 'native') throw new Error('bench:soak needs the native backend');
  const config = runConfig(flags, dir);
  const report = (line: ChildLine) => void process.stdout.write(`${JSON.stringify(line)}\n`);
  const sample = (step: number): ChildLine => ({ step, rss: process.memoryUsage().rss, tensors: tf.memory().numTensors });
  const result = await train(config, {
    resume: existsSync(join(dir, LAST_CHECKPOINT)),
    quiet: true,
    log: say,
    onStep: (s) => {
      if ((s.step + 1) % REPORT_EVERY === 0) report(sample(s.step + 1));
    },
  });
  report({ ...sample(result.steps), done: { steps: result.steps, stoppedEarly: result.stoppedEarly } });
}

// ---------------------------------------------------------------- the parent

/** mulberry32: the kill schedule from --seed. */
function rng(seed: number): () => number {
  let a = (seed ^ 0x5eed50a4) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Session {
  index: number;
  startStep: number;
  endStep: number;
  seconds: number;
  /** Seconds after the start at which it was killed; null when it ended by itself. */
  killedAfter: number | null;
  exit: string;
  /** RSS the child logged (bytes), with its step. */
  rss: number[];
  tensors: number[];
  /** VmRSS read from /proc every 2 s (bytes), startup included. */
  procRss: number[];
}

const MB = (b: number) => `${(b / 2 ** 20).toFixed(0)} MB`;

function procRss(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** The two runs' recorded configs agree but for their folders (a --keep reference made with another --seed must not be reused). */
function sameRun(a: string, b: string): boolean {
  const config = (dir: string) => {
    const { out: _out, ...rest } = readCheckpoint(join(dir, LAST_CHECKPOINT)).state.config as Record<string, unknown>;
    return JSON.stringify(rest);
  };
  return existsSync(join(b, LAST_CHECKPOINT)) && config(a) === config(b);
}

function savedStep(dir: string): number {
  const path = join(dir, LAST_CHECKPOINT);
  return existsSync(path) ? readCheckpoint(path).state.position.step : 0;
}

/** One child session training `dir`; killed with SIGKILL after `killAfter` seconds unless null. */
function runSession(index: number, dir: string, killAfter: number | null): Promise<Session> {
  const startStep = savedStep(dir);
  const args = [...forwardedArgs(process.argv.slice(2), ['--child']), '--child', dir];
  const env = { ...process.env, SELFSUP_THREADS: '1', OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'PASSIVE' };
  const logFd = openSync(join(dir, 'child.log'), 'a');
  const started = performance.now();
  const proc = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...args], { stdio: ['ignore', 'pipe', logFd], env });
  closeSync(logFd);
  const session: Session = { index, startStep, endStep: startStep, seconds: 0, killedAfter: null, exit: '', rss: [], tensors: [], procRss: [] };
  let buffered = '';
  let done: ChildLine['done'] | undefined;
  proc.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = JSON.parse(buffered.slice(0, nl)) as ChildLine;
      buffered = buffered.slice(nl + 1);
      // The last line comes after the run is freed: its tensor count is not the training's.
      if (line.done) done = line.done;
      else {
        session.rss.push(line.rss);
        session.tensors.push(line.tensors);
      }
    }
  });
  const sampler = setInterval(() => {
    const rss = proc.pid === undefined ? null : procRss(proc.pid);
    if (rss !== null) session.procRss.push(rss);
  }, 2000);
  const killer =
    killAfter === null
      ? null
      : setTimeout(() => {
          session.killedAfter = (performance.now() - started) / 1000;
          proc.kill('SIGKILL');
        }, killAfter * 1000);
  return new Promise((resolvePromise, reject) => {
    proc.on('error', reject);
    proc.on('close', (code, signal) => {
      clearInterval(sampler);
      if (killer) clearTimeout(killer);
      session.seconds = (performance.now() - started) / 1000;
      session.exit = signal ?? `exit ${code}`;
      if (code === 0 && done && !done.stoppedEarly) session.killedAfter = null;
      try {
        session.endStep = savedStep(dir);
      } catch (err) {
        reject(new Error(`session ${index}: its checkpoint cannot be read after ${session.exit}: ${(err as Error).message}`));
        return;
      }
      resolvePromise(session);
    });
  });
}

function describe(s: Session): string {
  const rss = s.rss.length ? `RSS ${MB(s.rss[0]!)} first, ${MB(s.rss.at(-1)!)} last, ${MB(Math.max(...s.rss))} max, ${MB(median(s.rss))} median` : 'no step logged';
  const proc = s.procRss.length ? `; /proc max ${MB(Math.max(...s.procRss))}` : '';
  const tensors = s.tensors.length ? `; tensors ${s.tensors[0]} first, ${s.tensors.at(-1)} last, ${Math.max(...s.tensors)} max` : '';
  const how = s.killedAfter !== null ? `killed after ${s.killedAfter.toFixed(1)} s` : s.exit;
  return `session ${s.index}: steps ${s.startStep} -> ${s.endStep} (${how}, ${s.seconds.toFixed(1)} s); ${rss}${proc}${tensors}`;
}

/** The first difference between two checkpoints' tensors (name and what differs), or null. */
function firstDifference(a: Checkpoint, b: Checkpoint): string | null {
  const named = (c: Checkpoint) => new Map([...Object.entries(c.model).map(([k, t]) => [`model.${k}`, t] as const), ...Object.entries(c.optimizer).map(([k, t]) => [`optimizer.${k}`, t] as const)]);
  const ta = named(a);
  const tb = named(b);
  for (const name of new Set([...ta.keys(), ...tb.keys()])) {
    const x = ta.get(name);
    const y = tb.get(name);
    if (!x || !y) return `${name}: only in the ${x ? 'soak' : 'reference'} checkpoint`;
    if (x.dtype !== y.dtype || x.shape.join(',') !== y.shape.join(',')) return `${name}: ${x.dtype}[${x.shape}] vs ${y.dtype}[${y.shape}]`;
    const bx = Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength);
    const by = Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength);
    if (!bx.equals(by)) {
      let i = 0;
      while (i < x.data.length && Object.is(x.data[i], y.data[i])) i++;
      return `${name}: element ${i} is ${x.data[i]} (soak) vs ${y.data[i]} (reference)`;
    }
  }
  return null;
}

function stepLines(dir: string): string[] {
  return new MetricsLog(join(dir, 'metrics.jsonl'))
    .read()
    .filter((l): l is StepMetrics => l.kind === 'step')
    .map((l) => JSON.stringify([l.step, l.loss, l.lr, l.terms]));
}

async function parent(flags: Flags): Promise<number> {
  const out = resolve(flags.out);
  if (!flags.keep) rmSync(out, { recursive: true, force: true });
  const soakDir = join(out, 'soak');
  const refDir = join(out, 'reference');
  mkdirSync(soakDir, { recursive: true });
  mkdirSync(refDir, { recursive: true });
  const config = runConfig(flags, soakDir);
  const stepsPerEpoch = Math.ceil(flags.limit / flags.batchSize);
  const total = config.epochs * stepsPerEpoch;
  say(
    `bench:soak: ${flags.method}, ResNet-18 width ${flags.width}, ${flags.limit} images, batch ${flags.batchSize}: ${config.epochs} epochs x ${stepsPerEpoch} steps = ${total} steps` +
      `${total !== flags.steps ? ` (--steps ${flags.steps} rounded up to whole epochs)` : ''}, checkpoint every ${flags.every} steps; ` +
      `SIGKILL every ${flags.killEvery} s on average (${flags.jitter}), seed ${flags.seed}; SELFSUP_THREADS=1; out ${out}`,
  );

  // The soak: kill, resume, until it finishes.
  const random = rng(flags.seed);
  const draw = () => (flags.jitter === 'exp' ? -Math.log(1 - random()) * flags.killEvery : (0.5 + random()) * flags.killEvery);
  const sessions: Session[] = [];
  let stalled = 0;
  const failures: string[] = [];
  const soakStart = performance.now();
  for (;;) {
    const s = await runSession(sessions.length + 1, soakDir, draw());
    sessions.push(s);
    say(`bench:soak: ${describe(s)}`);
    if (s.killedAfter === null) {
      if (s.exit !== 'exit 0') failures.push(`session ${s.index} failed (${s.exit}); see ${join(soakDir, 'child.log')}`);
      break;
    }
    stalled = s.endStep > s.startStep ? 0 : stalled + 1;
    if (stalled >= 20) {
      failures.push(`20 sessions in a row saved no progress (--kill-every ${flags.killEvery} s is shorter than a child needs to reach a checkpoint)`);
      break;
    }
  }
  const soakSeconds = (performance.now() - soakStart) / 1000;
  const kills = sessions.filter((s) => s.killedAfter !== null).length;

  // The reference: the same run, uninterrupted (reused with --keep when finished).
  let reference: Session | null = null;
  if (failures.length === 0) {
    if (flags.keep && savedStep(refDir) === total && sameRun(refDir, soakDir)) say(`bench:soak: reference run ${refDir} is finished, with the same config; reused`);
    else {
      rmSync(refDir, { recursive: true, force: true });
      mkdirSync(refDir, { recursive: true });
      say(`bench:soak: the reference run, uninterrupted`);
      reference = await runSession(0, refDir, null);
      say(`bench:soak: reference ${describe(reference)}`);
      if (reference.exit !== 'exit 0') failures.push(`the reference run failed (${reference.exit}); see ${join(refDir, 'child.log')}`);
    }
  }

  // Bit for bit.
  let identical = false;
  let difference: string | null = 'not compared';
  let tensorCount = 0;
  if (failures.length === 0) {
    const a = readCheckpoint(join(soakDir, LAST_CHECKPOINT));
    const b = readCheckpoint(join(refDir, LAST_CHECKPOINT));
    tensorCount = Object.keys(b.model).length + Object.keys(b.optimizer).length;
    difference = firstDifference(a, b);
    if (difference === null && JSON.stringify(a.state.position) !== JSON.stringify(b.state.position)) {
      difference = `positions ${JSON.stringify(a.state.position)} vs ${JSON.stringify(b.state.position)}`;
    }
    if (difference === null) {
      const la = stepLines(soakDir);
      const lb = stepLines(refDir);
      const i = la.findIndex((l, k) => l !== lb[k]);
      if (la.length !== lb.length || i >= 0) difference = `metrics.jsonl step lines: ${la.length} vs ${lb.length}, first differing at line ${i >= 0 ? i : Math.min(la.length, lb.length)}`;
    }
    identical = difference === null;
    if (!identical) failures.push(`the soak's final checkpoint differs from the uninterrupted run's: ${difference}`);
  }

  // Memory.
  const sampled = sessions.filter((s) => s.rss.length > 0);
  const memory: string[] = [];
  if (sampled.length >= 2) {
    const first = median(sampled[0]!.rss);
    const last = median(sampled.at(-1)!.rss);
    const ratio = last / first;
    memory.push(`soak RSS median: session ${sampled[0]!.index} ${MB(first)}, session ${sampled.at(-1)!.index} ${MB(last)} (x${ratio.toFixed(2)}, limit x${flags.rssGrowth})`);
    if (ratio > flags.rssGrowth) failures.push(`RSS grew x${ratio.toFixed(2)} from the first soak session to the last (limit x${flags.rssGrowth})`);
  } else memory.push(`soak RSS: fewer than 2 sessions logged a step; not compared`);
  if (reference && reference.rss.length >= 20) {
    const tenth = Math.floor(reference.rss.length / 10);
    const early = median(reference.rss.slice(tenth, 2 * tenth));
    const late = median(reference.rss.slice(-tenth));
    const ratio = late / early;
    memory.push(`reference RSS median: second tenth ${MB(early)}, last tenth ${MB(late)} (x${ratio.toFixed(2)}, limit x${flags.rssGrowth})`);
    if (ratio > flags.rssGrowth) failures.push(`the uninterrupted run's RSS grew x${ratio.toFixed(2)} (limit x${flags.rssGrowth})`);
  } else if (reference) memory.push(`reference RSS: under 20 samples; not compared`);
  // A resume may hold a constant number of tensors more than a fresh start (not a per-step leak): reported, not failed.
  const firstTensors = (list: Session[]) => list.filter((s) => s.tensors.length > 0).map((s) => s.tensors[0]!);
  const fresh = firstTensors([...sessions.filter((s) => s.startStep === 0), ...(reference ? [reference] : [])]);
  const resumed = firstTensors(sessions.filter((s) => s.startStep > 0));
  if (fresh.length > 0 && resumed.length > 0) {
    const extra = Math.max(...resumed) - Math.min(...fresh);
    memory.push(`live tensors at the first logged step: ${Math.min(...fresh)} in a fresh run, ${resumed.join('/')} in resumed sessions${extra > 0 ? ` (a resume holds ${extra} more)` : ''}`);
  }
  for (const s of [...sessions, ...(reference ? [reference] : [])]) {
    const t = s.tensors;
    if (t.length >= 2 && Math.max(...t.slice(1)) > t[0]!) failures.push(`${s.index === 0 ? 'the reference run' : `session ${s.index}`}: live tensors rose from ${t[0]} to ${Math.max(...t)}`);
  }

  const report = {
    steps: total,
    every: flags.every,
    killEvery: flags.killEvery,
    jitter: flags.jitter,
    seed: flags.seed,
    kills,
    resumes: sessions.length - 1,
    soakSeconds,
    identical,
    difference,
    tensorsCompared: tensorCount,
    memory,
    failures,
    sessions,
    reference,
    finished: new Date().toISOString(),
  };
  writeFileAtomic(join(out, 'soak.json'), `${JSON.stringify(report, null, 2)}\n`);
  const lines = [
    `kills ${kills}, resumes ${sessions.length - 1}, steps ${sessions.at(-1)?.endStep ?? 0}/${total}, soak ${(soakSeconds / 60).toFixed(1)} min`,
    `identical: ${identical ? `yes (${tensorCount} model and optimizer tensors, position, ${stepLines(soakDir).length} step losses)` : `no (${difference})`}`,
    ...memory,
    ...sessions.map(describe),
    ...(reference ? [`reference ${describe(reference)}`] : []),
    failures.length === 0 ? `verdict: PASS (${kills} SIGKILLs and resumes end bit for bit where the uninterrupted run ends; RSS within x${flags.rssGrowth}; tensor counts flat)` : `verdict: FAIL: ${failures.join('; ')}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  return failures.length === 0 ? 0 : 1;
}

async function main(): Promise<void> {
  const program = new Command('bench:soak')
    .description('SIGKILL a training run at random moments, resume it until it ends, and check it ends bit for bit where an uninterrupted run does')
    .option('--steps <n>', 'training steps (rounded up to whole epochs)', positiveInt, 10000)
    .option('--every <n>', 'checkpoint every n steps', positiveInt, 100)
    .option('--kill-every <seconds>', 'mean seconds between SIGKILLs', positiveNumber, 180)
    .option('--jitter <kind>', 'kill delays: exp (exponential) or uniform ([0.5, 1.5] x the mean)', 'exp')
    .option('--seed <n>', 'seed of the run and of the kill schedule', nonNegativeInt, 0)
    .option('--out <dir>', 'folder of the runs and soak.json (wiped unless --keep)', 'runs/bench-soak')
    .option('--width <n>', 'ResNet-18 width', positiveInt, 4)
    .option('--limit <n>', 'training images', positiveInt, 512)
    .option('--batch-size <n>', 'images per step', positiveInt, 32)
    .option('--method <name>', 'the method trained', 'supervised')
    .option('--rss-growth <x>', 'fail when the median RSS grows more than this factor', positiveNumber, 1.5)
    .option('--keep', 'keep <out>: resume the soak run where it is, reuse a finished reference')
    .option('--child <dir>', '(internal) train the run in <dir> and report memory on stdout')
    .parse();
  const flags = program.opts<Flags>();
  flags.keep = Boolean(flags.keep);
  if (flags.jitter !== 'exp' && flags.jitter !== 'uniform') throw new Error(`--jitter: expected exp or uniform, not '${flags.jitter}'`);
  if (flags.child !== undefined) await child(flags, flags.child);
  else process.exitCode = await parent(flags);
}

main().catch((err: unknown) => {
  say(`bench:soak: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
