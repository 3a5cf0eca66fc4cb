// How lists of arrays are cut for the collectives: gradient buckets (as
// PyTorch DDP forms them) and chunks that keep every MPI count below 2^31.

/** One bucket: members are indices into the planned list, in the order they are packed. */
export interface Bucket {
  members: number[];
  /** Start of each member in the packed buffer, in elements. */
  offsets: number[];
  /** Elements in the bucket. */
  length: number;
}

/** PyTorch DDP's default bucket cap (`bucket_cap_mb` = 25 MiB), in float32 elements. */
export const DEFAULT_BUCKET_ELEMENTS = (25 * 1024 * 1024) / 4;

/** The largest count one MPI call takes (an int). */
export const MAX_MPI_COUNT = 2 ** 31 - 1;

/**
 * Groups arrays of `sizes` into buckets of at most `cap` elements, walking the
 * list backwards: the list is in parameter order and backward produces the
 * last layers' gradients first, so these buckets are the ones that could be
 * reduced while backward still runs (DDP's order). An array above the cap gets
 * a bucket of its own (chunked when reduced); empty arrays go nowhere. Every
 * rank plans from the same sizes, so every rank issues the same calls in the
 * same order, which MPI requires.
 */
export function planBuckets(sizes: readonly number[], cap = DEFAULT_BUCKET_ELEMENTS): Bucket[] {
  if (!(cap >= 1)) throw new Error(`planBuckets: cap must be >= 1, got ${cap}`);
  const buckets: Bucket[] = [];
  let current: Bucket | null = null;
  for (let i = sizes.length - 1; i >= 0; i--) {
    const n = sizes[i]!;
    if (n === 0) continue;
    if (!current || current.length + n > cap) {
      current = { members: [], offsets: [], length: 0 };
      buckets.push(current);
    }
    current.members.push(i);
    current.offsets.push(current.length);
    current.length += n;
  }
  return buckets;
}

/** [start, end) ranges that cover `length` elements with at most `max` each. */
export function chunkRanges(length: number, max = MAX_MPI_COUNT): Array<[number, number]> {
  if (!(max >= 1)) throw new Error(`chunkRanges: max must be >= 1, got ${max}`);
  const out: Array<[number, number]> = [];
  for (let start = 0; start < length; start += max) out.push([start, Math.min(length, start + max)]);
  return out;
}
