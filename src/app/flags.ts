// Command-line flags, shared by the selfsup CLI and the benchmark scripts:
// value parsers (a bad value is an InvalidArgumentError, which commander
// reports with the flag's name: "option '--epochs <n>' argument 'x' is
// invalid. expected a positive integer") and flags made from zod schemas.
import { InvalidArgumentError, Option, type Command } from 'commander';
import { z } from 'zod';

/** A parser of numeric flag values that `ok` accepts; otherwise commander reports `expected`. */
function numberFlag(ok: (n: number) => boolean, expected: string): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!(value.trim() !== '' && ok(n))) throw new InvalidArgumentError(expected);
    return n;
  };
}

export const positiveInt = numberFlag((n) => Number.isInteger(n) && n >= 1, 'expected a positive integer');
export const nonNegativeInt = numberFlag((n) => Number.isInteger(n) && n >= 0, 'expected an integer >= 0');
export const positiveNumber = numberFlag((n) => Number.isFinite(n) && n > 0, 'expected a positive number');
export const nonNegativeNumber = numberFlag((n) => Number.isFinite(n) && n >= 0, 'expected a number >= 0');
export const integer = numberFlag(Number.isInteger, 'expected an integer');
export const finiteNumber = numberFlag(Number.isFinite, 'expected a number');

/** "a-b", or "a" for [a, a]. */
export function numberRange(value: string): [number, number] {
  const parts = value.split('-').map((p) => (p.trim() === '' ? Number.NaN : Number(p)));
  const [a, b] = parts.length === 1 ? [parts[0]!, parts[0]!] : [parts[0]!, parts[1]!];
  if (parts.length > 2 || !Number.isFinite(a) || !Number.isFinite(b)) throw new InvalidArgumentError('expected a range like 1-4');
  return [a, b];
}

/** commander's camelCase attribute for a flag name (`batch-size` -> `batchSize`). */
export function flagAttribute(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** The `--kebab-case` flag of a camelCase option key. */
export function optionFlag(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** The type inside ZodDefault / ZodOptional wrappers, and the default, if any. */
function unwrap(field: z.ZodTypeAny): { inner: z.ZodTypeAny; fallback: unknown } {
  let inner = field;
  let fallback: unknown;
  for (;;) {
    if (inner instanceof z.ZodDefault) {
      fallback = inner._def.defaultValue();
      inner = inner._def.innerType;
    } else if (inner instanceof z.ZodOptional) inner = inner._def.innerType;
    else return { inner, fallback };
  }
}

/**
 * One flag per key of a zod object schema: numbers and strings take a value,
 * checked against the key's schema when parsed (a bad value names the flag);
 * enums list their choices; a boolean that defaults to true becomes `--no-x`.
 * Absent flags stay undefined, so the schema's defaults apply. `placeholders`
 * names a key's value in the help (`--data <dir>`).
 */
export function addSchemaOptions(cmd: Command, schema: z.AnyZodObject, placeholders: Record<string, string> = {}): Command {
  for (const [key, field] of Object.entries(schema.shape as Record<string, z.ZodTypeAny>)) {
    const flag = optionFlag(key);
    const { inner, fallback } = unwrap(field);
    const help = `${field.description ?? key}${fallback !== undefined && !(inner instanceof z.ZodBoolean) ? ` (default: ${String(fallback)})` : ''}`;
    if (inner instanceof z.ZodBoolean) {
      const what = field.description ?? key;
      cmd.addOption(fallback === true ? new Option(`--no-${flag}`, `turn off: ${what}`) : new Option(`--${flag}`, what));
      continue;
    }
    const placeholder = placeholders[key] ?? (inner instanceof z.ZodNumber ? 'n' : inner instanceof z.ZodEnum ? 'name' : 'value');
    const option = new Option(`--${flag} <${placeholder}>`, help);
    if (inner instanceof z.ZodEnum) option.choices(inner.options as string[]);
    else {
      option.argParser((value: string) => {
        const parsed = field.safeParse(inner instanceof z.ZodNumber ? (value.trim() === '' ? Number.NaN : Number(value)) : value);
        if (!parsed.success) throw new InvalidArgumentError(parsed.error.issues.map((i) => i.message).join('; '));
        return parsed.data as unknown;
      });
    }
    cmd.addOption(option);
  }
  return cmd;
}

/** The given values of `schema`'s keys among commander's parsed options. */
export function schemaValues(opts: Record<string, unknown>, schema: z.AnyZodObject): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(schema.shape as object)) if (opts[key] !== undefined) out[key] = opts[key];
  return out;
}
