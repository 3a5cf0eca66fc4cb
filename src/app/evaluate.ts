// Evaluating a checkpoint with a protocol, as the CLI, the benchmarks and a
// web UI ask for it: load the backbone (io), prepare the protocol's input
// (frozen features, cached), run the protocol, and write its EvalReport
// atomically to `<run>/eval/<protocol>-<options hash>.json`.
import { basename, dirname, join } from 'node:path';
import { useBackend, type BackendChoice } from '../backend/select.js';
import { textSha256, writeFileAtomic } from '../core/files.js';
import { parseOrThrow } from '../core/schema.js';
import { NonFiniteFeaturesError } from '../eval/features.js';
import { FeatureInputOptions, prepareFeatures } from '../eval/feature_input.js';
import type { EvalReport, ProtocolInput } from '../eval/protocol.js';
import { getProtocol } from './protocols.js';
import { loadBackbone, resolveCheckpointPath } from '../io/backbone.js';

export interface EvaluateRequest {
  /** A checkpoint, or a run folder (its last checkpoint). */
  checkpoint: string;
  protocol: string;
  /** The protocol's options (its schema's defaults fill the rest). */
  options?: Record<string, unknown>;
  /** Feature protocols: stage, limits, data folder, cache (FeatureInputOptions). */
  input?: Record<string, unknown>;
  /** The run's architecture at its random initialisation instead of the trained weights. */
  randomInit?: boolean;
  backend?: BackendChoice;
  /** Write the report under the run folder (default true). */
  save?: boolean;
  log?: (line: string) => void;
}

export interface Evaluation {
  report: EvalReport;
  /** Where the report was written; null when `save` is false. */
  path: string | null;
}

/** Where a report for these settings lives: one file per checkpoint file and option set. */
export function reportPath(checkpointFile: string, protocol: string, settings: Record<string, unknown>): string {
  const hash = textSha256(JSON.stringify({ checkpoint: basename(checkpointFile), ...settings })).slice(0, 12);
  return join(dirname(checkpointFile), 'eval', `${protocol}-${hash}.json`);
}

export async function evaluate(request: EvaluateRequest): Promise<Evaluation> {
  const log = request.log ?? ((line: string) => void process.stderr.write(`${line}\n`));
  const protocol = getProtocol(request.protocol);
  const options = parseOrThrow(protocol.options, request.options ?? {}, `${protocol.name} options`) as Record<string, unknown>;
  const input = parseOrThrow(FeatureInputOptions, request.input ?? {}, `${protocol.name} input options`);
  const randomInit = request.randomInit ?? false;
  const file = resolveCheckpointPath(request.checkpoint);
  const started = performance.now();
  const backend = await useBackend(request.backend ?? 'auto');
  const loaded = loadBackbone(file, { randomInit });
  try {
    let protocolInput: ProtocolInput;
    let data: EvalReport['data'];
    let settings: Record<string, unknown>;
    if (protocol.input === 'features') {
      const features = await prepareFeatures(loaded, input, log).catch((err: unknown) => {
        throw err instanceof NonFiniteFeaturesError ? new NonFiniteFeaturesError(`checkpoint ${file}: ${err.message}`) : err;
      });
      protocolInput = { kind: 'features', features };
      data = { name: features.dataset, trainImages: features.train.labels.length, testImages: features.test.labels.length, stage: features.stage, dim: features.dim };
      const { cache: _cache, batchSize: _batchSize, ...inputSettings } = input; // they do not change the result
      settings = { randomInit, ...inputSettings, ...options };
    } else {
      data = { name: loaded.config.dataset.name, trainImages: 0, testImages: 0 };
      settings = { randomInit, ...options };
      const workDir = request.save === false ? null : reportPath(file, protocol.name, settings).replace(/\.json$/, '');
      protocolInput = { kind: 'backbone', loaded, workDir };
    }
    const result = await protocol.run(protocolInput, options, log);
    // A protocol reports what its data was; the loaded backbone's pretraining set is only the default.
    if (result.data) data = { ...data, ...result.data };
    const report: EvalReport = {
      protocol: protocol.name,
      checkpoint: loaded.checkpoint,
      data,
      options: settings,
      metrics: result.metrics,
      ...(result.details ? { details: result.details } : {}),
      artifacts: result.artifacts ?? {},
      backend,
      createdAt: new Date().toISOString(),
      seconds: (performance.now() - started) / 1000,
    };
    const path = request.save === false ? null : reportPath(file, protocol.name, settings);
    if (path) writeFileAtomic(path, `${JSON.stringify(report, null, 2)}\n`);
    return { report, path };
  } finally {
    loaded.backbone.dispose();
  }
}
