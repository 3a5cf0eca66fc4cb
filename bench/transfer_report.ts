// The transfer benchmark's bookkeeping and report (bench/transfer.ts), kept
// free of the engine so that its tests are cheap: the rows, which jobs are
// done, mean ± std over seeds, the noise floor, the gates, the ranking and
// the tables.
import { join } from 'node:path';
import { readResultFile } from './rows.js';

export interface TransferRow {
  name: string;
  label: string;
  /** The pretraining method; null for the untrained network (the supervised run's architecture at its initialisation). */
  method: string | null;
  methodOptions?: Record<string, unknown>;
}

export const RANDOM_INIT = 'random-init';

/** Gate rows first: the noise floor and the gates are measured on them before the methods are compared. */
export const TRANSFER_ROWS: TransferRow[] = [
  { name: 'supervised', label: 'supervised (object labels)', method: 'supervised' },
  { name: RANDOM_INIT, label: 'random init (no pretraining)', method: null },
  { name: 'mocov2', label: 'MoCo v2', method: 'mocov2' },
  { name: 'detco', label: 'DetCo (HIC + CGLC)', method: 'detco' },
  { name: 'mocov2-hic', label: 'MoCo v2 + HIC', method: 'detco', methodOptions: { cglc: false } },
  { name: 'mocov2-cglc', label: 'MoCo v2 + CGLC', method: 'detco', methodOptions: { hic: false } },
];
export const GATE_ROWS = ['supervised', RANDOM_INIT];

export const SETTINGS = ['full', 'low'] as const;
export type SettingName = (typeof SETTINGS)[number];
export const PROTOCOLS = ['detect', 'segment'] as const;
export type ProtocolName = (typeof PROTOCOLS)[number];

/** The metrics the tables show: EvalReport metric name, column title. */
export const METRICS = [
  { key: 'AP', title: 'AP^bb', protocol: 'detect' },
  { key: 'AP50', title: 'AP50', protocol: 'detect' },
  { key: 'AP75', title: 'AP75', protocol: 'detect' },
  { key: 'APmask', title: 'AP^mk', protocol: 'detect' },
  { key: 'mIoU', title: 'mIoU', protocol: 'segment' },
] as const;
export type MetricKey = (typeof METRICS)[number]['key'];

// ---------------------------------------------------------------- jobs

export type Job =
  | { kind: 'data' }
  | { kind: 'pretrain'; row: string; seed: number }
  | { kind: 'eval'; row: string; seed: number; pretrainSeed: number; setting: SettingName; protocol: ProtocolName };

/** A job as the one argument a child process gets (`--job`), and back. */
export function jobId(job: Job): string {
  if (job.kind === 'data') return 'data';
  if (job.kind === 'pretrain') return `pretrain:${job.row}:${job.seed}`;
  return `eval:${job.row}:${job.seed}:${job.pretrainSeed}:${job.setting}:${job.protocol}`;
}

export function parseJobId(id: string): Job {
  const parts = id.split(':');
  const int = (s: string | undefined) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) throw new Error(`--job ${id}: bad seed '${s}'`);
    return n;
  };
  if (parts[0] === 'data' && parts.length === 1) return { kind: 'data' };
  if (parts[0] === 'pretrain' && parts.length === 3) return { kind: 'pretrain', row: parts[1]!, seed: int(parts[2]) };
  if (parts[0] === 'eval' && parts.length === 6 && (SETTINGS as readonly string[]).includes(parts[4]!) && (PROTOCOLS as readonly string[]).includes(parts[5]!)) {
    return { kind: 'eval', row: parts[1]!, seed: int(parts[2]), pretrainSeed: int(parts[3]), setting: parts[4] as SettingName, protocol: parts[5] as ProtocolName };
  }
  throw new Error(`--job: cannot read '${id}'`);
}

/** The pretraining run a row's evaluation uses: random init borrows the supervised run's architecture (and seed). */
export function pretrainRowOf(row: string): string {
  return row === RANDOM_INIT ? 'supervised' : row;
}

/** Fine-tune seed `seeds[i]` uses pretraining seed `pretrainSeeds[i mod n]`. */
export function pretrainSeedFor(seed: number, seeds: number[], pretrainSeeds: number[]): number {
  const i = seeds.indexOf(seed);
  if (i < 0) throw new Error(`seed ${seed} is not among --seeds ${seeds.join(',')}`);
  return pretrainSeeds[i % pretrainSeeds.length]!;
}

