// `selfsup pretrain`: builds the run configuration from a YAML file and the
// flags given, validates it, and hands it to the trainer. Ctrl-C / SIGTERM
// ask the trainer to stop, which writes a checkpoint first; a second Ctrl-C
// exits at once. Started by mpirun (or srun, or an MPIJob), every rank runs
// this same command and trains data-parallel; rank 0 prints.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Option, type Command } from 'commander';
import { stoppedExitCode } from '../core/interrupted.js';
import { LAST_CHECKPOINT, readCheckpoint } from '../io/checkpoint.js';
import { methodNames, methodSpec } from '../methods/registry.js';
import { ARCHS, STEMS } from '../nn/backbone.js';
import { closeWorld, worldCommunicator } from '../dist/communicator.js';
import { BACKENDS, PRECISIONS, type RunConfig } from '../train/config.js';
import type { TrainOptions, TrainResult } from '../train/trainer.js';
import { CONFIG_FLAGS, readConfigFile, resolveRunConfig, type ConfigFlag } from './config_loader.js';
import { flagAttribute, nonNegativeInt, nonNegativeNumber, positiveInt, positiveNumber } from '../app/flags.js';

/** The trainer, loaded when a run starts, so `--help` and flag errors stay fast. */
async function loadTrain(): Promise<(config: RunConfig, opts?: TrainOptions) => Promise<TrainResult>> {
  return (await import('../app/index.js')).train;
}

/** The methods whose recipe sets its own SGD learning rate, for --help. */
function recipeRates(): string {
  return methodNames()
    .filter((m) => methodSpec(m).recipe?.lr !== undefined)
    .map((m) => `${m} ${methodSpec(m).recipe!.lr}`)
    .join(', ');
}

interface PretrainFlags extends Partial<Record<string, unknown>> {
  config?: string;
  resume?: boolean;
  json?: boolean;
  quiet?: boolean;
}

/** The schema's defaults, shown in --help. */
const DEFAULTS = resolveRunConfig({ flags: { out: 'runs/NAME' } });

/** The config flags that were given, by flag name. */
function givenFlags(opts: PretrainFlags): Partial<Record<ConfigFlag, unknown>> {
  const out: Partial<Record<ConfigFlag, unknown>> = {};
  for (const flag of Object.keys(CONFIG_FLAGS) as ConfigFlag[]) {
    const v = opts[flagAttribute(flag)];
    if (v !== undefined) out[flag] = v;
  }
  return out;
}

/** Resolves the config; with --resume the checkpoint's own config is the base, so the run goes on as it started. */
export function pretrainConfig(opts: PretrainFlags): RunConfig {
  const flags = givenFlags(opts);
  let base: Record<string, unknown> | undefined;
  if (opts.resume) {
    const out = flags.out ?? (opts.config ? readConfigFile(opts.config).out : undefined);
    if (typeof out !== 'string' || out === '') throw new Error('--resume needs --out (the run folder to resume)');
    const last = join(out, LAST_CHECKPOINT);
    if (!existsSync(last)) throw new Error(`--resume: no checkpoint in ${out} (looked for ${last}); start the run without --resume`);
    base = readCheckpoint(last).state.config as unknown as Record<string, unknown>;
  }
  return resolveRunConfig({ base, configPath: opts.config, flags });
}

