// The demo `npm run demo` runs after setup: pretrain a method on
// Fashion-MNIST for a short schedule, evaluate its backbone with kNN and a
// linear probe against the same network at random initialisation, and print
// a summary; the run gets its HTML report (app/report.ts). DetCo, the headline
// method, by default.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { nativeAddon } from '../backend/native_addon.js';
import { useBackend } from '../backend/select.js';
import { InterruptedError } from '../core/interrupted.js';
import { methodNames } from '../methods/registry.js';
import { parseRunConfig } from '../train/config.js';
import { train } from '../train/trainer.js';
import { writeObjectImages } from '../data/objects.js';
import { writeScenes } from '../data/scenes.js';
import { evaluate } from './evaluate.js';
import { writeReport } from './report.js';

/** Short schedules that take a few minutes on 2 cores. */
const SCHEDULES: Record<string, { limit: number; width: number; epochs: number; batchSize: number }> = {
  detco: { limit: 6000, width: 8, epochs: 3, batchSize: 128 },
  supervised: { limit: 6000, width: 8, epochs: 3, batchSize: 128 },
};

export interface DemoOptions {
  method: string;
  /** Beyond classification: pretrain on the objects set and fine-tune a detector on scenes (demoTransfer). */
  transfer?: boolean;
  /** Folder for the demo run (a new timestamped run inside it). */
  out: string;
  log?: (line: string) => void;
}

/** Runs the demo; returns the summary table. */
export async function runDemo({ method, out, transfer = false, log = (line) => void process.stderr.write(`${line}\n`) }: DemoOptions): Promise<string> {
  if (!methodNames().includes(method)) throw new Error(`--method: unknown method '${method}'; choose one of ${methodNames().join(', ')}`);
  if (transfer) return demoTransfer(method, out, log);
  const schedule = SCHEDULES[method] ?? SCHEDULES.supervised!;
  const backend = await useBackend('auto');
  const info = backend === 'native' ? nativeAddon().info() : undefined;
  log(`selfsup demo: ${method} on Fashion-MNIST, backend ${backend}${info ? ` (oneDNN ${info.onednn}, ${info.threads} threads)` : ''}`);

  const { trained, minutes } = await pretrainForDemo(
    {
      method,
      out: join(out, `demo-${method}-${timestamp()}`),
      epochs: schedule.epochs,
      batchSize: schedule.batchSize,
      dataset: { name: 'fashion-mnist', limit: schedule.limit },
      model: { width: schedule.width },
      workers: 0,
      backend,
    },
    log,
  );

  const metrics = async (protocol: string, randomInit: boolean) =>
    (await evaluate({ checkpoint: trained.checkpoint, protocol, input: { limit: schedule.limit }, randomInit, backend, log })).report.metrics;
  const knn = await metrics('knn', false);
  const knnInit = await metrics('knn', true);
  const linear = await metrics('linear', false);
  const linearInit = await metrics('linear', true);

  const row = (name: string, k200: number, k20: number, lin: number) =>
    `${name.padEnd(24)} ${k200.toFixed(1).padStart(9)} ${k20.toFixed(1).padStart(8)} ${lin.toFixed(1).padStart(8)}`;
  return (
    `\n${method}, ResNet-18 width ${schedule.width}, ${schedule.limit} Fashion-MNIST images, ${trained.epochs} epochs ` +
    `in ${minutes.toFixed(1)} min; evaluated on the 10,000 test images (top-1 %)\n` +
    `${'backbone'.padEnd(24)} ${'kNN k=200'.padStart(9)} ${'k=20'.padStart(8)} ${'linear'.padStart(8)}\n` +
    `${row(`${method} (trained)`, knn.top1!, knn.majorityTop1!, linear.top1!)}\n` +
    `${row('random initialisation', knnInit.top1!, knnInit.majorityTop1!, linearInit.top1!)}\n` +
    `run folder: ${trained.outDir}\n` +
    `report: ${await writeReport([trained.outDir])}\n`
  );
}

