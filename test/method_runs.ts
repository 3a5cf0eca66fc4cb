// Shared by the method tests: a tiny training configuration and a run that
// reports its per-epoch losses.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseRunConfig, type RunConfig } from '../src/train/config.js';
import { train, type TrainResult } from '../src/train/trainer.js';

/** ResNet-18 width 4, 128 Fashion-MNIST images, batches of 32, 3 epochs: 12 steps on native. */
export function tinyConfig(method: string, over: Record<string, unknown> = {}, lr = 0.1): RunConfig {
  return parseRunConfig({
    method,
    out: join(mkdtempSync(join(tmpdir(), `selfsup-${method}-`)), 'run'),
    backend: 'native',
    workers: 0,
    epochs: 3,
    batchSize: 32,
    dataset: { limit: 128 },
    model: { width: 4 },
    optimizer: { lr },
    onlineKnn: { every: 0 },
    ...over,
  });
}

/** Trains `config` and returns the mean loss of each epoch. */
export async function epochLosses(config: RunConfig): Promise<number[]> {
  const started = performance.now();
  const result = await train(config, { quiet: true, log: () => undefined });
  const losses = result.metrics.map((m) => m.loss);
  console.log(`# ${config.method}: ${result.steps} steps in ${((performance.now() - started) / 1000).toFixed(1)} s, epoch losses ${losses.map((l) => l.toFixed(3)).join(' ')}`);
  return losses;
}

/** Trains `config` and returns the result with every step's loss. */
export async function stepLosses(config: RunConfig): Promise<{ result: TrainResult; losses: number[] }> {
  const losses: number[] = [];
  const started = performance.now();
  const result = await train(config, { quiet: true, log: () => undefined, onStep: (s) => losses.push(s.loss) });
  console.log(`# ${config.method}: ${result.steps} steps in ${((performance.now() - started) / 1000).toFixed(1)} s; step losses ${losses.map((l) => l.toFixed(2)).join(' ')}`);
  return { result, losses };
}