export function registerPretrainCommand(program: Command): void {
  const d = DEFAULTS;
  program
    .command('pretrain')
    .description('Train a representation (self-supervised, or the supervised baseline) and write checkpoints to --out')
    .option('--method <name>', `method: ${methodNames().join(', ')} (default: ${d.method})`)
    .option('--dataset <name>', `fashion-mnist | folder:PATH | objects:DIR (default: ${d.dataset.name})`)
    .option('--data <dir>', 'folder holding the Fashion-MNIST IDX files (default: Debian dataset-fashion-mnist)')
    .option('--limit <n>', 'use only the first N training images (quick tries)', positiveInt)
    .option('--size <px>', `working resolution (default: ${d.dataset.size})`, positiveInt)
    .addOption(new Option('--arch <name>', `backbone (default: ${d.model.arch})`).choices([...ARCHS]))
    .option('--width <n>', `channels of the stem and res2; 64 = torchvision (default: ${d.model.width})`, positiveInt)
    .addOption(new Option('--stem <kind>', `backbone stem (default: ${d.model.stem})`).choices([...STEMS]))
    .option('--epochs <n>', `epochs (default: ${d.epochs})`, positiveInt)
    .option('--batch-size <n>', `images per step, over all ranks under mpirun (default: ${d.batchSize})`, positiveInt)
    .addOption(new Option('--optimizer <name>', `optimizer (default: ${d.optimizer.name})`).choices(['sgd', 'lars', 'adamw']))
    .option('--lr <x>', `peak learning rate (default: ${d.optimizer.lr}; with SGD, ${recipeRates()})`, positiveNumber)
    .option('--weight-decay <x>', `weight decay (default: ${d.optimizer.weightDecay})`, nonNegativeNumber)
    .option('--seed <n>', `random seed (default: ${d.seed})`, nonNegativeInt)
    .option('--workers <n>', `loader worker threads, 0 = none (default: ${d.workers})`, nonNegativeInt)
    .addOption(new Option('--backend <name>', `tfjs backend (default: ${d.backend}: the fastest that loads)`).choices([...BACKENDS]))
    .addOption(
      new Option('--precision <kind>', `convolutions and matmuls in bf16 with f32 accumulation (native backend, AVX512-BF16 CPUs); auto = f32 (default: ${d.precision})`)
        .choices([...PRECISIONS]),
    )
    .option('--out <dir>', 'run folder: checkpoints, metrics.jsonl (required, here or in --config)')
    .option('--config <file>', 'YAML run file (keys as in src/train/config.ts); flags given override it')
    .option('--resume', 'continue the run in --out from its last checkpoint, with its stored config')
    .option('--json', 'print the final result as one JSON object on stdout')
    .option('--quiet', 'no progress output')
    .addHelpText(
      'after',
      `
Examples:
  $ selfsup pretrain --method supervised --dataset fashion-mnist --epochs 5 --out runs/sup
  $ selfsup pretrain --config run.yaml --limit 2000 --epochs 1 --out runs/try
  $ selfsup pretrain --out runs/sup --resume

A run file (YAML) holds any key of the run configuration, for example:
  method: supervised
  epochs: 5
  batchSize: 256
  model: { arch: resnet18, width: 16, stem: cifar }
  optimizer: { name: sgd, lr: 0.06, weightDecay: 0.0005 }
  schedule: { name: cosine, warmupEpochs: 1 }

Ctrl-C stops after writing a checkpoint; --resume continues from it.

Data-parallel on N processes (Open MPI; --batch-size stays the global batch):
  $ mpirun -np 2 selfsup pretrain --method mocov2 --batch-size 256 --out runs/moco2`,
    )
    .action(async (opts: PretrainFlags) => {
      const config = pretrainConfig(opts);
      const train = await loadTrain();
      // One process unless an MPI launcher started this one; then rank 0 speaks for the job.
      const comm = worldCommunicator();
      // The trainer owns Ctrl-C/SIGTERM: a checkpoint, then a clean stop.
      const result = await train(config, {
        resume: Boolean(opts.resume),
        log: (line) => process.stderr.write(`${line}\n`),
        quiet: Boolean(opts.quiet),
        comm,
      });
      await closeWorld();
      if (comm.rank !== 0) return;
      // A stop by Ctrl-C still exits 130 after the checkpoint, so `pretrain && eval` does not go on.
      if (result.stoppedBy) process.exitCode = stoppedExitCode(result.stoppedBy);
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(result)}\n`);
      } else {
        const how = result.stoppedEarly ? 'stopped early after' : 'trained';
        process.stdout.write(
          `${how} ${result.epochs} epochs (${result.steps} steps), last loss ${result.lastLoss.toFixed(4)}\n` +
            `checkpoint: ${result.checkpoint}\n` +
            `next: selfsup eval knn --checkpoint ${result.checkpoint}\n`,
        );
      }
    });
}
