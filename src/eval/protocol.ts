// Evaluation as a library: one Protocol interface for every way of judging a
// backbone, and one EvalReport that every protocol's run produces. A protocol
// declares its options as a zod schema (the CLI builds its flags from it) and
// what it consumes: frozen features of a train and a test split (cacheable),
// or the backbone itself (to fine-tune or probe). app/evaluate.ts loads the
// checkpoint, prepares the input, runs the protocol and writes the report.
import type { z } from 'zod';
import type { LoadedBackbone } from '../io/backbone.js';
import type { FeatureSplits } from './feature_input.js';

export type ProtocolInput =
  | { kind: 'features'; features: FeatureSplits }
  | {
      kind: 'backbone';
      loaded: LoadedBackbone;
      /** A folder of this evaluation's own (next to its report) for resumable state; null: keep nothing. */
      workDir: string | null;
    };

export interface ProtocolResult {
  /** Scalar results by name (top1, top5, AP50, mIoU, ...), percent where a rate. */
  metrics: Record<string, number>;
  /** Structured results that are not one number (per-protocol settings, per-class scores). */
  details?: Record<string, unknown>;
  /** Files the protocol wrote (plots, maps), by name, paths relative to the report. */
  artifacts?: Record<string, string>;
  /** What the protocol ran on, where it is not the feature input's (transfer protocols: the scenes). */
  data?: Partial<EvalReport['data']>;
}

export interface Protocol<S extends z.AnyZodObject = z.AnyZodObject> {
  name: string;
  /** One line for `--help`. */
  description: string;
  /** Strict zod object with defaults; each key becomes a `--kebab-case` flag, its `.describe()` the help text. */
  options: S;
  input: ProtocolInput['kind'];
  run(input: ProtocolInput, options: z.infer<S>, log: (line: string) => void): Promise<ProtocolResult>;
  /** The result as a small text table, for the terminal. */
  format(report: EvalReport): string;
}

/** Declares a protocol; the identity, for type inference. */
export function defineProtocol<S extends z.AnyZodObject>(protocol: Protocol<S>): Protocol<S> {
  return protocol;
}

/** What every evaluation writes (`<run>/eval/<protocol>-<hash>.json`) and `--json` prints. */
export interface EvalReport {
  protocol: string;
  checkpoint: LoadedBackbone['checkpoint'];
  data: {
    name: string;
    /** Images on each side: kNN memory / probe training set, and the queries. */
    trainImages: number;
    testImages: number;
    /** Feature protocols: the backbone stage and the feature size. */
    stage?: string;
    dim?: number;
  };
  /** The protocol's options and the input's (stage, limits, ...), resolved. */
  options: Record<string, unknown>;
  metrics: Record<string, number>;
  details?: Record<string, unknown>;
  artifacts: Record<string, string>;
  backend: string;
  createdAt: string;
  seconds: number;
}

/** A two-column top-1/top-5 table. */
export function accuracyTable(title: string, rows: Array<[string, number, number]>): string {
  const width = Math.max(...rows.map(([name]) => name.length), 8);
  const lines = rows.map(([name, t1, t5]) => `${name.padEnd(width)}  ${t1.toFixed(2).padStart(6)}  ${t5.toFixed(2).padStart(6)}`);
  return `${title}\n${'protocol'.padEnd(width)}   top-1   top-5\n${lines.join('\n')}\n`;
}
