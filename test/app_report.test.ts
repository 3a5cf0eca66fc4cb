// `selfsup report`: two tiny real runs (MoCo v2 and supervised, width 4, 128
// Fashion-MNIST images, 2 epochs with online kNN), evaluated as a user would
// (kNN, SVMs on two stages, and on the MoCo run attention, UMAP and similarity
// statistics), then reported: the HTML is self-contained (no script, no
// resource from the network), has one SVG per figure and the metrics in its
// tables, overlays two runs, escapes what it read, and opens in a real
// browser (Chromium through playwright-core) without errors, every figure
// drawn and the page not blank. Bad input names the path or file at fault.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { chromium } from 'playwright-core';
import { useBackend } from '../src/backend/select.js';
import { evaluate } from '../src/app/evaluate.js';
import { downsample, MAX_POINTS } from '../src/app/report_charts.js';
import { escapeHtml, formatNumber, writeReport } from '../src/app/report.js';
import type { EvalReport } from '../src/eval/protocol.js';
import { parseRunConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';

const CHROMIUM = '/usr/bin/chromium';
const MAIN = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'selfsup-report-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** The second run's folder name has HTML's special characters, so escaping is tested on real input. */
const MOCO = join(root, 'moco');
const SUP = join(root, 'sup&<i>');
const FEATURES = { limit: 128, testLimit: 200 };
const SVM = { costs: [1, 10], folds: 2 };

async function tinyRun(out: string, method: string, over: Record<string, unknown> = {}): Promise<void> {
  const config = parseRunConfig({
    method,
    out,
    backend: 'native',
    workers: 0,
    epochs: 2,
    batchSize: 32,
    dataset: { limit: 128 },
    model: { width: 4 },
    onlineKnn: { every: 1, testSamples: 200 },
    preciseBn: { images: 128 },
    ...over,
  });
  await train(config, { quiet: true, log: () => undefined });
}

async function evalRun(run: string, protocol: string, options: Record<string, unknown> = {}, input: Record<string, unknown> = FEATURES): Promise<EvalReport> {
  return (await evaluate({ checkpoint: run, protocol, options, input, backend: 'native', log: () => undefined })).report;
}

const reports: Record<string, EvalReport[]> = { moco: [], sup: [] };

before(async () => {
  const started = performance.now();
  await useBackend('native');
  await tinyRun(MOCO, 'mocov2', { methodOptions: { queueLength: 256 } });
  await tinyRun(SUP, 'supervised');
  for (const [key, run] of [
    ['moco', MOCO],
    ['sup', SUP],
  ] as const) {
    reports[key]!.push(await evalRun(run, 'knn'));
    for (const stage of ['res4', 'res5']) reports[key]!.push(await evalRun(run, 'svm', SVM, { ...FEATURES, stage }));
  }
  reports.moco!.push(await evalRun(MOCO, 'attention', { images: 4 }));
  reports.moco!.push(await evalRun(MOCO, 'umap', { points: 60, epochs: 30 }));
  reports.moco!.push(await evalRun(MOCO, 'similarity', { samples: 64, batchSize: 32, bins: 10 }));
  console.log(`# two runs and ${reports.moco!.length + reports.sup!.length} evaluations in ${((performance.now() - started) / 1000).toFixed(1)} s`);
});

/** The HTML of each `<figure data-figure="name">`, in order. */
function figures(html: string): Array<{ name: string; html: string }> {
  return [...html.matchAll(/<figure data-figure="([^"]+)">([\s\S]*?)<\/figure>/g)].map((m) => ({ name: m[1]!, html: m[2]! }));
}

const count = (text: string, re: RegExp) => (text.match(re) ?? []).length;

/** No script and nothing fetched from the network: the only http(s) URLs are SVG's namespace names, which are never fetched. */
function assertSelfContained(html: string): void {
  assert.doesNotMatch(html, /<script/i);
  assert.doesNotMatch(html, /(src|href)\s*=\s*["']?\s*(https?:)?\/\//i, 'a resource from the network');
  assert.doesNotMatch(html, /url\(\s*["']?(https?:)?\/\//i);
  const urls = new Set(html.match(/https?:\/\/[^\s"'<>)]+/g) ?? []);
  assert.deepEqual([...urls].filter((u) => !/^http:\/\/www\.w3\.org\/(2000\/svg|1999\/xlink)$/.test(u)), []);
}

/** Every metric of `report` is in a table cell: the formatted value, its full value as the title. */
function assertMetricsShown(html: string, report: EvalReport): void {
  for (const [name, v] of Object.entries(report.metrics)) {
    if (!Number.isFinite(v)) continue;
    assert.ok(html.includes(`title="${v}">${formatNumber(v)}</td>`), `${report.protocol} ${report.data.stage} ${name} = ${v} is not in the tables`);
  }
}

test('downsampling averages windows down to at most MAX_POINTS', () => {
  const points = Array.from({ length: 1234 }, (_, i) => ({ x: i, y: i % 2 }));
  const d = downsample(points);
  assert.ok(d.length <= MAX_POINTS && d.length > MAX_POINTS / 2, `${d.length} points`);
  assert.equal(d[0]!.x, 1, 'the first window of 3 steps, 0..2');
  assert.ok(Math.abs(d[0]!.y - 1 / 3) < 1e-12);
  assert.equal(downsample(points.slice(0, 10)).length, 10, 'short series stay as they are');
  assert.equal(downsample([{ x: 0, y: Number.NaN }, { x: 1, y: 2 }]).length, 1, 'non-finite values are dropped');
});

test('one run: config, curves, tables, SVM bars per stage, embedded pictures, similarity histograms', async () => {
  const file = await writeReport([MOCO]);
  assert.equal(file, join(MOCO, 'report', 'index.html'));
  const html = readFileSync(file, 'utf8');
  console.log(`# one-run report: ${(statSync(file).size / 1024).toFixed(0)} KiB`);
  assertSelfContained(html);
  assert.ok(html.includes('queueLength: 256'), 'config.yaml verbatim');

  const figs = figures(html);
  const names = figs.map((f) => f.name);
  assert.deepEqual(
    names.filter((n) => n !== 'artifact'),
    ['loss', 'terms', 'lr', 'images-per-sec', 'online-knn', 'svm-stages', 'similarity-histograms'],
  );
  for (const f of figs.filter((f) => f.name !== 'artifact')) assert.equal(count(f.html, /<svg/g), 1, `figure ${f.name}: one SVG`);
  assert.match(figs.find((f) => f.name === 'terms')!.html, />infoNCE</, "MoCo's one term");
  assert.match(figs.find((f) => f.name === 'svm-stages')!.html, />res4<[\s\S]*>res5</);
  assert.match(figs.find((f) => f.name === 'similarity-histograms')!.html, /global-global positives[\s\S]*global-global negatives/);
  // Attention's grid as a data: URI; UMAP's SVG inline, without its PNG copy.
  const artifacts = figs.filter((f) => f.name === 'artifact');
  assert.equal(artifacts.length, 2);
  const attention = artifacts.find((f) => f.html.includes('attention:'))!;
  assert.match(attention.html, /<img class="artifact" alt="grid: [^"]*attention\.png" width="\d+" height="\d+" src="data:image\/png;base64,/);
  const umap = artifacts.find((f) => f.html.includes('umap:'))!;
  assert.equal(count(umap.html, /<svg/g), 1);
  assert.doesNotMatch(umap.html, /image\/png/);

  for (const r of reports.moco!) assertMetricsShown(html, r);
  assert.match(html, /<h3>knn<\/h3>[\s\S]*<h3>svm<\/h3>[\s\S]*<h3>attention<\/h3>[\s\S]*<h3>similarity<\/h3>[\s\S]*<h3>umap<\/h3>/);
});

test('two runs: figures overlaid with both names in the legends, tables side by side, names escaped', async () => {
  const out = join(root, 'both');
  const file = await writeReport([MOCO, SUP], { out });
  assert.equal(file, join(out, 'index.html'));
  const html = readFileSync(file, 'utf8');
  console.log(`# two-run report: ${(statSync(file).size / 1024).toFixed(0)} KiB`);
  assertSelfContained(html);
  assert.ok(!html.includes('sup&<i>'), 'the run name is escaped everywhere');
  const sup = escapeHtml('sup&<i>');
  for (const name of ['loss', 'lr', 'images-per-sec', 'online-knn', 'svm-stages']) {
    const f = figures(html).find((x) => x.name === name)!;
    assert.ok(f.html.includes('>moco</text>') && f.html.includes(`>${sup}</text>`), `figure ${name}: both runs in the legend`);
  }
  // Two lines in the loss figure, one per run.
  const loss = figures(html).find((f) => f.name === 'loss')!.html;
  assert.equal(count(loss, /<path[^>]*aria-roledescription="line mark"/g), 2);
  // The kNN table: a column per run, each run's numbers.
  const knn = html.slice(html.indexOf('<h3>knn</h3>'), html.indexOf('<h3>svm</h3>'));
  assert.match(knn, new RegExp(`<th>metric</th><th>moco</th><th>${sup}</th>`));
  for (const r of [...reports.moco!, ...reports.sup!]) assertMetricsShown(html, r);

  // The command: prints the path; several runs go to the first run's report folder.
  const r = spawnSync(process.execPath, [MAIN, 'report', MOCO, SUP], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, `${join(MOCO, 'report', 'index.html')}\n`);
});

test('in a browser: no console errors, nothing fetched, every figure drawn, the page not blank', async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/bootstrap.sh (it installs the chromium package)`);
  const file = await writeReport([MOCO, SUP], { out: join(root, 'browser') });
  // Root in CI: playwright passes --no-sandbox unless chromiumSandbox is set.
  const browser = await chromium.launch({ executablePath: CHROMIUM });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    const fetched: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('request', (req) => {
      if (!/^(file|data):/.test(req.url())) fetched.push(req.url());
    });
    await page.goto(pathToFileURL(file).href, { waitUntil: 'load' });
    const boxes = await page.$$eval('figure svg, figure img', (els) =>
      els.map((e) => ({ tag: e.tagName, w: e.getBoundingClientRect().width, h: e.getBoundingClientRect().height })),
    );
    const expected = count(readFileSync(file, 'utf8'), /<figure /g);
    assert.ok(boxes.length >= expected, `${boxes.length} pictures in ${expected} figures`);
    for (const [i, b] of boxes.entries()) assert.ok(b.w > 10 && b.h > 10, `picture ${i} (${b.tag}) is ${b.w}x${b.h}`);
    // Images decoded, not broken.
    assert.deepEqual(await page.$$eval('img', (imgs) => imgs.filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.alt)), []);
    const png = await page.screenshot({ fullPage: true });
    const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const colours = new Set<number>();
    let sum = 0;
    let sum2 = 0;
    for (let p = 0; p < data.length; p += 3) {
      colours.add((data[p]! << 16) | (data[p + 1]! << 8) | data[p + 2]!);
      const y = (data[p]! + data[p + 1]! + data[p + 2]!) / 3;
      sum += y;
      sum2 += y * y;
    }
    const n = data.length / 3;
    const sd = Math.sqrt(sum2 / n - (sum / n) ** 2);
    console.log(`# screenshot ${info.width}x${info.height}: ${colours.size} colours, grey-level sd ${sd.toFixed(1)}`);
    assert.ok(info.height > 2000, 'the whole report, not one screen');
    assert.ok(colours.size > 200 && sd > 10, `the page looks blank: ${colours.size} colours, sd ${sd}`);
    assert.deepEqual(errors, [], 'console errors');
    assert.deepEqual(fetched, [], 'requests beyond the file');
  } finally {
    await browser.close();
  }
});

test('bad input: not a folder, not a run folder, a broken eval report', async () => {
  await assert.rejects(writeReport([join(root, 'nowhere')]), new RegExp(`report: ${join(root, 'nowhere')} is not a folder`));
  const empty = join(root, 'empty');
  mkdirSync(empty);
  await assert.rejects(writeReport([empty]), new RegExp(`report: ${empty} is not a run folder \\(it has neither config.yaml nor metrics.jsonl\\)`));
  await assert.rejects(writeReport([MOCO, empty]), /empty is not a run folder/, 'any of the runs');

  const broken = join(root, 'broken');
  mkdirSync(join(broken, 'eval'), { recursive: true });
  writeFileSync(join(broken, 'config.yaml'), 'method: mocov2\n');
  writeFileSync(join(broken, 'eval', 'knn-0.json'), '{"protocol": "knn", ');
  await assert.rejects(writeReport([broken]), (err: Error) => err.message.includes(join(broken, 'eval', 'knn-0.json')) && /not valid JSON/.test(err.message));
  writeFileSync(join(broken, 'eval', 'knn-0.json'), JSON.stringify({ protocol: 'knn', metrics: { top1: 'high' } }));
  await assert.rejects(writeReport([broken]), (err: Error) => err.message.includes(join(broken, 'eval', 'knn-0.json')) && /metrics\.top1/.test(err.message));
  rmSync(join(broken, 'eval'), { recursive: true });
  writeFileSync(join(broken, 'metrics.jsonl'), '{"kind":"step"\n{"kind":"step","step":0}\n');
  await assert.rejects(writeReport([broken]), new RegExp(`${join(broken, 'metrics.jsonl')}:1 is not valid JSON`));
  // A last line cut short by a crash is dropped, as the trainer's own reader does.
  writeFileSync(join(broken, 'metrics.jsonl'), '{"kind":"step","step":0,"epoch":0,"batch":0,"loss":1,"terms":{},"lr":0.1,"imagesPerSec":10,"elapsed":1}\n{"kind":"st');
  assert.ok(existsSync(await writeReport([broken])));

  const r = spawnSync(process.execPath, [MAIN, 'report', empty], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /selfsup: report: .*empty is not a run folder/);
});
