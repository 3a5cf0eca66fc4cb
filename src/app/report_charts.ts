// The run report's figures: Vega-Lite specs, compiled with vega-lite and
// rendered to SVG strings in Node by vega's headless View, so the report can
// inline them and needs no script and no network to open. Every chart colours
// by run with one shared domain, so a run keeps its colour in every figure,
// even in a figure where another run has no data.
//
// vega and vega-lite are loaded on first use: every `selfsup` command imports
// this module (the demo writes a report), and loading them takes about half a
// second.
import type * as Vega from 'vega';
import type { TopLevelSpec } from 'vega-lite';

let modules: Promise<[typeof Vega, typeof import('vega-lite')]> | null = null;
const load = () => (modules ??= Promise.all([import('vega'), import('vega-lite')]));

/** The versions that drew the figures, for the report's footer. */
export async function vegaVersions(): Promise<{ vega: string; vegaLite: string }> {
  const [vega, vegaLite] = await load();
  return { vega: vega.version, vegaLite: vegaLite.version };
}

/** Long step series are averaged down to about this many points, so the HTML stays small. */
export const MAX_POINTS = 500;

const WIDTH = 520;
const HEIGHT = 200;

/** Averages consecutive windows of `points` (x and y alike) down to at most `max` points; non-finite values are dropped first. */
export function downsample(points: Array<{ x: number; y: number }>, max = MAX_POINTS): Array<{ x: number; y: number }> {
  const finite = points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  if (finite.length <= max) return finite;
  const window = Math.ceil(finite.length / max);
  const out: Array<{ x: number; y: number }> = [];
  for (let i = 0; i < finite.length; i += window) {
    const chunk = finite.slice(i, i + window);
    out.push({ x: chunk.reduce((s, p) => s + p.x, 0) / chunk.length, y: chunk.reduce((s, p) => s + p.y, 0) / chunk.length });
  }
  return out;
}

/** The colour channel every chart shares: one colour per run, legend titled "run". */
function runColor(runs: string[]) {
  return { field: 'run', type: 'nominal' as const, title: 'run', scale: { domain: runs }, legend: { orient: 'bottom' as const, labelLimit: 400 } };
}

/** Compiles a Vega-Lite spec and renders it to an SVG string, headless (no canvas, no DOM). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const [vega, vegaLite] = await load();
  const compiled = vegaLite.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled as Vega.Spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

export interface LineRow {
  run: string;
  x: number;
  y: number;
}

/** An x axis of epochs or steps: whole numbers only. */
function countAxis(title: string) {
  return { field: 'x', type: 'quantitative' as const, title, axis: { tickMinStep: 1, format: 'd' } };
}

/** One line per run: a step series (loss, learning rate, images/s) or an epoch series (points marked). */
export function lineChart(o: { title: string; x: string; y: string; runs: string[]; rows: LineRow[]; points?: boolean; zero?: boolean }): TopLevelSpec {
  return {
    title: o.title,
    width: WIDTH,
    height: HEIGHT,
    data: { values: o.rows },
    mark: { type: 'line', strokeWidth: 1.5, point: o.points ?? false },
    encoding: {
      x: countAxis(o.x),
      y: { field: 'y', type: 'quantitative', title: o.y, scale: { zero: o.zero ?? false } },
      color: runColor(o.runs),
    },
  };
}

/** Small multiples of step series, one panel per name (a method's loss terms, DetCo's gg/ll/lg per stage), lines coloured by run. */
export function facetLineChart(o: { title: string; x: string; runs: string[]; rows: Array<LineRow & { name: string }>; columns?: number }): TopLevelSpec {
  return {
    title: o.title,
    data: { values: o.rows },
    facet: { field: 'name', type: 'nominal', title: null, sort: [...new Set(o.rows.map((r) => r.name))] },
    columns: o.columns ?? 3,
    spec: {
      width: 220,
      height: 120,
      mark: { type: 'line', strokeWidth: 1.2 },
      encoding: {
        x: countAxis(o.x),
        y: { field: 'y', type: 'quantitative', title: null, scale: { zero: false } },
        color: runColor(o.runs),
      },
    },
    resolve: { scale: { y: 'independent' } },
  };
}

/** Epoch series with several measures (DeepCluster's NMI against the previous clusters and against the labels): dash by measure. */
export function measureLineChart(o: { title: string; x: string; y: string; runs: string[]; rows: Array<LineRow & { measure: string }> }): TopLevelSpec {
  return {
    title: o.title,
    width: WIDTH,
    height: HEIGHT,
    data: { values: o.rows },
    mark: { type: 'line', strokeWidth: 1.5, point: true },
    encoding: {
      x: countAxis(o.x),
      y: { field: 'y', type: 'quantitative', title: o.y },
      color: runColor(o.runs),
      strokeDash: { field: 'measure', type: 'nominal', title: null, legend: { orient: 'bottom', labelLimit: 400 } },
    },
  };
}

export interface StageBar {
  run: string;
  stage: string;
  metric: string;
  value: number;
}

/** A protocol run once per stage (the SVM's res2..res5): bars per stage, a panel per metric, runs side by side. */
export function stageBarChart(o: { title: string; runs: string[]; rows: StageBar[] }): TopLevelSpec {
  return {
    title: o.title,
    data: { values: o.rows },
    facet: { column: { field: 'metric', type: 'nominal', title: null } },
    spec: {
      width: 240,
      height: HEIGHT,
      mark: { type: 'bar' },
      encoding: {
        x: { field: 'stage', type: 'nominal', title: 'stage', sort: ['res2', 'res3', 'res4', 'res5'], axis: { labelAngle: 0 } },
        xOffset: { field: 'run', type: 'nominal', scale: { domain: o.runs } },
        y: { field: 'value', type: 'quantitative', title: '%', scale: { domain: [0, 100] } },
        color: runColor(o.runs),
        tooltip: [{ field: 'value', type: 'quantitative', format: '.2f' }],
      },
    },
  };
}

export interface HistogramBin {
  run: string;
  /** e.g. "global-global positives". */
  panel: string;
  lo: number;
  hi: number;
  /** Share of the panel's pairs in this bin, percent: positives and negatives differ in number by K - 1. */
  share: number;
}

/** The similarity protocol's histograms of exp(cos), re-plotted: a panel per pairing and side, runs overlaid. */
export function histogramChart(o: { title: string; runs: string[]; rows: HistogramBin[] }): TopLevelSpec {
  return {
    title: o.title,
    data: { values: o.rows },
    facet: { field: 'panel', type: 'nominal', title: null, sort: [...new Set(o.rows.map((r) => r.panel))] },
    columns: 2,
    spec: {
      width: 260,
      height: 140,
      mark: { type: 'rect', opacity: 0.55 },
      encoding: {
        x: { field: 'lo', type: 'quantitative', title: 'exp(cos)', scale: { zero: false, nice: false } },
        x2: { field: 'hi' },
        y: { field: 'share', type: 'quantitative', title: '% of pairs' },
        y2: { datum: 0 },
        color: runColor(o.runs),
      },
    },
  };
}
