// The data loader: epochs of shuffled batches of views, built in worker
// threads ahead of the consumer.
//
// Determinism: the shuffle order comes from root.split(SHUFFLE).split(epoch)
// and each sample's augmentations from root.split(AUGMENT).split(epoch).split(i),
// so the batches depend on the seed only, not on the number of workers or
// on which worker finishes first (batches are yielded in order).
//
// Shutdown: worker threads are always unref'd, so an idle or forgotten loader
// never keeps the process alive. While a batch is owed, or close() waits for
// the threads to exit, a timer holds the event loop open instead: Worker.ref()
// proved unreliable here (terminate() of a worker could leave the loop empty
// with the promise unresolved, about one run in twenty on a loaded machine).
import { Worker } from 'node:worker_threads';
import { toSharedImageSet, type ImageSet } from './image_set.js';
import type { BatchRequest, WorkerInit } from './loader_worker.js';
import { buildBatch, type Batch, type PipelineSpec } from './pipeline.js';
import { Rng } from '../core/random.js';

export interface LoaderOptions {
  batchSize: number;
  /** Reshuffle every epoch (default true). */
  shuffle?: boolean;
  /** Drop the last, smaller batch (default false). */
  dropLast?: boolean;
  seed?: number;
  /** Worker threads; 0 builds batches in the calling thread (default 0). */
  workers?: number;
  /** Batches requested ahead of the consumer (default 2 per worker). */
  prefetch?: number;
}

const SHUFFLE = 1;
const AUGMENT = 2;

interface Pending {
  resolve: (b: Batch) => void;
  reject: (e: Error) => void;
  worker: PooledWorker;
}

interface PooledWorker {
  thread: Worker;
}

/** Holds the event loop open while at least one holder needs it. */
class KeepAlive {
  private holders = 0;
  private timer: NodeJS.Timeout | undefined;

  hold(): void {
    if (this.holders++ === 0) this.timer = setInterval(() => undefined, 1 << 30);
  }

  release(): void {
    if (--this.holders === 0) clearInterval(this.timer);
  }
}

export class Loader {
  readonly dataset: ImageSet;
  readonly pipeline: PipelineSpec;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly workers: number;
  readonly prefetch: number;
  private readonly shuffleRoot: Rng;
  private readonly augmentRoot: Rng;
  private pool: PooledWorker[] = [];
  private pending = new Map<number, Pending>();
  private nextId = 0;
  private closed = false;
  private readonly keepAlive = new KeepAlive();

  constructor(dataset: ImageSet, pipeline: PipelineSpec, options: LoaderOptions) {
    const { batchSize } = options;
    if (!(Number.isInteger(batchSize) && batchSize > 0)) throw new Error(`loader: batchSize must be a positive integer, got ${batchSize}`);
    const workers = options.workers ?? 0;
    if (!(Number.isInteger(workers) && workers >= 0)) throw new Error(`loader: workers must be an integer >= 0, got ${workers}`);
    if (dataset.count === 0) throw new Error('loader: the dataset is empty');
    this.batchSize = batchSize;
    this.shuffle = options.shuffle ?? true;
    this.dropLast = options.dropLast ?? false;
    this.workers = workers;
    this.prefetch = Math.max(1, options.prefetch ?? 2 * Math.max(1, workers));
    this.pipeline = pipeline;
    // Workers read the pixels in place; copying once here beats a copy per worker.
    this.dataset = workers > 0 ? toSharedImageSet(dataset) : dataset;
    const root = Rng.seeded(options.seed ?? 0);
    this.shuffleRoot = root.split(SHUFFLE);
    this.augmentRoot = root.split(AUGMENT);
    // Fail here, with a stack the caller recognises, rather than in a worker.
    buildBatch(this.dataset, pipeline, this.augmentRoot, 0, 0, [0]);
    if (this.batchesPerEpoch === 0) {
      throw new Error(`loader: dropLast with batchSize ${batchSize} leaves no batch from ${dataset.count} samples`);
    }
  }

  get batchesPerEpoch(): number {
    const n = this.dataset.count / this.batchSize;
    return this.dropLast ? Math.floor(n) : Math.ceil(n);
  }

