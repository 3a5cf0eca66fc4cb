// One way to turn a zod validation failure into an error a user can act on:
// every problem on its own line, named by its key path ("optimizer.lr: ...").
import type { z } from 'zod';

/** `issue`'s key path, after `prefix` (e.g. ['methodOptions']); '(root)' when empty. */
export function issueKey(issue: z.ZodIssue, prefix: ReadonlyArray<string | number> = []): string {
  const path = [...prefix, ...issue.path];
  return path.length ? path.join('.') : '(root)';
}

/** One indented "key: message" line per issue. */
export function issueLines(error: z.ZodError, prefix: ReadonlyArray<string | number> = []): string[] {
  return error.issues.map((i) => `  ${issueKey(i, prefix)}: ${i.message}`);
}

/** `schema.parse(raw)`, or an error "`what` is invalid:" followed by one line per issue. */
export function parseOrThrow<S extends z.ZodTypeAny>(schema: S, raw: unknown, what: string, prefix: ReadonlyArray<string | number> = []): z.infer<S> {
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  throw new Error(`${what} is invalid:\n${issueLines(result.error, prefix).join('\n')}`);
}
