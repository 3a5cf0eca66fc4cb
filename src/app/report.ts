// The run report (`selfsup report RUN [RUN ...]`): one self-contained HTML
// file per call that a person opens offline, months later, on any machine:
// each run's config and environment, its training curves from metrics.jsonl,
// every EvalReport under eval/ as tables, SVM accuracy per stage as bars, the
// similarity histograms re-plotted, and the protocols' pictures embedded.
// With several runs the figures overlay them (a colour per run) and the
// tables put them side by side (a column per run).
//
// Self-contained means no script and no network: plots are Vega-Lite specs
// rendered to SVG here (report_charts.ts) and inlined, pictures are data:
// URIs, and a Content-Security-Policy forbids loading anything else, so a
// report that would need the network fails loudly in the browser test
// instead of silently offline. Every string read from a file is escaped.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, extname, join, relative, resolve, sep } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { writeFileAtomic } from '../core/files.js';
import { parseOrThrow } from '../core/schema.js';
import { MetricsLog, type EpochMetrics, type StepMetrics } from '../train/metrics.js';
import {
  downsample,
  facetLineChart,
  histogramChart,
  lineChart,
  MAX_POINTS,
  measureLineChart,
  renderSvg,
  stageBarChart,
  vegaVersions,
  type HistogramBin,
  type LineRow,
  type StageBar,
} from './report_charts.js';

type EpochLine = EpochMetrics & { kind: 'epoch'; elapsed: number };

export interface RunFolder {
  /** Absolute path. */
  dir: string;
  /** How figures and tables name the run: the folder's name, made unique among the runs of one report. */
  name: string;
  configText: string | null;
  config: Record<string, unknown> | null;
  steps: StepMetrics[];
  epochs: EpochLine[];
  /** eval/*.json, in file-name order. */
  evals: Array<{ file: string; report: EvalReport }>;
}

// Loose on purpose: the report must read EvalReports of every protocol and of
// older versions, so it checks only the fields it reads. Metrics may be null:
// JSON writes a NaN (an SVM class without test images) as null.
const EvalReportShape = z
  .object({
    protocol: z.string(),
    checkpoint: z.object({ path: z.string().optional(), sha256: z.string().nullable().optional(), randomInit: z.boolean().optional() }).passthrough(),
    data: z.object({ name: z.string(), trainImages: z.number().optional(), testImages: z.number().optional(), stage: z.string().optional(), dim: z.number().optional() }).passthrough(),
    options: z.record(z.unknown()),
    metrics: z.record(z.number().nullable()),
    details: z.record(z.unknown()).optional(),
    artifacts: z.record(z.string()).default({}),
    backend: z.string(),
    createdAt: z.string(),
    seconds: z.number(),
  })
  .passthrough();
/** An EvalReport (eval/protocol.ts) as far as the report relies on it. */
type EvalReport = z.infer<typeof EvalReportShape>;

function readJsonFile(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`report: ${file} is not valid JSON (${(err as Error).message})`);
  }
}

/** Reads what a report shows of one run folder; errors name the path or file at fault. */
export function readRunFolder(path: string): Omit<RunFolder, 'name'> {
  const dir = resolve(path);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`report: ${path} is not a folder`);
  const configFile = join(dir, 'config.yaml');
  const metricsFile = join(dir, 'metrics.jsonl');
  if (!existsSync(configFile) && !existsSync(metricsFile)) {
    throw new Error(`report: ${path} is not a run folder (it has neither config.yaml nor metrics.jsonl)`);
  }
  let configText: string | null = null;
  let config: Record<string, unknown> | null = null;
  if (existsSync(configFile)) {
    configText = readFileSync(configFile, 'utf8');
    try {
      const parsed: unknown = parseYaml(configText);
      config = parsed !== null && typeof parsed === 'object' ? (parsed as Record<string, unknown>) : null;
    } catch (err) {
      throw new Error(`report: ${configFile} is not valid YAML (${(err as Error).message})`);
    }
  }
  const lines = new MetricsLog(metricsFile).read();
  const steps = lines.filter((l): l is StepMetrics => l.kind === 'step');
  const epochs = lines.filter((l): l is EpochLine => l.kind === 'epoch');
  const evalDir = join(dir, 'eval');
  const evals = existsSync(evalDir)
    ? readdirSync(evalDir)
        .filter((f) => f.endsWith('.json'))
        .sort()
        .map((f) => {
          const file = join(evalDir, f);
          return { file, report: parseOrThrow(EvalReportShape, readJsonFile(file), `report: ${file}`) };
        })
    : [];
  return { dir, configText, config, steps, epochs, evals };
}

