// The resolved configuration of a training run. YAML files and CLI flags are
// both validated against this schema; unknown keys and bad values are errors
// that name the key. The checkpoint stores the resolved config, so a resumed
// run continues with exactly the settings it started with.
import { z } from 'zod';

export const OptimizerConfig = z
  .object({
    name: z.enum(['sgd', 'lars', 'adamw']).default('sgd'),
    lr: z.number().positive().default(0.06),
    momentum: z.number().min(0).max(1).default(0.9),
    nesterov: z.boolean().default(false),
    weightDecay: z.number().min(0).default(5e-4),
    /** AdamW betas. */
    betas: z.tuple([z.number().min(0).max(1), z.number().min(0).max(1)]).default([0.9, 0.999]),
    /** LARS trust coefficient. */
    trustCoefficient: z.number().positive().default(0.001),
    /** Clip the global gradient norm to this value (off when absent). */
    gradClip: z.number().positive().optional(),
  })
  .strict();

export const ScheduleConfig = z
  .object({
    name: z.enum(['cosine', 'step', 'constant']).default('cosine'),
    warmupEpochs: z.number().min(0).default(0),
    /** For `step`: epochs at which the rate is multiplied by `gamma`. */
    milestones: z.array(z.number().int().positive()).default([]),
    gamma: z.number().positive().default(0.1),
    /** Final rate as a fraction of the peak, for cosine. */
    finalFraction: z.number().min(0).max(1).default(0),
  })
  .strict();

export const DatasetConfig = z
  .object({
    /** `fashion-mnist`, or `folder:PATH` for an image folder. */
    name: z.string().regex(/^(fashion-mnist|folder:.+)$/, 'expected fashion-mnist or folder:PATH').default('fashion-mnist'),
    /** Folder holding the Fashion-MNIST IDX files (default: Debian's dataset-fashion-mnist). */
    dir: z.string().optional(),
    /** Use only the first N training images. */
    limit: z.number().int().positive().optional(),
    /** Working resolution (Fashion-MNIST's 28x28 is padded to 32 for the CIFAR stem). */
    size: z.number().int().min(8).default(32),
  })
  .strict();

export const ModelConfig = z
  .object({
    arch: z.enum(['resnet18', 'resnet34', 'resnet50']).default('resnet18'),
    width: z.number().int().positive().default(16),
    stem: z.enum(['cifar', 'imagenet']).default('cifar'),
  })
  .strict();

/**
 * Peak SGD learning rates of the methods whose short-schedule recipe differs
 * from the optimizer's default, used when the run sets neither a learning
 * rate nor another optimizer. Each method's file says why.
 */
export const METHOD_LEARNING_RATES: Readonly<Record<string, number>> = { byol: 0.1 };

/**
 * Warm-up epochs of the methods whose short-schedule recipe needs them, used
 * when the run's schedule sets none. Each method's file says why.
 */
export const METHOD_WARMUP_EPOCHS: Readonly<Record<string, number>> = { byol: 1 };

/** A mapping (not null, not a list): what a YAML run file or a config section must be. */
export const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

function withMethodDefaults(raw: unknown): unknown {
  if (!isRecord(raw) || typeof raw.method !== 'string') return raw;
  let run = raw;
  const lr = METHOD_LEARNING_RATES[raw.method];
  const optimizer = run.optimizer ?? {};
  if (lr !== undefined && isRecord(optimizer) && optimizer.lr === undefined && (optimizer.name === undefined || optimizer.name === 'sgd')) {
    run = { ...run, optimizer: { ...optimizer, lr } };
  }
  const warmupEpochs = METHOD_WARMUP_EPOCHS[raw.method];
  const schedule = run.schedule ?? {};
  if (warmupEpochs !== undefined && isRecord(schedule) && schedule.warmupEpochs === undefined) {
    run = { ...run, schedule: { ...schedule, warmupEpochs } };
  }
  return run;
}

const RunConfigFields = z
  .object({
    method: z.string().min(1).default('supervised'),
    /** Method-specific settings (validated by the method). */
    methodOptions: z.record(z.string(), z.unknown()).default({}),
    dataset: DatasetConfig.default({}),
    model: ModelConfig.default({}),
    epochs: z.number().int().positive().default(5),
    batchSize: z.number().int().positive().default(256),
    optimizer: OptimizerConfig.default({}),
    schedule: ScheduleConfig.default({}),
    seed: z.number().int().min(0).default(0),
    /** Loader worker threads (0 = build batches on the training thread). */
    workers: z.number().int().min(0).default(1),
    backend: z.enum(['auto', 'native', 'wasm', 'webgpu', 'cpu']).default('auto'),
    /** Run directory: checkpoints, metrics.jsonl, config. */
    out: z.string().min(1),
    checkpoint: z
      .object({
        everyEpochs: z.number().int().positive().default(1),
        /** Also every N steps (off when absent). */
        everySteps: z.number().int().positive().optional(),
        /** Keep a copy per epoch (`epoch-0003.safetensors`) besides `last.safetensors`. */
        keepEpochs: z.boolean().default(false),
      })
      .strict()
      .default({}),
    /**
     * BN running statistics re-estimated on up to `images` whole training
     * images (resized as evaluation sees them, not augmented) when an epoch
     * ends with an online kNN or a checkpoint; 0 = off. Training's running
     * averages describe augmented views (src/eval/features.ts).
     */
    preciseBn: z
      .object({ images: z.number().int().min(0).default(8192) })
      .strict()
      .default({}),
    /** Online kNN accuracy each epoch on a fixed held-out subset (0 = off). */
    onlineKnn: z
      .object({
        every: z.number().int().min(0).default(1),
        trainSamples: z.number().int().positive().default(2000),
        testSamples: z.number().int().positive().default(1000),
        /** Neighbours; votes weighted by exp(cos / 0.1) as in Wu et al. 2018. */
        k: z.number().int().positive().default(20),
      })
      .strict()
      .default({}),
  })
  .strict();

export const RunConfig = z.preprocess(withMethodDefaults, RunConfigFields);
export type RunConfig = z.infer<typeof RunConfig>;

/** Validates `raw` (from YAML and flags); the error lists every bad key by its path. */
export function parseRunConfig(raw: unknown, source = 'config'): RunConfig {
  const result = RunConfig.safeParse(raw);
  if (result.success) return result.data;
  const lines = result.error.issues.map((i) => {
    const key = i.path.length ? i.path.join('.') : '(root)';
    return `  ${key}: ${i.message}`;
  });
  throw new Error(`${source} is invalid:\n${lines.join('\n')}`);
}
