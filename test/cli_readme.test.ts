// The `selfsup eval` commands the README and docs show use only flags the
// eval subcommands have: the subcommands are built (as main.ts builds them)
// and each documented flag looked up, without running anything.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { registerEvalCommand } from '../src/cli/eval.js';

const root = fileURLToPath(new URL('../../', import.meta.url));

function evalFlags(): Map<string, Set<string>> {
  const program = new Command();
  registerEvalCommand(program);
  const evaluation = program.commands.find((c) => c.name() === 'eval')!;
  return new Map(evaluation.commands.map((c) => [c.name(), new Set(['--help', ...c.options.map((o) => o.long!)])]));
}

/** `file:line: selfsup eval P ... --flag` for every flag on a line naming `selfsup eval P` that P lacks. */
function unknownEvalFlags(file: string, text: string, flags: Map<string, Set<string>>): string[] {
  const problems: string[] = [];
  text.split('\n').forEach((line, i) => {
    const protocols = [...line.matchAll(/selfsup eval ([a-z]+(?:\\?\|[a-z]+)*)/g)].flatMap((m) => m[1]!.split(/\\?\|/));
    const used = [...new Set(line.match(/--[a-z][a-z-]*/g) ?? [])];
    for (const p of protocols.filter((name) => flags.has(name))) {
      for (const flag of used) if (!flags.get(p)!.has(flag)) problems.push(`${file}:${i + 1}: selfsup eval ${p} has no ${flag}`);
    }
  });
  return problems;
}

test("the README's and docs' selfsup eval commands use only flags the subcommands have", () => {
  const flags = evalFlags();
  assert.ok(flags.has('knn') && flags.get('knn')!.has('--data'), [...flags.keys()].join(' '));
  const files = ['README.md', ...readdirSync(`${root}docs`).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
  let commands = 0;
  const problems: string[] = [];
  for (const file of files) {
    const text = readFileSync(`${root}${file}`, 'utf8');
    commands += (text.match(/selfsup eval [a-z]/g) ?? []).length;
    problems.push(...unknownEvalFlags(file, text, flags));
  }
  assert.ok(commands >= 4, `found ${commands} documented eval commands`);
  assert.deepEqual(problems, []);
  // The row the README once had: eval took no --dataset (its flag is --data DIR).
  const old = "| `selfsup eval knn\\|linear --checkpoint PATH [--stage res2..res5] [--limit N] [--json]` | kNN or linear probe of a checkpoint's frozen backbone on Fashion-MNIST (or `--dataset folder:PATH`) |";
  assert.deepEqual(unknownEvalFlags('old', old, flags), ['old:1: selfsup eval knn has no --dataset', 'old:1: selfsup eval linear has no --dataset']);
});