/** Folder names, with enough of the parent path to tell apart runs that share one (two `run` folders). */
function uniqueNames(dirs: string[]): string[] {
  const names = dirs.map((d) => basename(d));
  return names.map((name, i) => {
    if (names.filter((n) => n === name).length === 1) return name;
    const parts = dirs[i]!.split(sep).filter(Boolean);
    const longer = parts.slice(-2).join('/');
    return dirs.filter((d) => d.split(sep).filter(Boolean).slice(-2).join('/') === longer).length === 1 ? longer : `${name} #${i + 1}`;
  });
}

export function readRuns(paths: string[]): RunFolder[] {
  const folders = paths.map(readRunFolder);
  const names = uniqueNames(folders.map((f) => f.dir));
  return folders.map((f, i) => ({ ...f, name: names[i]! }));
}

// ---- HTML helpers -----------------------------------------------------------

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Metrics to 4 significant places in the table (the full value is the cell's title). */
export function formatNumber(v: number | null | undefined): string {
  if (v === null || v === undefined || Number.isNaN(v)) return 'n/a';
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(4);
}

function numberCell(v: number | null | undefined): string {
  return v === null || v === undefined ? '<td class="num">–</td>' : `<td class="num" title="${escapeHtml(String(v))}">${escapeHtml(formatNumber(v))}</td>`;
}

function textCell(v: string | null | undefined): string {
  return `<td>${v === null || v === undefined || v === '' ? '–' : escapeHtml(v)}</td>`;
}

function figure(name: string, content: string, caption?: string): string {
  return `<figure data-figure="${escapeHtml(name)}">${content}${caption ? `<figcaption>${escapeHtml(caption)}</figcaption>` : ''}</figure>`;
}

/** A value at a dotted path of a parsed config, or undefined. */
function at(config: Record<string, unknown> | null, path: string): unknown {
  let v: unknown = config;
  for (const key of path.split('.')) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined;
  return v;
}

function str(v: unknown): string | null {
  if (v === undefined || v === null) return null;
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

const same = (v: string) => v;

/** The config's values at `paths`, each labelled, the missing ones left out. */
function configParts(config: Record<string, unknown> | null, paths: Array<[string, (v: string) => string]>): string | null {
  const parts = paths.flatMap(([path, label]) => {
    const v = str(at(config, path));
    return v === null ? [] : [label(v)];
  });
  return parts.length ? parts.join(', ') : null;
}

function minutes(seconds: number | undefined): string | null {
  if (seconds === undefined || !Number.isFinite(seconds)) return null;
  return seconds < 120 ? `${seconds.toFixed(1)} s` : `${(seconds / 60).toFixed(1)} min`;
}

// ---- sections -------------------------------------------------------------

/** A column per run: what ran, how far it got, and on what; then each config.yaml verbatim. */
function runsSection(runs: RunFolder[]): string {
  const rows: Array<[string, (r: RunFolder) => string | null]> = [
    ['folder', (r) => r.dir],
    ['method', (r) => str(at(r.config, 'method'))],
    ['method options', (r) => {
      const o = at(r.config, 'methodOptions');
      return o !== null && typeof o === 'object' ? optionsSummary(o as Record<string, unknown>) || 'defaults' : str(o);
    }],
    ['data', (r) => configParts(r.config, [['dataset.name', same], ['dataset.limit', (v) => `${v} images`], ['dataset.size', (v) => `${v} px`]])],
    ['model', (r) => configParts(r.config, [['model.arch', same], ['model.width', (v) => `width ${v}`], ['model.stem', (v) => `${v} stem`]])],
    ['optimizer', (r) => configParts(r.config, [['optimizer.name', same], ['optimizer.lr', (v) => `lr ${v}`], ['schedule.name', (v) => `${v} schedule`]])],
    ['batch size', (r) => str(at(r.config, 'batchSize'))],
    ['seed', (r) => str(at(r.config, 'seed'))],
    ['epochs done / planned', (r) => `${r.epochs.length} / ${str(at(r.config, 'epochs')) ?? '?'}`],
    ['steps', (r) => (r.steps.length ? String(r.steps.at(-1)!.step + 1) : null)],
    ['training time', (r) => minutes(r.epochs.at(-1)?.elapsed ?? r.steps.at(-1)?.elapsed)],
    ['last epoch loss', (r) => (r.epochs.length ? formatNumber(r.epochs.at(-1)!.loss) : null)],
    ['last online kNN top-1 %', (r) => {
      const knn = [...r.epochs].reverse().find((e) => e.knn)?.knn;
      return knn ? formatNumber(knn.top1) : null;
    }],
    ['backend (run config)', (r) => str(at(r.config, 'backend'))],
    ['precision (run config)', (r) => str(at(r.config, 'precision'))],
    ['loader workers', (r) => str(at(r.config, 'workers'))],
    ['backend (evaluations)', (r) => [...new Set(r.evals.map((e) => e.report.backend))].join(', ') || null],
    ['evaluation reports', (r) => String(r.evals.length)],
  ];
  const head = `<tr><th></th>${runs.map((r) => `<th>${escapeHtml(r.name)}</th>`).join('')}</tr>`;
  const body = rows.map(([label, value]) => `<tr><th>${escapeHtml(label)}</th>${runs.map((r) => textCell(value(r))).join('')}</tr>`).join('\n');
  const configs = runs
    .map((r) =>
      r.configText === null
        ? `<p>${escapeHtml(r.name)}: no config.yaml</p>`
        : `<details><summary>config.yaml of ${escapeHtml(r.name)}</summary><pre>${escapeHtml(r.configText)}</pre></details>`,
    )
    .join('\n');
  return `<section id="runs"><h2>Runs</h2>\n<table class="runs">${head}\n${body}</table>\n${configs}\n</section>`;
}

async function trainingSection(runs: RunFolder[]): Promise<string> {
  const names = runs.map((r) => r.name);
  const stepSeries = (pick: (s: StepMetrics) => number | undefined): LineRow[] =>
    runs.flatMap((r) => downsample(r.steps.map((s) => ({ x: s.step, y: pick(s) ?? Number.NaN }))).map((p) => ({ run: r.name, ...p })));
  const figures: string[] = [];
  if (runs.some((r) => r.steps.length)) {
    figures.push(figure('loss', await renderSvg(lineChart({ title: 'loss', x: 'step', y: 'loss', runs: names, rows: stepSeries((s) => s.loss) }))));
    // Every term the method logs (DetCo: gg/ll/lg per stage), a panel each, in the order the runs log them.
    const terms = [...new Set(runs.flatMap((r) => r.steps.flatMap((s) => Object.keys(s.terms ?? {}))))];
    if (terms.length) {
      const rows = terms.flatMap((name) => stepSeries((s) => s.terms?.[name]).map((row) => ({ ...row, name })));
      figures.push(figure('terms', await renderSvg(facetLineChart({ title: 'loss terms', x: 'step', runs: names, rows, columns: Math.min(terms.length, 3) }))));
    }
    figures.push(figure('lr', await renderSvg(lineChart({ title: 'learning rate', x: 'step', y: 'lr', runs: names, rows: stepSeries((s) => s.lr), zero: true }))));
    figures.push(figure('images-per-sec', await renderSvg(lineChart({ title: 'images / s', x: 'step', y: 'images/s', runs: names, rows: stepSeries((s) => s.imagesPerSec), zero: true }))));
  }
  const knn = runs.flatMap((r) => r.epochs.filter((e) => e.knn).map((e) => ({ run: r.name, x: e.epoch + 1, y: e.knn!.top1 })));
  if (knn.length) {
    figures.push(figure('online-knn', await renderSvg(lineChart({ title: 'online kNN top-1 % per epoch', x: 'epoch', y: 'top-1 %', runs: names, rows: knn, points: true }))));
  }
  const nmi = runs.flatMap((r) =>
    r.epochs.flatMap((e) => {
      const c = e.clustering;
      if (!c) return [];
      const rows: Array<LineRow & { measure: string }> = [];
      if (c.nmiPrevious !== null) rows.push({ run: r.name, x: e.epoch + 1, y: c.nmiPrevious, measure: 'vs previous clusters' });
      if (c.nmiLabels !== null) rows.push({ run: r.name, x: e.epoch + 1, y: c.nmiLabels, measure: 'vs labels' });
      return rows;
    }),
  );
  if (nmi.length) {
    figures.push(figure('clustering-nmi', await renderSvg(measureLineChart({ title: 'NMI of the epoch’s clusters', x: 'epoch', y: 'NMI', runs: names, rows: nmi }))));
  }
  const stepped = Math.max(0, ...runs.map((r) => r.steps.length));
  const note = stepped > MAX_POINTS ? `<p class="note">Step series are averaged over consecutive windows to at most ${MAX_POINTS} points per run.</p>` : '';
  const empty = figures.length ? '' : '<p>No metrics.jsonl lines to plot.</p>';
  return `<section id="training"><h2>Training</h2>\n${note}${empty}${figures.join('\n')}\n</section>`;
}

interface EvalEntry {
  run: string;
  file: string;
  report: EvalReport;
}

const PROTOCOL_ORDER = ['knn', 'linear', 'svm', 'retrieval', 'attention', 'similarity', 'umap', 'detect', 'segment'];

/**
 * What makes two reports comparable across runs: the protocol's data, stage
 * and options (limits, random init) and the checkpoint file's name, but not
 * the checkpoint itself, so each run's report of the same evaluation lands in
 * the same table row. Options are key-sorted, so their order never matters.
 */
function settingsKey(r: EvalReport, withStage = true): string {
  const options = Object.fromEntries(Object.entries(r.options).filter(([k]) => withStage || k !== 'stage').sort(([a], [b]) => a.localeCompare(b)));
  const checkpoint = r.checkpoint.path ? basename(r.checkpoint.path) : '';
  return JSON.stringify({ data: r.data.name, stage: withStage ? (r.data.stage ?? null) : null, options, checkpoint });
}

/** The options as "key=value", short lists in full, long ones abbreviated. */
function optionsSummary(options: Record<string, unknown>): string {
  return Object.entries(options)
    // Stage and random init are in the block's title.
    .filter(([k, v]) => v !== undefined && k !== 'stage' && k !== 'randomInit')
    .map(([k, v]) => {
      if (Array.isArray(v)) return `${k}=[${v.length > 4 ? `${v.slice(0, 3).map(String).join(', ')}, … ${v.length} values` : v.map(String).join(', ')}]`;
      return `${k}=${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`;
    })
    .join(', ');
}

function settingTitle(r: EvalReport): string {
  const parts = [
    r.data.stage ? `stage ${r.data.stage}` : null,
    `${r.data.name}${r.data.trainImages || r.data.testImages ? `, ${r.data.trainImages ?? 0} train → ${r.data.testImages ?? 0} test images` : ''}`,
    r.checkpoint.randomInit ? 'random initialisation' : null,
    r.checkpoint.path && basename(r.checkpoint.path) !== 'last.safetensors' ? basename(r.checkpoint.path) : null,
  ].filter(Boolean);
  return parts.join(' · ');
}

function groupBy<T>(items: T[], key: (t: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) groups.set(key(item), [...(groups.get(key(item)) ?? []), item]);
  return groups;
}

/** One table per protocol: a block of rows per setting, a row per metric, a column per run. */
function protocolTable(protocol: string, entries: EvalEntry[], runs: string[]): string {
  const blocks = [...groupBy(entries, (e) => settingsKey(e.report)).values()];
  // Trained before random init, then one setting's stages in order.
  const order = (e: EvalEntry) => `${e.report.checkpoint.randomInit ? 1 : 0} ${settingsKey(e.report, false)} ${e.report.data.stage ?? ''}`;
  blocks.sort((a, b) => order(a[0]!).localeCompare(order(b[0]!)));
  const head = `<tr><th>metric</th>${runs.map((r) => `<th>${escapeHtml(r)}</th>`).join('')}</tr>`;
  const body = blocks.map((block) => {
    const first = block[0]!.report;
    // A run evaluated twice with one setting (reports from before a rename, say): its newest report counts.
    const byRun = new Map(block.sort((a, b) => a.report.createdAt.localeCompare(b.report.createdAt)).map((e) => [e.run, e]));
    const metrics = [...new Set(block.flatMap((e) => Object.keys(e.report.metrics)))];
    const lines = [
      `<tr class="setting"><th colspan="${runs.length + 1}">${escapeHtml(settingTitle(first))}<br><span class="options">${escapeHtml(optionsSummary(first.options))}</span></th></tr>`,
      ...metrics.map((m) => `<tr><td>${escapeHtml(m)}</td>${runs.map((r) => numberCell(byRun.get(r)?.report.metrics[m])).join('')}</tr>`),
      `<tr class="meta"><td>backend</td>${runs.map((r) => textCell(byRun.get(r)?.report.backend)).join('')}</tr>`,
      `<tr class="meta"><td>seconds</td>${runs.map((r) => numberCell(byRun.get(r)?.report.seconds)).join('')}</tr>`,
      `<tr class="meta"><td>checkpoint sha256</td>${runs.map((r) => textCell(byRun.has(r) ? (byRun.get(r)!.report.checkpoint.sha256?.slice(0, 12) ?? 'none') : null)).join('')}</tr>`,
      `<tr class="meta"><td>report file</td>${runs.map((r) => textCell(byRun.has(r) ? basename(byRun.get(r)!.file) : null)).join('')}</tr>`,
    ];
    return lines.join('\n');
  });
  return `<h3>${escapeHtml(protocol)}</h3>\n<table class="metrics">${head}\n${body.join('\n')}</table>`;
}

/** SVM runs once per stage (DetCo's every-stage table): mAP and top-1 per stage as bars, when a setting has two stages or more. */
async function stageCharts(entries: EvalEntry[], runs: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const group of groupBy(entries, (e) => settingsKey(e.report, false)).values()) {
    const stages = new Set(group.map((e) => e.report.data.stage).filter(Boolean));
    if (stages.size < 2) continue;
    const rows: StageBar[] = group.flatMap((e) =>
      (
        [
          ['mAP', e.report.metrics.mAP],
          ['top-1', e.report.metrics.top1],
        ] as const
      )
        .filter(([, v]) => typeof v === 'number' && Number.isFinite(v))
        .map(([metric, value]) => ({ run: e.run, stage: e.report.data.stage!, metric, value: value! })),
    );
    const init = group[0]!.report.checkpoint.randomInit ? ', random initialisation' : '';
    out.push(figure('svm-stages', await renderSvg(stageBarChart({ title: `linear SVM per stage${init}`, runs, rows })), optionsSummary(group[0]!.report.options)));
  }
  return out;
}

/** The similarity protocol's exp(cos) histograms (in its details), as shares of each side's pairs, runs overlaid. */
async function histogramCharts(entries: EvalEntry[], runs: string[]): Promise<string[]> {
  const out: string[] = [];
  const isNumbers = (v: unknown): v is number[] => Array.isArray(v) && v.every((x) => typeof x === 'number');
  for (const group of groupBy(entries, (e) => settingsKey(e.report)).values()) {
    const rows: HistogramBin[] = [];
    for (const e of group) {
      const d = e.report.details ?? {};
      const edges = d.histogramEdges;
      if (!isNumbers(edges)) continue;
      for (const [key, label] of [
        ['globalGlobal', 'global-global'],
        ['localGlobal', 'local-global'],
      ] as const) {
        const stats = d[key] as Record<string, unknown> | undefined;
        for (const [side, name] of [
          ['positiveHistogram', 'positives'],
          ['negativeHistogram', 'negatives'],
        ] as const) {
          const counts = stats?.[side];
          if (!isNumbers(counts) || counts.length !== edges.length - 1) continue;
          const total = counts.reduce((a, b) => a + b, 0) || 1;
          counts.forEach((c, i) => rows.push({ run: e.run, panel: `${label} ${name}`, lo: edges[i]!, hi: edges[i + 1]!, share: (100 * c) / total }));
        }
      }
    }
    if (!rows.length) continue;
    const first = group[0]!.report;
    out.push(figure('similarity-histograms', await renderSvg(histogramChart({ title: `similarity of pairs, ${first.data.stage ?? str(first.options.stage) ?? ''}`.trim(), runs, rows })), optionsSummary(first.options)));
  }
  return out;
}

/** A PNG's size from its IHDR chunk, to show small grids enlarged without blurring. */
function pngSize(bytes: Buffer): { width: number; height: number } | null {
  if (bytes.length < 24 || bytes.toString('latin1', 12, 16) !== 'IHDR') return null;
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

/**
 * One artifact as HTML: a PNG as a data: URI, an SVG inline (its XML prolog
 * dropped). An SVG that could run code (a script, foreignObject, an on*
 * handler) goes into an <img> data: URI instead, where browsers never run it.
 */
function artifactHtml(runDir: string, reportFile: string, name: string, rel: string): string {
  const path = resolve(dirname(reportFile), rel);
  const label = `${name}: ${rel}`;
  if (relative(runDir, path).startsWith('..')) return `<p class="note">${escapeHtml(label)} (outside the run folder, not embedded)</p>`;
  if (!existsSync(path)) return `<p class="note">${escapeHtml(label)} (file missing)</p>`;
  const ext = extname(path).toLowerCase();
  const bytes = readFileSync(path);
  if (ext === '.png') {
    const size = pngSize(bytes);
    const scale = size ? Math.max(1, Math.min(4, Math.floor(480 / Math.max(size.width, size.height / 2)))) : 1;
    const dims = size ? ` width="${size.width * scale}" height="${size.height * scale}"` : '';
    return `<img class="artifact" alt="${escapeHtml(label)}"${dims} src="data:image/png;base64,${bytes.toString('base64')}">`;
  }
  if (ext === '.svg') {
    const svg = bytes.toString('utf8').replace(/<\?xml[^>]*\?>/g, '').replace(/<!DOCTYPE[^>]*>/gi, '').trim();
    if (!/<script|<foreignObject|\son[a-z]+\s*=/i.test(svg) && svg.startsWith('<svg')) return svg;
    return `<img class="artifact" alt="${escapeHtml(label)}" src="data:image/svg+xml;base64,${bytes.toString('base64')}">`;
  }
  return `<p class="note">${escapeHtml(label)} (not a picture, not embedded)</p>`;
}

/** Each report's pictures, a figure per setting with the runs side by side. A PNG rendering of an SVG the same report has is skipped. */
function artifactFigures(entries: EvalEntry[], runDirs: Map<string, string>): string[] {
  const out: string[] = [];
  for (const group of groupBy(
    entries.filter((e) => Object.keys(e.report.artifacts).length),
    (e) => settingsKey(e.report),
  ).values()) {
    const cells = group.map((e) => {
      const arts = Object.entries(e.report.artifacts);
      const svgs = new Set(arts.filter(([, p]) => p.toLowerCase().endsWith('.svg')).map(([, p]) => p.slice(0, -4)));
      const shown = arts.filter(([, p]) => !(p.toLowerCase().endsWith('.png') && svgs.has(p.slice(0, -4))));
      const html = shown.map(([name, rel]) => artifactHtml(runDirs.get(e.run)!, e.file, name, rel)).join('\n');
      return `<div class="artifact-cell"><div class="run">${escapeHtml(e.run)}</div>${html}</div>`;
    });
    out.push(figure('artifact', `<div class="artifact-row">${cells.join('\n')}</div>`, `${group[0]!.report.protocol}: ${settingTitle(group[0]!.report)}`));
  }
  return out;
}

async function evaluationSection(runs: RunFolder[]): Promise<string> {
  const names = runs.map((r) => r.name);
  const entries: EvalEntry[] = runs.flatMap((r) => r.evals.map((e) => ({ run: r.name, ...e })));
  if (!entries.length) return '<section id="evaluation"><h2>Evaluation</h2>\n<p>No evaluation reports (eval/*.json).</p>\n</section>';
  const protocols = [...new Set(entries.map((e) => e.report.protocol))].sort((a, b) => {
    const [i, j] = [PROTOCOL_ORDER.indexOf(a), PROTOCOL_ORDER.indexOf(b)];
    return (i < 0 ? 99 : i) - (j < 0 ? 99 : j) || a.localeCompare(b);
  });
  const runDirs = new Map(runs.map((r) => [r.name, r.dir]));
  const parts: string[] = [];
  for (const protocol of protocols) {
    const mine = entries.filter((e) => e.report.protocol === protocol);
    parts.push(protocolTable(protocol, mine, names));
    if (protocol === 'svm') parts.push(...(await stageCharts(mine, names)));
    if (protocol === 'similarity') parts.push(...(await histogramCharts(mine, names)));
    parts.push(...artifactFigures(mine, runDirs));
  }
  return `<section id="evaluation"><h2>Evaluation</h2>\n${parts.join('\n')}\n</section>`;
}

const STYLE = `
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; } h3 { margin-top: 1.5em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
table.runs td { max-width: 28em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.setting th { background: #f3f3f3; font-weight: 600; }
tr.meta td { color: #777; font-size: .9em; }
span.options { font-weight: normal; color: #555; font-size: .9em; }
figure { margin: 1em 0; } figcaption { color: #666; font-size: .85em; max-width: 900px; }
.artifact-row { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.artifact-cell .run { font-weight: 600; margin-bottom: .3em; }
.artifact-cell > svg { max-width: 560px; height: auto; }
img.artifact { image-rendering: pixelated; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }
p.note, footer { color: #666; font-size: .85em; }
`;

/** The report of `runs` as one HTML document. */
export async function reportHtml(runs: RunFolder[], now = new Date()): Promise<string> {
  const title = `selfsup report: ${runs.map((r) => r.name).join(', ')}`;
  const sections = [runsSection(runs), await trainingSection(runs), await evaluationSection(runs)];
  const versions = await vegaVersions();
  return [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8">',
    // Belt and braces for "opens offline": the browser may load nothing and run nothing.
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">`,
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${escapeHtml(title)}</title>`,
    `<style>${STYLE}</style>`,
    '</head><body>',
    `<h1>${escapeHtml(title)}</h1>`,
    ...sections,
    `<footer><p>Written ${escapeHtml(now.toISOString())} by selfsup report on Node ${escapeHtml(process.version)} (${escapeHtml(process.platform)}/${escapeHtml(process.arch)}), ` +
      `vega ${escapeHtml(versions.vega)}, vega-lite ${escapeHtml(versions.vegaLite)}. Training's backend is the run config's choice; each evaluation records the backend it ran on.</p></footer>`,
    '</body></html>',
    '',
  ].join('\n');
}

export interface ReportOptions {
  /** Folder for index.html (default: the first run's `report/`). */
  out?: string;
}

/** Writes the report of `runPaths` atomically and returns the path of its index.html. */
export async function writeReport(runPaths: string[], o: ReportOptions = {}): Promise<string> {
  if (!runPaths.length) throw new Error('report: name at least one run folder');
  const runs = readRuns(runPaths);
  const file = join(resolve(o.out ?? join(runs[0]!.dir, 'report')), 'index.html');
  writeFileAtomic(file, await reportHtml(runs));
  return file;
}