/** The transfer demo's budget: about 15 minutes on 2 cores (docs/experiments.md#transfer-demo). */
const TRANSFER = { objects: 6000, scenes: 600, width: 16, epochs: 3, batchSize: 128, iters: 300 };

/**
 * Beyond classification: pretrain `method` on object-centric clip art (the
 * ImageNet analog), then fine-tune a Mask R-CNN on multi-object scenes made
 * of other clip-art instances, next to the same detector on the untrained
 * network. Data sets are made once under `<out>/demo-data/`.
 */
async function demoTransfer(method: string, out: string, log: (line: string) => void): Promise<string> {
  const backend = await useBackend('auto');
  const dataDir = join(out, 'demo-data');
  const objectsDir = join(dataDir, `objects-${TRANSFER.objects}`);
  const scenesDir = join(dataDir, `scenes-${TRANSFER.scenes}`);
  log(`selfsup demo --transfer: ${TRANSFER.objects} object images and ${TRANSFER.scenes} scenes in ${dataDir}`);
  await writeObjectImages(objectsDir, { count: TRANSFER.objects, seed: 0 });
  const scenesJson = join(scenesDir, 'annotations', 'instances_val.json');
  const scenesDone = existsSync(scenesJson) && (JSON.parse(readFileSync(scenesJson, 'utf8')) as { images: unknown[] }).images.length > 0;
  if (!scenesDone) await writeScenes(scenesDir, { count: TRANSFER.scenes, seed: 0 });

  const { trained, minutes } = await pretrainForDemo(
    {
      method,
      out: join(out, `demo-transfer-${method}-${timestamp()}`),
      epochs: TRANSFER.epochs,
      batchSize: TRANSFER.batchSize,
      dataset: { name: `objects:${objectsDir}`, size: 64 },
      model: { width: TRANSFER.width, stem: 'imagenet' },
      workers: 0,
      backend,
    },
    log,
  );
  const detect = async (randomInit: boolean) =>
    (await evaluate({ checkpoint: trained.checkpoint, protocol: 'detect', options: { scenes: scenesDir, iters: TRANSFER.iters }, randomInit, backend, log })).report.metrics;
  const trainedAp = await detect(false);
  const initAp = await detect(true);
  const row = (name: string, m: Record<string, number>) =>
    `${name.padEnd(24)} ${[m.AP!, m.AP50!, m.AP75!, m.APmask!].map((v) => v.toFixed(1).padStart(7)).join(' ')}`;
  return (
    `\n${method} pretrained on ${TRANSFER.objects} object images (ResNet-18 width ${TRANSFER.width}, ${trained.epochs} epochs, ${minutes.toFixed(1)} min), ` +
    `then Mask R-CNN FPN fine-tuned ${TRANSFER.iters} iterations on ${Math.round(TRANSFER.scenes * 0.8)} scenes; val scenes (COCO AP %)\n` +
    `${'backbone'.padEnd(24)} ${['AP', 'AP50', 'AP75', 'APmask'].map((h) => h.padStart(7)).join(' ')}\n` +
    `${row(`${method} (pretrained)`, trainedAp)}\n` +
    `${row('random initialisation', initAp)}\n` +
    `run folder: ${trained.outDir}\n` +
    `report: ${await writeReport([trained.outDir])}\n`
  );
}

const timestamp = (): string => new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '');

/** Trains the demo's run (a new timestamped folder) and times it. */
async function pretrainForDemo(raw: Record<string, unknown>, log: (line: string) => void): Promise<{ trained: Awaited<ReturnType<typeof train>>; minutes: number }> {
  const started = performance.now();
  const trained = await train(parseRunConfig(raw, 'demo config'), { log });
  // Ctrl-C ends the demo here: evaluating a half-trained network is not what was asked for.
  if (trained.stoppedBy) throw new InterruptedError(`demo: pretraining stopped (${trained.stoppedBy}) after ${trained.steps} steps; its checkpoint: ${trained.checkpoint}`, trained.stoppedBy);
  return { trained, minutes: (performance.now() - started) / 60000 };
}
