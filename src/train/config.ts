// The resolved configuration of a training run. YAML files and CLI flags are
// both validated against this schema; unknown keys and bad values are errors
// that name the key. The checkpoint stores the resolved config, so a resumed
// run continues with exactly the settings it started with.
import { z } from 'zod';
import { parseOrThrow } from '../core/schema.js';
import { DatasetConfig } from '../data/dataset_config.js';
import { PRECISIONS } from '../backend/precision.js';
import { methodNames, methodSpec, parseMethodOptions } from '../methods/registry.js';
import { BackboneConfig } from '../nn/backbone.js';

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

/** A mapping (not null, not a list): what a YAML run file or a config section must be. */
export const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/**
 * The method's recipe (methods/*.ts specs) where the run sets nothing: its
 * learning rate when the run keeps SGD and sets none, its warm-up epochs and
 * its schedule's shape when the run's schedule sets none.
 */
function withMethodRecipe(raw: unknown): unknown {
  if (!isRecord(raw) || typeof raw.method !== 'string' || !methodNames().includes(raw.method)) return raw;
  const recipe = methodSpec(raw.method).recipe ?? {};
  let run = raw;
  const optimizer = run.optimizer ?? {};
  if (recipe.lr !== undefined && isRecord(optimizer) && optimizer.lr === undefined && (optimizer.name === undefined || optimizer.name === 'sgd')) {
    run = { ...run, optimizer: { ...optimizer, lr: recipe.lr } };
  }
  const schedule = run.schedule ?? {};
  if (recipe.warmupEpochs !== undefined && isRecord(schedule) && schedule.warmupEpochs === undefined) {
    run = { ...run, schedule: { ...schedule, warmupEpochs: recipe.warmupEpochs } };
  }
  const named = run.schedule ?? {};
  if (recipe.schedule !== undefined && isRecord(named) && named.name === undefined) {
    run = { ...run, schedule: { ...named, name: recipe.schedule } };
  }
  return run;
}

export const BACKENDS = ['auto', 'native', 'wasm', 'webgpu', 'cpu'] as const;
export { PRECISIONS };

const RunConfigFields = z
  .object({
    method: z.string().min(1).default('supervised'),
    /** Method-specific settings, validated by the method's schema; a run records them resolved. */
    methodOptions: z.record(z.string(), z.unknown()).default({}),
    dataset: DatasetConfig.default({}),
    model: BackboneConfig.default({}),
    epochs: z.number().int().positive().default(5),
    batchSize: z.number().int().positive().default(256),
    optimizer: OptimizerConfig.default({}),
    schedule: ScheduleConfig.default({}),
    seed: z.number().int().min(0).default(0),
    /** Loader worker threads (0 = build batches on the training thread). */
    workers: z.number().int().min(0).default(1),
    backend: z.enum(BACKENDS).default('auto'),
    /**
     * Convolutions and matmuls in bf16 with f32 accumulation (native backend,
     * AVX512-BF16 CPUs); weights, optimizer state, BN statistics and losses
     * stay f32. `auto` is f32: bf16 is opt-in.
     */
    precision: z.enum(PRECISIONS).default('auto'),
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
  .strict()
  .superRefine((run, ctx) => {
    // The method and its options are checked here, before a run makes any folder.
    if (!methodNames().includes(run.method)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['method'], message: `unknown method '${run.method}'; choose one of ${methodNames().join(', ')}` });
      return;
    }
    const options = parseMethodOptions(run.method, run.methodOptions);
    if (options.success) return;
    for (const issue of options.error.issues) {
      ctx.addIssue({ ...issue, path: ['methodOptions', ...issue.path], message: `${issue.message} (${run.method})` });
    }
  });

export const RunConfig = z.preprocess(withMethodRecipe, RunConfigFields);
export type RunConfig = z.infer<typeof RunConfig>;

/** Validates `raw` (from YAML and flags); the error lists every bad key by its path. */
export function parseRunConfig(raw: unknown, source = 'config'): RunConfig {
  return parseOrThrow(RunConfig, raw, source);
}
