// Collectives between the processes of a data-parallel run (docs/architecture.md,
// "Scale-out"). A `Communicator` is either `single` (one process: every
// collective is the identity, so single-process runs take exactly the code
// path they took before) or `mpi` (the optional addon of native/mpi/).
//
// Every call is blocking and must be made by every rank in the same order
// with the same sizes; that is MPI's contract, and the callers (the trainer,
// the methods) keep it by deciding everything from state all ranks share.
import { DEFAULT_BUCKET_ELEMENTS, MAX_MPI_COUNT, chunkRanges, planBuckets } from './buckets.js';
import { MPI_OP, mpiAddon, mpiAddonPath, type MpiAddon, type ReduceOp } from './mpi_addon.js';
import { Watchdog } from './watchdog.js';

export type ListReduceOp = 'sum' | 'mean' | 'max' | 'min';

export interface Communicator {
  readonly kind: 'single' | 'mpi';
  readonly rank: number;
  readonly size: number;
  /** Rank among this host's processes (which GPU or NUMA node to use). */
  readonly localRank: number;
  /** One line for the log: library and sizes. */
  readonly description: string;
  /** Reduces every array in place across ranks (packed into buckets; `mean` divides the sum by size). */
  allreduce(arrays: Float32Array[], op?: ListReduceOp): void;
  /** Reduces small float64 vectors (losses, counts, flags) in place. */
  allreduceF64(values: Float64Array, op?: ReduceOp): void;
  /** Overwrites `bytes` on every rank with root's; every rank passes the same length. */
  broadcast(bytes: Uint8Array, root?: number): void;
  /** Every rank's `x` concatenated in rank order; lengths may differ between ranks (all-gatherv). */
  allgather(x: Float32Array): Float32Array;
  barrier(): void;
  /** Ends the job on every rank at once (a rank that cannot go on must not leave the others waiting). */
  abort(code: number): never;
  close(): Promise<void>;
}

/** One process: collectives are the identity. */
export class SingleCommunicator implements Communicator {
  readonly kind = 'single' as const;
  readonly rank = 0;
  readonly size = 1;
  readonly localRank = 0;
  readonly description = 'single process';
  allreduce(_arrays: Float32Array[], _op?: ListReduceOp): void {}
  allreduceF64(_values: Float64Array, _op?: ReduceOp): void {}
  broadcast(_bytes: Uint8Array, _root?: number): void {}
  allgather(x: Float32Array): Float32Array {
    return x.slice();
  }
  barrier(): void {}
  abort(code: number): never {
    process.exit(code);
  }
  async close(): Promise<void> {}
}

export interface MpiOptions {
  /** Elements per gradient bucket (default 25 MiB of float32, as PyTorch DDP). */
  bucketElements?: number;
  /** Largest count per MPI call; below 2^31-1 only to test the chunking. */
  maxCount?: number;
  /** Seconds a collective may wait for its peers before the job is ended (default SELFSUP_DIST_TIMEOUT or 1800). */
  timeoutSeconds?: number;
}

/** Above a training step's worst gap (rank 0 alone evaluating online kNN or writing a checkpoint while the others wait). */
const DEFAULT_TIMEOUT_SECONDS = 1800;

export class MpiCommunicator implements Communicator {
  readonly kind = 'mpi' as const;
  readonly rank: number;
  readonly size: number;
  readonly localRank: number;
  readonly description: string;
  private readonly addon: MpiAddon;
  private readonly watchdog: Watchdog;
  private readonly bucketElements: number;
  private readonly maxCount: number;
  /** Packing buffers, reused from step to step (the gradient list is the same every step). */
  private scratch: Float32Array[] = [];
  private closed = false;

  constructor(opts: MpiOptions = {}) {
    this.addon = mpiAddon();
    // A rank waiting in a collective busy-polls a core by default; ranks that share a host then slow
    // each other's compute (MoCo v2 step, 2 ranks on 2 cores: ~1.3 s polling, ~0.9 s yielding). Open MPI
    // reads this at MPI_Init; the user's own setting wins, and MPICH ignores it.
    process.env.OMPI_MCA_mpi_yield_when_idle ??= '1';
    const info = this.addon.init();
    this.rank = info.rank;
    this.size = info.size;
    this.localRank = info.localRank;
    this.bucketElements = opts.bucketElements ?? DEFAULT_BUCKET_ELEMENTS;
    this.maxCount = Math.min(MAX_MPI_COUNT, opts.maxCount ?? MAX_MPI_COUNT);
    const envTimeout = Number(process.env.SELFSUP_DIST_TIMEOUT);
    const timeout = opts.timeoutSeconds ?? (envTimeout > 0 ? envTimeout : DEFAULT_TIMEOUT_SECONDS);
    this.watchdog = new Watchdog({ timeoutMs: timeout * 1000, rank: this.rank, useMpiAbort: info.threadMultiple, addonPath: mpiAddonPath() });
    // MPI counts a rank that exits without MPI_Finalize as failed and ends the job with an error.
    process.once('exit', () => {
      if (!this.closed) this.addon.finalize();
    });
    this.description = `MPI, ${this.size} ranks (${info.localSize} on this host), ${info.library.replace(/\0/g, '').split('\n')[0]!.trim()}`;
  }

