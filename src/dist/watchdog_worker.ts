// The watchdog's thread (watchdog.ts): polls the main thread's collective clock.
import { writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { workerData } from 'node:worker_threads';
import type { MpiAddon } from './mpi_addon.js';
import { WATCHDOG_EXIT_CODE, type WatchdogInit } from './watchdog.js';

const init = workerData as WatchdogInit;
const clock = new Float64Array(init.clock);
const name = new Uint8Array(init.name);

const check = () => {
  const started = clock[0]!;
  if (started === 0 || Date.now() - started < init.timeoutMs) return;
  const what = new TextDecoder().decode(name).replace(/\0+$/, '');
  writeSync(
    2,
    `selfsup: rank ${init.rank}: ${what} has waited ${(init.timeoutMs / 1000).toFixed(0)} s for the other ranks; ` +
      `a peer hung or died. Ending the job (SELFSUP_DIST_TIMEOUT sets the limit in seconds); resume it with --resume.\n`,
  );
  if (init.useMpiAbort) (createRequire(import.meta.url)(init.addonPath) as MpiAddon).abort(WATCHDOG_EXIT_CODE);
  process.kill(process.pid, 'SIGKILL');
};

setInterval(check, Math.max(50, Math.min(1000, init.timeoutMs / 4)));
