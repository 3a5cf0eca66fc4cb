// `selfsup demo`: what `npm run demo` runs after setup. Until the methods land
// it shows the engine: which backend loaded, and a quick training-throughput
// comparison with PyTorch on the two small bench models.
import type { Command } from 'commander';
import { nativeAddon } from '../backend/native_addon.js';
import { useBackend } from '../backend/select.js';
import { runBench } from './bench.js';

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('a short tour: the native backend, and training throughput against PyTorch CPU')
    .option('--no-pytorch', 'skip the PyTorch CPU reference')
    .action(async (opts: { pytorch: boolean }) => {
      const backend = await useBackend('auto');
      const info = backend === 'native' ? nativeAddon().info() : undefined;
      process.stdout.write(
        `selfsup demo: backend ${backend}${info ? ` (oneDNN ${info.onednn}, ${info.threads} threads)` : ''}\n`,
      );
      await runBench({
        models: 'b,c',
        backends: 'native',
        steps: 5,
        warmup: 2,
        wasmSteps: 5,
        quick: true,
        budget: 120,
        pytorch: opts.pytorch,
        profile: false,
        loader: false,
        loaderWorkers: '0',
      });
    });
}