  allreduce(arrays: Float32Array[], op: ListReduceOp = 'sum'): void {
    const mpiOp = MPI_OP[op === 'mean' ? 'sum' : op];
    const buckets = planBuckets(
      arrays.map((a) => a.length),
      this.bucketElements,
    );
    buckets.forEach((bucket, b) => {
      const what = `all-reduce (bucket ${b + 1}/${buckets.length}, ${bucket.length} floats)`;
      if (bucket.members.length === 1) {
        // One array: reduce it where it lies, no copy.
        this.reduceF32(arrays[bucket.members[0]!]!, mpiOp, what);
        return;
      }
      const packed = this.scratchBuffer(b, bucket.length);
      bucket.members.forEach((m, j) => packed.set(arrays[m]!, bucket.offsets[j]));
      this.reduceF32(packed, mpiOp, what);
      bucket.members.forEach((m, j) => arrays[m]!.set(packed.subarray(bucket.offsets[j], bucket.offsets[j]! + arrays[m]!.length)));
    });
    if (op === 'mean') {
      for (const a of arrays) for (let i = 0; i < a.length; i++) a[i]! /= this.size;
    }
  }

  allreduceF64(values: Float64Array, op: ReduceOp = 'sum'): void {
    for (const [s, e] of chunkRanges(values.length, this.maxCount)) {
      this.watchdog.guard(`all-reduce of ${values.length} float64`, () => this.addon.allreduceF64(values.subarray(s, e), MPI_OP[op]));
    }
  }

  broadcast(bytes: Uint8Array, root = 0): void {
    for (const [s, e] of chunkRanges(bytes.length, this.maxCount)) {
      this.watchdog.guard(`broadcast of ${bytes.length} bytes from rank ${root}`, () => this.addon.broadcastBytes(bytes.subarray(s, e), root));
    }
  }

  allgather(x: Float32Array): Float32Array {
    const counts = new Float64Array(this.size);
    counts[this.rank] = x.length;
    this.allreduceF64(counts, 'sum');
    const total = counts.reduce((a, b) => a + b, 0);
    if (total > this.maxCount) throw new Error(`all-gather: ${total} floats in all exceed one MPI call's ${this.maxCount}`);
    const displs = new Int32Array(this.size);
    for (let r = 1; r < this.size; r++) displs[r] = displs[r - 1]! + counts[r - 1]!;
    const out = new Float32Array(total);
    this.watchdog.guard(`all-gather of ${total} floats`, () => this.addon.allgathervF32(x, out, Int32Array.from(counts), displs));
    return out;
  }

  barrier(): void {
    this.watchdog.guard('barrier', () => this.addon.barrier());
  }

  abort(code: number): never {
    this.addon.abort(code);
    process.exit(code);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.watchdog.close();
    this.addon.finalize();
  }

  private reduceF32(buf: Float32Array, op: number, what: string): void {
    for (const [s, e] of chunkRanges(buf.length, this.maxCount)) this.watchdog.guard(what, () => this.addon.allreduceF32(buf.subarray(s, e), op));
  }

  private scratchBuffer(index: number, length: number): Float32Array {
    const have = this.scratch[index];
    if (have && have.length >= length) return have.subarray(0, length);
    const made = new Float32Array(length);
    this.scratch[index] = made;
    return made;
  }
}

/**
 * Whether this process was started by an MPI launcher: Open MPI's mpirun,
 * MPICH's Hydra, or srun / PMIx (Slurm, MPIJob). A process started alone
 * runs single; SELFSUP_DIST=single|mpi overrides the guess.
 */
export function launchedUnderMpi(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.SELFSUP_DIST === 'single') return false;
  if (env.SELFSUP_DIST === 'mpi') return true;
  return ['OMPI_COMM_WORLD_SIZE', 'PMI_SIZE', 'PMIX_RANK', 'MPI_LOCALNRANKS'].some((k) => env[k] !== undefined);
}

let world: Communicator | null = null;

/** The process's communicator, created on first use: MPI when launched by an MPI launcher, else single. */
export function worldCommunicator(opts: MpiOptions = {}): Communicator {
  world ??= launchedUnderMpi() ? new MpiCommunicator(opts) : new SingleCommunicator();
  return world;
}

/** Finalizes the world communicator, if one was made (MPI_Finalize once, at process end). */
export async function closeWorld(): Promise<void> {
  const w = world;
  world = null;
  await w?.close();
}
