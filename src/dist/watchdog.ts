// A per-collective watchdog. MPI collectives block until every rank joins,
// and a peer that hangs (rather than dies, which mpirun notices) would block
// the others forever. The main thread sits inside the blocking MPI call, so
// the timer runs on a worker thread: it sees how long the current collective
// has waited and, past the limit, prints which one and ends the whole job.
import { Worker } from 'node:worker_threads';

/** Exit code of a job the watchdog ends (EX_SOFTWARE). */
export const WATCHDOG_EXIT_CODE = 70;

export interface WatchdogInit {
  /** [startedAt (ms since epoch, 0 when idle)] */
  clock: SharedArrayBuffer;
  /** The current collective's name, UTF-8, NUL-padded. */
  name: SharedArrayBuffer;
  timeoutMs: number;
  rank: number;
  /** Call the addon's MPI_Abort (needs MPI_THREAD_MULTIPLE); otherwise SIGKILL self, which mpirun also turns into a job abort. */
  useMpiAbort: boolean;
  addonPath: string;
}

const NAME_BYTES = 256;

export class Watchdog {
  private readonly clock = new Float64Array(new SharedArrayBuffer(8));
  private readonly name = new Uint8Array(new SharedArrayBuffer(NAME_BYTES));
  private readonly worker: Worker;

  constructor(opts: Omit<WatchdogInit, 'clock' | 'name'>) {
    const init: WatchdogInit = { ...opts, clock: this.clock.buffer as SharedArrayBuffer, name: this.name.buffer as SharedArrayBuffer };
    this.worker = new Worker(new URL('./watchdog_worker.js', import.meta.url), { workerData: init });
    // Never the reason a finished process stays alive.
    this.worker.unref();
  }

  /** Runs `fn` (a blocking collective) under the watchdog. */
  guard<T>(what: string, fn: () => T): T {
    this.name.fill(0);
    this.name.set(new TextEncoder().encode(what).subarray(0, NAME_BYTES - 1));
    this.clock[0] = Date.now();
    try {
      return fn();
    } finally {
      this.clock[0] = 0;
    }
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
