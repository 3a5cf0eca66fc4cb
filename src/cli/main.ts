#!/usr/bin/env node
// The `selfsup` command. Each subcommand lives in its own module and adds
// itself to the program, so this file only lists them.
import { Command } from 'commander';
import { exitCodeFor } from '../core/interrupted.js';
import { registerCocoEvalCommand } from './coco_eval.js';
import { registerDataCommand } from './data.js';
import { registerDemoCommand } from './demo.js';
import { registerEvalCommand } from './eval.js';
import { registerPretrainCommand } from './pretrain.js';
import { registerReportCommand } from './report.js';

const program = new Command()
  .name('selfsup')
  .description('Self-supervised visual representation learning (DetCo and friends) on a native oneDNN tfjs backend')
  .showHelpAfterError()
  .configureHelp({ sortSubcommands: true });

registerCocoEvalCommand(program);
registerDataCommand(program);
registerDemoCommand(program);
registerEvalCommand(program);
registerPretrainCommand(program);
registerReportCommand(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`selfsup: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(exitCodeFor(err));
});
