// Each rank's share of an epoch. All ranks draw the same permutation (one
// shared seed), cut it into global batches of `batchSize`, and rank r loads
// the r-th 1/size of each: so the ranks' batches, side by side, are exactly
// the batch one process would load, and a sample's augmentation (drawn from
// the seed, the epoch and its dataset index, loader.ts) is the same whatever
// the number of ranks. The last, partial global batch is dropped so every
// rank takes the same number of steps; a rank with one step more would wait
// in its gradient all-reduce forever.
import type { Batch, Loader } from '../data/index.js';
import type { Communicator } from '../dist/communicator.js';

/**
 * The dataset indices rank `rank` visits, as an order for `loader.epoch`
 * (whose batches are the rank's share, `globalBatch / size`): its `steps`
 * shares first, then filler up to the length the loader checks, which is
 * never reached.
 */
export function rankOrder(order: Int32Array, rank: number, size: number, globalBatch: number, steps: number): Int32Array {
  const share = globalBatch / size;
  if (!Number.isInteger(share)) throw new Error(`shard: a global batch of ${globalBatch} does not split over ${size} ranks`);
  if (steps * globalBatch > order.length) throw new Error(`shard: ${steps} global batches of ${globalBatch} need more than ${order.length} samples`);
  const out = new Int32Array(order.length);
  for (let b = 0; b < steps; b++) out.set(order.subarray(b * globalBatch + rank * share, b * globalBatch + (rank + 1) * share), b * share);
  out.set(order.subarray(0, order.length - steps * share), steps * share);
  return out;
}

/** The batches of `epoch` this rank trains on, from batch `from`; one process gets the loader's own epoch. */
export async function* rankEpoch(
  loader: Loader,
  comm: Communicator,
  epoch: number,
  from: number,
  order: Int32Array | undefined,
  globalBatch: number,
  steps: number,
): AsyncGenerator<Batch> {
  const mine = rankOrder(order ?? loader.epochOrder(epoch), comm.rank, comm.size, globalBatch, steps);
  for await (const batch of loader.epoch(epoch, from, mine)) {
    if (batch.index >= steps) return;
    yield batch;
  }
}
