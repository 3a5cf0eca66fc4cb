// A run's configuration from its sources, lowest precedence first: a base
// (the checkpoint's config when resuming), the YAML file, then the flags that
// were given on the command line. The merged object is validated once by the
// RunConfig schema; each problem is reported against where its value came
// from: `--epochs: ...` for a flag, `run.yaml: optimizer.lr: ...` for the file.
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import { RunConfig, isRecord } from '../train/config.js';

/** A flag's name (without `--`) and the config key it sets. */
export const CONFIG_FLAGS = {
  method: ['method'],
  dataset: ['dataset', 'name'],
  data: ['dataset', 'dir'],
  limit: ['dataset', 'limit'],
  size: ['dataset', 'size'],
  arch: ['model', 'arch'],
  width: ['model', 'width'],
  stem: ['model', 'stem'],
  epochs: ['epochs'],
  'batch-size': ['batchSize'],
  optimizer: ['optimizer', 'name'],
  lr: ['optimizer', 'lr'],
  'weight-decay': ['optimizer', 'weightDecay'],
  seed: ['seed'],
  workers: ['workers'],
  backend: ['backend'],
  precision: ['precision'],
  out: ['out'],
} as const satisfies Record<string, readonly string[]>;

export type ConfigFlag = keyof typeof CONFIG_FLAGS;

type Raw = Record<string, unknown>;

/** Reads a YAML run file; it must hold a mapping. Syntax errors name the file, line and column. */
export function readConfigFile(path: string): Raw {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`--config ${path}: cannot read the file (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let value: unknown;
  try {
    value = YAML.parse(text, { prettyErrors: true });
  } catch (err) {
    throw new Error(`${path}: not valid YAML: ${(err as Error).message}`);
  }
  if (value === null || value === undefined) return {};
  if (!isRecord(value)) throw new Error(`${path}: expected a mapping of config keys at the top level, got ${Array.isArray(value) ? 'a list' : typeof value}`);
  return value;
}

function deepMerge(base: Raw, over: Raw): Raw {
  const out: Raw = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isRecord(v) && isRecord(out[k]) ? deepMerge(out[k] as Raw, v) : v;
  return out;
}

function setPath(target: Raw, path: readonly string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    if (!isRecord(node[key])) node[key] = {};
    node = node[key] as Raw;
  }
  node[path.at(-1)!] = value;
}

function hasPath(source: unknown, path: readonly (string | number)[]): boolean {
  let node = source;
  for (const key of path) {
    if (!isRecord(node) || !(String(key) in node)) return false;
    node = node[String(key)];
  }
  return true;
}

function camel(key: string): string {
  return key.replace(/[-_]+([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

export interface ConfigSources {
  /** Lowest precedence: e.g. the config stored in the checkpoint being resumed. */
  base?: Raw;
  /** The YAML file, if any. */
  configPath?: string;
  /** Flag values that were given (undefined ones are ignored). */
  flags?: Partial<Record<ConfigFlag, unknown>>;
}

/** Merges the sources and validates them; errors name the flag or the file and key of each bad value. */
export function resolveRunConfig({ base = {}, configPath, flags = {} }: ConfigSources): RunConfig {
  const file = configPath ? readConfigFile(configPath) : {};
  const fromFlags: Raw = {};
  const given = Object.entries(flags).filter(([, v]) => v !== undefined) as Array<[ConfigFlag, unknown]>;
  for (const [flag, value] of given) setPath(fromFlags, CONFIG_FLAGS[flag], value);
  const raw = deepMerge(deepMerge(base, file), fromFlags);

  const result = RunConfig.safeParse(raw);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const path = issue.path;
    const key = path.join('.');
    const flag = given.find(([f]) => CONFIG_FLAGS[f].join('.') === key)?.[0];
    if (flag) return `  --${flag}: ${issue.message}`;
    let message = issue.message;
    if (issue.code === 'unrecognized_keys') {
      const names = issue.keys.map((k) => (key ? `${key}.${k}` : k));
      const hints = issue.keys.filter((k) => camel(k) !== k).map((k) => `'${camel(k)}' for '${k}'`);
      message = `unknown key${names.length > 1 ? 's' : ''} ${names.map((n) => `'${n}'`).join(', ')}${hints.length ? ` (keys are camelCase: ${hints.join(', ')})` : ''}`;
      return `  ${configPath && hasPath(file, path) ? `${configPath}: ` : ''}${message}`;
    }
    const where = configPath && hasPath(file, path) ? `${configPath}: ${key}` : key || '(root)';
    const flagFor = (Object.keys(CONFIG_FLAGS) as ConfigFlag[]).find((f) => CONFIG_FLAGS[f].join('.') === key);
    return `  ${where}: ${message}${flagFor && !hasPath(file, path) ? ` (set it with --${flagFor}${configPath ? ` or in ${configPath}` : ''})` : ''}`;
  });
  throw new Error(`the run configuration is invalid:\n${lines.join('\n')}`);
}

