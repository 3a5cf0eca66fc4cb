// `selfsup demo`: what `npm run demo` runs after setup (app/demo.ts).
import type { Command } from 'commander';
import { runDemo } from '../app/demo.js';

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('pretrain the headline method on Fashion-MNIST for a short schedule, evaluate it, print a summary')
    .option('--method <name>', 'method to demonstrate', 'detco')
    .option('--out <dir>', 'folder for the demo run (a new timestamped run inside it)', 'runs')
    .option('--transfer', 'beyond classification: pretrain on object clip art, fine-tune a detector on scenes, box AP against random init (about 15 min)')
    .action(async (flags: { method: string; out: string; transfer?: boolean }) => {
      process.stdout.write(await runDemo(flags));
    });
}
