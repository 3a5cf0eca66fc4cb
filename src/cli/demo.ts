// `selfsup demo`: what `npm run demo` runs after setup. It pretrains a method
// on Fashion-MNIST for a short schedule, evaluates the backbone with kNN and a
// linear probe against the same network at random initialisation, and prints
// a summary. DetCo, the headline method, by default.
import { join } from 'node:path';
import type { Command } from 'commander';
import { nativeAddon } from '../backend/native_addon.js';
import { useBackend } from '../backend/select.js';
import { methodNames } from '../methods/index.js';
import { parseRunConfig, type RunConfig } from '../train/config.js';
import { train } from '../train/trainer.js';
import { FEATURE_DEFAULTS, KNN_DEFAULTS, LINEAR_DEFAULTS, runKnn, runLinear, type EvalFlags } from './eval.js';

/** Short schedules that take a few minutes on 2 cores. */
const SCHEDULES: Record<string, Partial<RunConfig> & { limit: number; width: number }> = {
  detco: { limit: 6000, width: 8, epochs: 3, batchSize: 128 },
  supervised: { limit: 6000, width: 8, epochs: 3, batchSize: 128 },
};

interface DemoFlags {
  method: string;
  out: string;
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('pretrain the headline method on Fashion-MNIST for a short schedule, evaluate it, print a summary')
    .option('--method <name>', 'method to demonstrate', 'detco')
    .option('--out <dir>', 'folder for the demo run (a new timestamped run inside it)', 'runs')
    .action((flags: DemoFlags) => runDemo(flags));
}

async function runDemo(flags: DemoFlags): Promise<void> {
  const say = (line: string) => void process.stderr.write(`${line}\n`);
  const method = flags.method;
  if (!methodNames().includes(method)) throw new Error(`--method: unknown method '${method}'; choose one of ${methodNames().join(', ')}`);
  const schedule = SCHEDULES[method] ?? SCHEDULES.supervised!;
  const backend = await useBackend('auto');
  const info = backend === 'native' ? nativeAddon().info() : undefined;
  say(`selfsup demo: ${method} on Fashion-MNIST, backend ${backend}${info ? ` (oneDNN ${info.onednn}, ${info.threads} threads)` : ''}`);

  const stamp = new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '');
  const config = parseRunConfig({
    method,
    out: join(flags.out, `demo-${method}-${stamp}`),
    epochs: schedule.epochs,
    batchSize: schedule.batchSize,
    dataset: { name: 'fashion-mnist', limit: schedule.limit },
    model: { width: schedule.width },
    workers: 0,
    backend,
  }, 'demo config');
  const started = performance.now();
  const trained = await train(config, { log: say });
  const minutes = (performance.now() - started) / 60000;

  const evalFlags: EvalFlags = {
    ...FEATURE_DEFAULTS, checkpoint: trained.checkpoint, limit: schedule.limit, backend,
  };
  const knnFlags = { ...evalFlags, ...KNN_DEFAULTS };
  const linearFlags = { ...evalFlags, ...LINEAR_DEFAULTS };
  const knn = (await runKnn(knnFlags, say)).report;
  const knnInit = (await runKnn({ ...knnFlags, randomInit: true }, say)).report;
  const linear = (await runLinear(linearFlags, say)).result;
  const linearInit = (await runLinear({ ...linearFlags, randomInit: true }, say)).result;

  const row = (name: string, k200: number, k20: number, lin: number) =>
    `${name.padEnd(24)} ${k200.toFixed(1).padStart(9)} ${k20.toFixed(1).padStart(8)} ${lin.toFixed(1).padStart(8)}`;
  process.stdout.write(
    `\n${method}, ResNet-18 width ${schedule.width}, ${schedule.limit} Fashion-MNIST images, ${trained.epochs} epochs ` +
      `in ${minutes.toFixed(1)} min; evaluated on the 10,000 test images (top-1 %)\n` +
      `${'backbone'.padEnd(24)} ${'kNN k=200'.padStart(9)} ${'k=20'.padStart(8)} ${'linear'.padStart(8)}\n` +
      `${row(`${method} (trained)`, knn.weighted.top1, knn.majority.top1, linear.test.top1)}\n` +
      `${row('random initialisation', knnInit.weighted.top1, knnInit.majority.top1, linearInit.test.top1)}\n` +
      `run folder: ${trained.outDir}\n`,
  );
}
