// The demo `npm run demo` runs after setup: pretrain a method on
// Fashion-MNIST for a short schedule, evaluate its backbone with kNN and a
// linear probe against the same network at random initialisation, and print
// a summary. DetCo, the headline method, by default.
import { join } from 'node:path';
import { nativeAddon } from '../backend/native_addon.js';
import { useBackend } from '../backend/select.js';
import { methodNames } from '../methods/registry.js';
import { parseRunConfig } from '../train/config.js';
import { train } from '../train/trainer.js';
import { evaluate } from './evaluate.js';

/** Short schedules that take a few minutes on 2 cores. */
const SCHEDULES: Record<string, { limit: number; width: number; epochs: number; batchSize: number }> = {
  detco: { limit: 6000, width: 8, epochs: 3, batchSize: 128 },
  supervised: { limit: 6000, width: 8, epochs: 3, batchSize: 128 },
};

export interface DemoOptions {
  method: string;
  /** Folder for the demo run (a new timestamped run inside it). */
  out: string;
  log?: (line: string) => void;
}

/** Runs the demo; returns the summary table. */
export async function runDemo({ method, out, log = (line) => void process.stderr.write(`${line}\n`) }: DemoOptions): Promise<string> {
  if (!methodNames().includes(method)) throw new Error(`--method: unknown method '${method}'; choose one of ${methodNames().join(', ')}`);
  const schedule = SCHEDULES[method] ?? SCHEDULES.supervised!;
  const backend = await useBackend('auto');
  const info = backend === 'native' ? nativeAddon().info() : undefined;
  log(`selfsup demo: ${method} on Fashion-MNIST, backend ${backend}${info ? ` (oneDNN ${info.onednn}, ${info.threads} threads)` : ''}`);

  const stamp = new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '');
  const config = parseRunConfig(
    {
      method,
      out: join(out, `demo-${method}-${stamp}`),
      epochs: schedule.epochs,
      batchSize: schedule.batchSize,
      dataset: { name: 'fashion-mnist', limit: schedule.limit },
      model: { width: schedule.width },
      workers: 0,
      backend,
    },
    'demo config',
  );
  const started = performance.now();
  const trained = await train(config, { log });
  const minutes = (performance.now() - started) / 60000;

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
    `run folder: ${trained.outDir}\n`
  );
}
