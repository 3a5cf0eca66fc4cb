// `selfsup eval <protocol>`: one subcommand per registered protocol (src/eval/
// protocols/), its flags made from the protocol's options schema and the
// feature input's. The work is app/evaluate.ts's; this file parses flags and
// prints the report: a table, or with --json the EvalReport object that is
// also written to <run>/eval/.
import { Option, type Command } from 'commander';
import { evaluate } from '../app/evaluate.js';
import { FeatureInputOptions } from '../eval/feature_input.js';
import { getProtocol, protocolNames } from '../app/protocols.js';
import { LAST_CHECKPOINT } from '../io/checkpoint.js';
import { BACKENDS } from '../train/config.js';
import { addSchemaOptions, schemaValues } from '../app/flags.js';

interface EvalFlags extends Record<string, unknown> {
  checkpoint: string;
  randomInit?: boolean;
  backend: (typeof BACKENDS)[number];
  json?: boolean;
}

/** Progress goes to stderr, so stdout holds only the table or the JSON. */
const say = (line: string): void => void process.stderr.write(`${line}\n`);

export function registerEvalCommand(program: Command): void {
  const evaluation = program
    .command('eval')
    .description(`Evaluate a checkpoint's backbone with a protocol (${protocolNames().join(', ')}); the report goes to <run>/eval/`)
    .addHelpText(
      'after',
      `
Examples:
  $ selfsup eval knn --checkpoint runs/sup/last.safetensors
  $ selfsup eval linear --checkpoint runs/sup --stage res4 --json
  $ selfsup eval knn --checkpoint runs/sup --limit 20000 --test-limit 2000`,
    );

  for (const name of protocolNames()) {
    const protocol = getProtocol(name);
    const cmd = evaluation
      .command(name)
      .description(protocol.description)
      .requiredOption('--checkpoint <path>', `a checkpoint, or a run folder (its ${LAST_CHECKPOINT})`);
    if (protocol.input === 'features') addSchemaOptions(cmd, FeatureInputOptions, { data: 'dir', scenes: 'dir', testFraction: 'f' });
    addSchemaOptions(cmd, protocol.options)
      .option('--random-init', "evaluate the run's architecture at its random initialisation instead (the baseline to beat)")
      .addOption(new Option('--backend <name>', 'tfjs backend').choices([...BACKENDS]).default('auto'))
      .option('--json', 'print the report as one JSON object on stdout')
      .action(async (flags: EvalFlags) => {
        const { report, path } = await evaluate({
          checkpoint: flags.checkpoint,
          protocol: name,
          options: schemaValues(flags, protocol.options),
          input: protocol.input === 'features' ? schemaValues(flags, FeatureInputOptions) : {},
          randomInit: Boolean(flags.randomInit),
          backend: flags.backend,
          log: say,
        });
        if (path) say(`report: ${path}`);
        process.stdout.write(flags.json ? `${JSON.stringify(report)}\n` : protocol.format(report));
      });
  }
}