  /** Dataset indices in the order epoch `epoch` visits them. */
  epochOrder(epoch: number): Int32Array {
    if (this.shuffle) return this.shuffleRoot.split(epoch).permutation(this.dataset.count);
    const order = new Int32Array(this.dataset.count);
    for (let i = 0; i < order.length; i++) order[i] = i;
    return order;
  }

  /**
   * The batches of one epoch, in order. Breaking out early is fine.
   * `fromBatch` resumes mid-epoch (after a checkpoint) with the very batches
   * an uninterrupted run would have seen. `order` replaces the shuffle (a
   * method's sampler): `dataset.count` indices, repeats allowed.
   */
  async *epoch(epoch: number, fromBatch = 0, order: Int32Array = this.epochOrder(epoch)): AsyncGenerator<Batch> {
    if (this.closed) throw new Error('loader: used after close()');
    if (!(Number.isInteger(fromBatch) && fromBatch >= 0)) throw new Error(`loader: fromBatch must be an integer >= 0, got ${fromBatch}`);
    if (order.length !== this.dataset.count || order.some((i) => !(i >= 0 && i < this.dataset.count))) {
      throw new Error(`loader: an epoch order must hold ${this.dataset.count} indices in 0-${this.dataset.count - 1}`);
    }
    const count = this.batchesPerEpoch;
    const slice = (b: number) => order.subarray(b * this.batchSize, Math.min(order.length, (b + 1) * this.batchSize));
    if (this.workers === 0) {
      for (let b = fromBatch; b < count; b++) yield buildBatch(this.dataset, this.pipeline, this.augmentRoot, epoch, b, slice(b));
      return;
    }
    this.startPool();
    const inFlight: Promise<Batch>[] = [];
    let next = fromBatch;
    const submit = () => {
      while (next < count && inFlight.length < this.prefetch) {
        inFlight.push(this.request(epoch, next, slice(next)));
        next++;
      }
    };
    try {
      submit();
      while (inFlight.length > 0) {
        const head = inFlight.shift()!;
        submit();
        yield await head;
      }
    } finally {
      // Abandoned requests still complete; just make sure nobody waits on them.
      for (const p of inFlight) p.catch(() => undefined);
    }
  }

  /** Terminates the workers. The loader cannot be used afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    const pool = this.pool;
    this.pool = [];
    this.keepAlive.hold();
    try {
      await Promise.all(pool.map((w) => w.thread.terminate()));
    } finally {
      this.keepAlive.release();
    }
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      this.keepAlive.release();
      p.reject(new Error('loader: closed while a batch was being built'));
    }
  }

  private startPool(): void {
    if (this.pool.length > 0) return;
    const { images, count, height, width, channels, labels } = this.dataset;
    const init: WorkerInit = {
      // Only the pixels and labels: an image folder's file list would be cloned into every worker.
      dataset: { images, count, height, width, channels, labels },
      pipeline: this.pipeline,
      key0: this.augmentRoot.key0,
      key1: this.augmentRoot.key1,
    };
    for (let w = 0; w < this.workers; w++) {
      const thread = new Worker(new URL('./loader_worker.js', import.meta.url), { workerData: init });
      const pooled: PooledWorker = { thread };
      thread.on('message', (msg: { id: number; batch?: Batch; error?: string }) => {
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        this.keepAlive.release();
        if (msg.error !== undefined) p.reject(new Error(`loader worker ${w}: ${msg.error}`));
        else p.resolve(msg.batch!);
      });
      const fail = (err: Error) => {
        for (const [id, p] of this.pending) {
          if (p.worker !== pooled) continue;
          this.pending.delete(id);
          this.keepAlive.release();
          p.reject(err);
        }
      };
      thread.on('error', (err) => fail(new Error(`loader worker ${w} crashed: ${err.message}`)));
      thread.on('exit', (code) => {
        if (!this.closed) fail(new Error(`loader worker ${w} exited with code ${code}`));
      });
      // After the listeners: adding a 'message' listener refs the port again.
      thread.unref();
      this.pool.push(pooled);
    }
  }

  private request(epoch: number, index: number, indices: Int32Array): Promise<Batch> {
    const worker = this.pool[index % this.pool.length]!;
    const id = this.nextId++;
    return new Promise<Batch>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, worker });
      this.keepAlive.hold();
      const req: BatchRequest = { id, epoch, index, indices: Int32Array.from(indices) };
      worker.thread.postMessage(req, [req.indices.buffer as ArrayBuffer]);
    });
  }
}