/** Where each job's result lives under the benchmark's folder. */
export function pretrainRunDir(out: string, row: string, seed: number): string {
  return join(out, 'pretrain', row, `seed-${seed}`);
}
export function resultFile(out: string, job: Job): string {
  if (job.kind === 'data') return join(out, 'data.json');
  if (job.kind === 'pretrain') return `${pretrainRunDir(out, job.row, job.seed)}.json`;
  return join(out, 'results', job.setting, job.row, `seed-${job.seed}-${job.protocol}.json`);
}

/** JSON with object keys sorted at every level, so that equal settings compare equal as text. */
export function canonicalJson(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().filter((k) => (v as Record<string, unknown>)[k] !== undefined).map((k) => [k, sort((v as Record<string, unknown>)[k])]));
    return v;
  };
  return JSON.stringify(sort(value));
}

export function sameSettings(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

/** Where two settings differ, as `path old -> new` (JSON values), so a replaced result says what changed. */
export function settingsChanges(before: unknown, after: unknown, path = ''): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> => Boolean(v) && typeof v === 'object' && !Array.isArray(v);
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    return keys.flatMap((k) => settingsChanges(before[k], after[k], path ? `${path}.${k}` : k));
  }
  if (canonicalJson(before) === canonicalJson(after)) return [];
  const show = (v: unknown) => (v === undefined ? '(none)' : canonicalJson(v));
  return [`${path || '(settings)'} ${show(before)} -> ${show(after)}`];
}

/** Every job result file records the settings it was made with. */
export interface JobResult<S = unknown> {
  job: string;
  settings: S;
  finished: string;
}

export function readJobResult<R extends JobResult>(path: string): R | null {
  return readResultFile<R>(path, 'rerun the job');
}

export type JobState = 'done' | 'todo' | 'stale';

/** done: a result made with these settings; stale: one made with other settings; todo: none. */
export function jobState(result: JobResult | null, settings: unknown): JobState {
  if (!result) return 'todo';
  return sameSettings(result.settings, settings) ? 'done' : 'stale';
}

export interface PlanOptions {
  rows: string[];
  seeds: number[];
  pretrainSeeds: number[];
  settings: readonly SettingName[];
  protocols: readonly ProtocolName[];
}

/**
 * Every job in the order the benchmark runs them: the data, then row by row
 * (the gate rows first, for the noise floor) each row's pretraining per
 * pretraining seed and its evaluations per seed, setting and protocol. Random
 * init needs the supervised pretraining run (its architecture and seed).
 */
export function planJobs(o: PlanOptions): Job[] {
  const order = [...GATE_ROWS.filter((r) => o.rows.includes(r)), ...o.rows.filter((r) => !GATE_ROWS.includes(r))];
  const jobs: Job[] = [{ kind: 'data' }];
  const pretrained = new Set<string>();
  for (const row of order) {
    const prow = pretrainRowOf(row);
    for (const seed of o.seeds) {
      const pretrainSeed = pretrainSeedFor(seed, o.seeds, o.pretrainSeeds);
      const key = `${prow}:${pretrainSeed}`;
      if (!pretrained.has(key)) {
        pretrained.add(key);
        jobs.push({ kind: 'pretrain', row: prow, seed: pretrainSeed });
      }
      for (const setting of o.settings) for (const protocol of o.protocols) jobs.push({ kind: 'eval', row, seed, pretrainSeed, setting, protocol });
    }
  }
  return jobs;
}

// ---------------------------------------------------------------- statistics

export interface Stat {
  mean: number;
  /** Sample standard deviation (n - 1); NaN for one value. */
  std: number;
  n: number;
}

export function meanStd(values: number[]): Stat {
  const n = values.length;
  if (n === 0) return { mean: Number.NaN, std: Number.NaN, n: 0 };
  const mean = values.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (n - 1)) : Number.NaN;
  return { mean, std, n };
}

/** `12.3 ± 0.4`, or `12.3` for one value, `-` for none. */
export function formatStat(s: Stat | undefined, digits = 1): string {
  if (!s || s.n === 0 || !Number.isFinite(s.mean)) return '-';
  return s.n > 1 && Number.isFinite(s.std) ? `${s.mean.toFixed(digits)} ± ${s.std.toFixed(digits)}` : s.mean.toFixed(digits);
}

