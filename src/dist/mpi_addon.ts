// Loads the optional MPI addon (native/mpi/), only when a run is launched
// under an MPI launcher. It is a separate node-gyp build so that a machine
// without Open MPI or MPICH still builds and tests everything else.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** Reduction codes of the addon. */
export const MPI_OP = { sum: 0, max: 1, min: 2 } as const;
export type ReduceOp = keyof typeof MPI_OP;

export interface MpiInfo {
  rank: number;
  size: number;
  /** Rank among the processes of this host (MPI_Comm_split_type SHARED). */
  localRank: number;
  localSize: number;
  /** MPI_THREAD_MULTIPLE was granted: the watchdog thread may call abort. */
  threadMultiple: boolean;
  library: string;
}

export interface MpiAddon {
  init(): MpiInfo;
  /** In place; at most 2^31-1 elements per call. */
  allreduceF32(buf: Float32Array, op: number): void;
  allreduceF64(buf: Float64Array, op: number): void;
  /** In place; at most 2^31-1 bytes per call. */
  broadcastBytes(buf: Uint8Array, root: number): void;
  /** MPI_Allgatherv of floats: counts and displacements in elements, one per rank. */
  allgathervF32(send: Float32Array, recv: Float32Array, counts: Int32Array, displs: Int32Array): void;
  barrier(): void;
  /** Ends every rank of the job with `code`. */
  abort(code: number): void;
  finalize(): void;
}

/** SELFSUP_MPI_ADDON points at another build (tests use it for the missing-addon error). */
export const mpiAddonPath = (): string =>
  process.env.SELFSUP_MPI_ADDON ?? fileURLToPath(new URL('../../../native/mpi/build/Release/selfsup_mpi.node', import.meta.url));

const BUILD_HINT =
  'install Open MPI (sudo apt-get install openmpi-bin libopenmpi-dev) and build the addon: ' +
  'cd native/mpi && ../../node_modules/.bin/node-gyp rebuild';

let loaded: MpiAddon | null = null;

/** The addon, loaded on first use; throws a message naming the missing packages. */
export function mpiAddon(): MpiAddon {
  if (loaded) return loaded;
  const path = mpiAddonPath();
  if (!existsSync(path)) throw new Error(`launched under MPI, but the MPI addon is not built (${path}): ${BUILD_HINT}`);
  try {
    loaded = createRequire(import.meta.url)(path) as MpiAddon;
  } catch (err) {
    const why = (err as Error).message;
    const hint = /libmpi|cannot open shared object/.test(why) ? 'the MPI library it was built against is missing: ' : 'it does not load: ';
    throw new Error(`the MPI addon ${path}: ${hint}${why}; ${BUILD_HINT}`);
  }
  return loaded;
}
