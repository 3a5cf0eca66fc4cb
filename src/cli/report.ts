// `selfsup report RUN [RUN ...]`: one self-contained HTML report of the runs
// (app/report.ts), written atomically; prints its path.
import type { Command } from 'commander';
import { writeReport } from '../app/report.js';

export function registerReportCommand(program: Command): void {
  program
    .command('report')
    .description('an offline HTML report of one or more run folders: config, training curves, every evaluation report, their pictures; several runs overlaid')
    .argument('<runs...>', 'run folders (as `selfsup pretrain --out` made them)')
    .option('--out <dir>', "folder for index.html (default: the first run's report/ folder)")
    .addHelpText(
      'after',
      `
Examples:
  $ selfsup report runs/detco
  $ selfsup report runs/detco runs/mocov2 --out runs/compare`,
    )
    .action(async (runs: string[], flags: { out?: string }) => {
      process.stdout.write(`${await writeReport(runs, { out: flags.out })}\n`);
    });
}