/**
 * The noise floor: the pooled per-run standard deviation over seeds,
 * sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)) over the rows with two seeds or
 * more; null when there is none.
 */
export function pooledStd(stats: Stat[]): number | null {
  let num = 0;
  let dof = 0;
  for (const s of stats) {
    if (s.n > 1 && Number.isFinite(s.std)) {
      num += (s.n - 1) * s.std ** 2;
      dof += s.n - 1;
    }
  }
  return dof > 0 ? Math.sqrt(num / dof) : null;
}

/** One row's metrics of one setting, each over the seeds. */
export interface RowStats {
  row: string;
  label: string;
  metrics: Partial<Record<MetricKey, Stat>>;
  /** Detector fine-tuning images/s (mean over the runs). */
  imagesPerSec?: number;
  /** Pretraining minutes per epoch (mean over the pretraining seeds); null for random init. */
  minutesPerEpoch?: number | null;
}

/** The per-seed metric values of one row (one map per seed, merged over protocols) as RowStats. */
export function rowStats(row: TransferRow, perSeed: Array<Partial<Record<string, number>>>, extra: Partial<RowStats> = {}): RowStats {
  const metrics: RowStats['metrics'] = {};
  for (const { key } of METRICS) {
    const values = perSeed.map((m) => m[key]).filter((v): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0);
    if (values.length) metrics[key] = meanStd(values);
  }
  return { row: row.name, label: row.label, metrics, ...extra };
}

export type NoiseFloor = Partial<Record<MetricKey, number | null>>;

export function noiseFloor(rows: RowStats[]): NoiseFloor {
  const out: NoiseFloor = {};
  for (const { key } of METRICS) out[key] = pooledStd(rows.map((r) => r.metrics[key]).filter((s): s is Stat => s !== undefined));
  return out;
}

// ---------------------------------------------------------------- gates

export interface GateOptions {
  /** "Far below": the gap in AP^bb must exceed this many noise floors ... */
  far: number;
  /** "Clearly above": ... and this many for supervised over random init ... */
  clear: number;
  /** ... and never less than this many AP points (the only bar with one seed). */
  minGap: number;
}
export const DEFAULT_GATES: GateOptions = { far: 3, clear: 2, minGap: 1 };

export interface Gate {
  name: string;
  status: 'PASS' | 'FAIL' | 'N/A';
  detail: string;
}

/**
 * The two gates, on AP^bb: random init far below every pretrained row (gap >
 * max(far x noise, minGap)); supervised clearly above random init (gap >
 * max(clear x noise, minGap)). N/A where a row they need has no result.
 */
export function checkGates(rows: RowStats[], noise: number | null | undefined, o: GateOptions = DEFAULT_GATES): Gate[] {
  const ap = (name: string) => rows.find((r) => r.row === name)?.metrics.AP;
  const random = ap(RANDOM_INIT);
  const sigma = noise ?? null;
  const bar = (k: number) => Math.max(sigma === null ? 0 : k * sigma, o.minGap);
  const barText = (k: number) => `${bar(k).toFixed(2)} = max(${k} x noise ${sigma === null ? 'n/a (one seed)' : sigma.toFixed(2)}, ${o.minGap})`;
  const gates: Gate[] = [];

  const farName = 'random init far below every pretrained row (AP^bb)';
  const pretrained = rows.filter((r) => r.row !== RANDOM_INIT && r.metrics.AP);
  if (!random || pretrained.length === 0) {
    gates.push({ name: farName, status: 'N/A', detail: !random ? 'no random-init result' : 'no pretrained row' });
  } else {
    const gaps = pretrained.map((r) => ({ label: r.label, gap: r.metrics.AP!.mean - random.mean }));
    const failing = gaps.filter((g) => !(g.gap > bar(o.far)));
    const smallest = gaps.reduce((a, b) => (b.gap < a.gap ? b : a));
    gates.push({
      name: farName,
      status: failing.length ? 'FAIL' : 'PASS',
      detail:
        `bar ${barText(o.far)}; ` +
        (failing.length
          ? `not met by ${failing.map((g) => `${g.label} (${g.gap >= 0 ? '+' : ''}${g.gap.toFixed(2)})`).join(', ')}`
          : `smallest gap ${smallest.gap.toFixed(2)} (${smallest.label})`),
    });
  }

  const clearName = 'supervised clearly above random init (AP^bb)';
  const supervised = ap('supervised');
  if (!random || !supervised) {
    gates.push({ name: clearName, status: 'N/A', detail: !random ? 'no random-init result' : 'no supervised result' });
  } else {
    const gap = supervised.mean - random.mean;
    gates.push({ name: clearName, status: gap > bar(o.clear) ? 'PASS' : 'FAIL', detail: `gap ${gap >= 0 ? '+' : ''}${gap.toFixed(2)}, bar ${barText(o.clear)}` });
  }
  return gates;
}

