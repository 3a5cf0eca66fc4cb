// Starts real `mpirun` jobs of test/dist_worker.ts for the scale-out tests, with
// a hard timeout, and collects each rank's RESULT lines. Skips (with the
// reason) where Open MPI or the MPI addon is missing.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { mpiAddonPath } from '../src/dist/mpi_addon.js';

export const WORKER = fileURLToPath(new URL('./dist_worker.js', import.meta.url));

/** Why the MPI tests cannot run here, or null when they can. */
export function mpiSkipReason(): string | null {
  const probe = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) return 'mpirun not found: sudo apt-get install openmpi-bin libopenmpi-dev';
  if (!existsSync(mpiAddonPath())) return `the MPI addon is not built (${mpiAddonPath()}): cd native/mpi && ../../node_modules/.bin/node-gyp rebuild`;
  return null;
}

export interface JobResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** RESULT lines, parsed, by rank. */
  results: Map<number, unknown[]>;
  stdout: string;
  stderr: string;
  seconds: number;
  timedOut: boolean;
}

/** Runs `mpirun -np <np> node dist_worker.js <args>`; kills the whole job after `timeoutMs`. */
export function runJob(np: number, args: string[], { timeoutMs = 120_000, env = {} as Record<string, string> } = {}): Promise<JobResult> {
  const started = performance.now();
  // --oversubscribe: -np 3 on a 2-core machine; --bind-to none: the machine is shared, let the kernel place ranks;
  // btl self,vader: shared memory only, no probing of network interfaces.
  const mpiArgs = ['-np', String(np), '--oversubscribe', '--bind-to', 'none', '--mca', 'btl', 'self,vader', process.execPath, WORKER, ...args];
  const child = spawn('mpirun', mpiArgs, {
    detached: true,
    env: {
      ...process.env,
      // CI runs as root; Open MPI refuses that unless both are set.
      OMPI_ALLOW_RUN_AS_ROOT: '1',
      OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1',
      SELFSUP_THREADS: '1',
      OMP_WAIT_POLICY: 'PASSIVE',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      // The whole process group: mpirun and every rank it started.
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const results = new Map<number, unknown[]>();
      for (const line of stdout.split('\n')) {
        const m = /^RESULT (\d+) (.*)$/.exec(line);
        if (!m) continue;
        const rank = Number(m[1]);
        results.set(rank, [...(results.get(rank) ?? []), JSON.parse(m[2]!)]);
      }
      resolve({ code, signal, results, stdout, stderr, seconds: (performance.now() - started) / 1000, timedOut });
    });
  });
}
