// The method registry, built from the specs the method files export. A new
// method is one file in this folder plus its spec in METHOD_SPECS.
import type { z } from 'zod';
import { issueLines } from '../core/schema.js';
import { recipeOptions, type DataFacts } from '../data/dataset_config.js';
import { buildBackbone, type BackboneConfig } from '../nn/backbone.js';
import { barlowSpec } from './barlow.js';
import { byolSpec } from './byol.js';
import { deepClusterSpec } from './deepcluster.js';
import { denseclSpec } from './densecl.js';
import { detcoSpec } from './detco.js';
import { insdisSpec } from './insdis.js';
import { jigsawPuzzleSpec } from './jigsaw.js';
import type { Method, MethodContext, MethodSpec } from './method.js';
import { mocoSpec } from './moco.js';
import { pirlSpec } from './pirl.js';
import { rellocSpec } from './relloc.js';
import { rotationSpec } from './rotation.js';
import { simclrSpec } from './simclr.js';
import { simsiamSpec } from './simsiam.js';
import { supervisedSpec } from './supervised.js';
import { swavSpec } from './swav.js';

const METHOD_SPECS: MethodSpec[] = [supervisedSpec, mocoSpec, detcoSpec, insdisSpec, simclrSpec, byolSpec, pirlSpec, rotationSpec, jigsawPuzzleSpec, rellocSpec, swavSpec, deepClusterSpec, simsiamSpec, barlowSpec, denseclSpec];

const registry = new Map<string, MethodSpec>();
for (const spec of METHOD_SPECS) registerMethod(spec);

/** Adds (or replaces) a method under each of its names; for plug-ins and tests. */
export function registerMethod(spec: MethodSpec): void {
  for (const name of spec.names) registry.set(name, spec);
}

export function methodNames(): string[] {
  return [...registry.keys()].sort();
}

/** The spec of `name`; an unknown name is an error listing the known ones. */
export function methodSpec(name: string): MethodSpec {
  const spec = registry.get(name);
  if (!spec) throw new Error(`method: unknown method '${name}'; choose one of ${methodNames().join(', ')}`);
  return spec;
}

/** `methodOptions` parsed by `name`'s schema (defaults filled in), or the zod error naming each bad key. */
export function parseMethodOptions(name: string, raw: unknown): { success: true; data: Record<string, unknown> } | { success: false; error: z.ZodError } {
  return methodSpec(name).options.safeParse(raw ?? {});
}

/**
 * Every option of `name` with its defaults, including those that depend on
 * the data: what a run records in its config when it starts.
 */
export function resolveMethodOptions(name: string, raw: unknown, ctx: MethodContext): Record<string, unknown> {
  const spec = methodSpec(name);
  const parsed = parseMethodOptions(name, raw);
  if (!parsed.success) throw new Error(`methodOptions for ${name} are invalid:\n${issueLines(parsed.error, ['methodOptions']).join('\n')}`);
  return spec.resolve ? spec.resolve(name, parsed.data, ctx) : parsed.data;
}

/** The options a checkpoint of method `name` recorded, completed for options added since (MethodSpec.fromCheckpoint). */
export function checkpointMethodOptions(name: string, recorded: unknown, tensorNames: readonly string[]): Record<string, unknown> {
  const spec = methodSpec(name);
  const options = (recorded ?? {}) as Record<string, unknown>;
  return spec.fromCheckpoint ? spec.fromCheckpoint(options, tensorNames) : options;
}

/** Builds method `name` from its (raw or resolved) options. */
export function createMethod(name: string, options: unknown, ctx: MethodContext): Method {
  return methodSpec(name).create(name, resolveMethodOptions(name, options, ctx), ctx);
}

/**
 * What a method is built from: a run's backbone, view size and seed (a run
 * config, or the one a checkpoint recorded) and its training set's facts.
 */
export function methodContext(
  run: { model: BackboneConfig; dataset: { size: number }; seed: number },
  facts: DataFacts & { datasetSize: number },
): MethodContext {
  return {
    backbone: () => buildBackbone(run.model, facts.channels, run.seed),
    channels: facts.channels,
    numClasses: facts.numClasses,
    datasetSize: facts.datasetSize,
    recipe: recipeOptions(run.dataset.size, facts.channels),
    seed: run.seed,
  };
}