export function formatGates(setting: string, gates: Gate[]): string[] {
  return gates.map((g) => `${g.status} [${setting}] ${g.name}: ${g.detail}`);
}

// ---------------------------------------------------------------- ranking and tables

/**
 * The rows by mean AP^bb, best first. Neighbours whose difference is within
 * two standard errors of a difference of means (2 x noise x sqrt(1/n_a +
 * 1/n_b)) are joined by '≈', others by '>'.
 */
export function ranking(rows: RowStats[], noise: number | null | undefined): string {
  const ranked = rows.filter((r) => r.metrics.AP).sort((a, b) => b.metrics.AP!.mean - a.metrics.AP!.mean);
  if (ranked.length === 0) return 'no AP^bb results';
  let text = `${ranked[0]!.label} ${ranked[0]!.metrics.AP!.mean.toFixed(1)}`;
  for (let i = 1; i < ranked.length; i++) {
    const a = ranked[i - 1]!.metrics.AP!;
    const b = ranked[i]!.metrics.AP!;
    const within = noise != null && a.mean - b.mean <= 2 * noise * Math.sqrt(1 / a.n + 1 / b.n);
    text += ` ${within ? '≈' : '>'} ${ranked[i]!.label} ${b.mean.toFixed(1)}`;
  }
  return noise == null ? `${text} (one seed: no noise floor, '>' is not a significance claim)` : text;
}

/** One line per row, mean ± std of each metric; `metricsOnly` (the README's summary) leaves out seeds, img/s and min/epoch. */
export function metricsTable(rows: RowStats[], metricsOnly = false): string {
  const extra = metricsOnly ? '' : ' seeds | fine-tune img/s | pretrain min/epoch |';
  const lines = [`| pretraining | ${METRICS.map((m) => m.title).join(' | ')} |${extra}`, `|---|${METRICS.map(() => '---:').join('|')}|${metricsOnly ? '' : '---:|---:|---:|'}`];
  for (const r of rows) {
    const metrics = `| ${r.label} | ${METRICS.map((m) => formatStat(r.metrics[m.key])).join(' | ')} |`;
    if (metricsOnly) {
      lines.push(metrics);
      continue;
    }
    const n = Math.max(0, ...Object.values(r.metrics).map((s) => s?.n ?? 0));
    const ips = r.imagesPerSec === undefined || !Number.isFinite(r.imagesPerSec) ? '-' : r.imagesPerSec.toFixed(1);
    const mpe = r.minutesPerEpoch == null ? '-' : r.minutesPerEpoch.toFixed(2);
    lines.push(`${metrics} ${n} | ${ips} | ${mpe} |`);
  }
  return lines.join('\n');
}

/** One setting's part of the README summary: `title` names it, `gates` are formatGates' lines. */
export interface SettingSummary {
  title: string;
  rows: RowStats[];
  gates: string[];
  ranking: string;
}

/**
 * The README's summary of the tables: `header`, the first setting's metrics
 * table, every setting's gate lines, and the other settings' rankings.
 */
export function summaryText(header: string, settings: SettingSummary[]): string {
  const withRows = settings.filter((s) => s.rows.length > 0);
  const lines = [header];
  const [first, ...others] = withRows;
  if (!first) return [...lines, '', 'no results yet'].join('\n');
  lines.push('', `**${first.title}**`, '', metricsTable(first.rows, true), '', ...withRows.flatMap((s) => s.gates.map((g) => `- ${g}`)));
  if (others.length) lines.push('', ...others.map((s) => `Ranking by AP^bb, ${s.title}: ${s.ranking}`));
  return lines.join('\n');
}

export function noiseLine(noise: NoiseFloor): string {
  const parts = METRICS.map((m) => `${m.title} ${noise[m.key] == null ? 'n/a' : noise[m.key]!.toFixed(2)}`);
  return `noise floor (pooled std over seeds, per run): ${parts.join(', ')}`;
}
