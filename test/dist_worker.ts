// One rank of the scale-out tests (test/dist_*.test.ts start it under mpirun).
// It prints `RESULT <rank> <json>` lines for the test to check. Started
// without a case (as `node --test dist/test/` does with every file here) it
// does nothing.
import { createHash } from 'node:crypto';
import type { Tensor, Tensor2D, Tensor4D } from '@tensorflow/tfjs-core';
import { useBackend } from '../src/backend/select.js';
import { Mulberry32 } from '../src/core/random.js';
import * as tf from '../src/core/tf.js';
import { mocoV2View, type PipelineSpec, type RecipeOptions } from '../src/data/index.js';
import { closeWorld, worldCommunicator, type Communicator } from '../src/dist/communicator.js';
import { createMethod, Method, type LossOutput, type MethodContext, type StepContext, type TensorBatch } from '../src/methods/index.js';
import { Conv2d, Linear } from '../src/nn/layers.js';
import type { Module } from '../src/nn/module.js';
import type { ResNet } from '../src/nn/resnet.js';
import { parseRunConfig } from '../src/train/config.js';
import { createOptimizer, namedParameters } from '../src/train/optimizers.js';
import { broadcastRunState, buildMethod } from '../src/train/setup.js';
import { ntXent } from '../src/losses/nt_xent.js';
import { ntXentAcrossRanks } from '../src/losses/nt_xent_ranks.js';
import { train } from '../src/train/trainer.js';

const [, , which, ...rest] = process.argv;

function report(comm: Communicator, value: unknown): void {
  process.stdout.write(`RESULT ${comm.rank} ${JSON.stringify(value)}\n`);
}

/** Rank-dependent data the test can recompute: array a of rank r is [r*10 + a + i/8 ...]. */
export function rankArray(rank: number, a: number, n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => rank * 10 + a + i / 8);
}

/**
 * A BN-free network (conv, ReLU, global average pool, linear) trained on the
 * labels: with no batch statistics, a step over 2 ranks x 8 images is the
 * step over 16 up to rounding. `seed` differs per rank on purpose: the
 * trainer's broadcast must make them start alike.
 */
class TinyNet extends Method {
  readonly name = 'supervised';
  readonly backbone: ResNet;
  readonly conv: Conv2d;
  readonly fc: Linear;
  private readonly recipe: RecipeOptions;

  constructor(ctx: MethodContext, seed: number) {
    super();
    this.recipe = ctx.recipe;
    // Required by the interface; not registered, so neither trained nor saved.
    this.backbone = ctx.backbone();
    const rng = new Mulberry32(seed);
    this.conv = this.addModule('conv', new Conv2d(ctx.channels, 4, 3, { stride: 2, bias: true, rng }));
    this.fc = this.addModule('fc', new Linear(4, 10, { rng }));
  }

  pipeline(): PipelineSpec {
    return { outputs: [{ kind: 'view', name: 'view', view: mocoV2View(this.recipe) }] };
  }

  loss(batch: TensorBatch, ctx: StepContext): LossOutput {
    const kill = Number(process.env.TEST_KILL_AT_STEP ?? -1);
    // Dies between its forward and its collectives, while its peer waits in them.
    if (ctx.step === kill && this.comm.rank === 1) process.kill(process.pid, 'SIGKILL');
    const h = tf.relu(this.conv.forward(batch.views.view! as Tensor4D));
    const logits = this.fc.forward(tf.mean(h, [1, 2]) as Tensor2D);
    const loss = tf.losses.softmaxCrossEntropy(tf.oneHot(batch.labels, 10), logits);
    return { loss, terms: {} } as LossOutput;
  }
}

function values(module: Module, which: 'params' | 'all' = 'all'): number[] {
  const named = which === 'params' ? module.namedParameters() : [...module.namedParameters(), ...module.namedBuffers()];
  return named.flatMap(([, v]) => Array.from(v.dataSync()));
}

const digest = (xs: number[]) => createHash('sha256').update(Buffer.from(Float64Array.from(xs).buffer)).digest('hex').slice(0, 16);

function runConfig(over: Record<string, unknown>) {
  return parseRunConfig({
    backend: 'native',
    workers: 0,
    epochs: 1,
    batchSize: 16,
    dataset: { limit: 48 },
    model: { width: 4 },
    optimizer: { lr: 0.2, momentum: 0.9, weightDecay: 5e-4 },
    schedule: { name: 'constant' },
    onlineKnn: { every: 0 },
    preciseBn: { images: 0 },
    ...over,
  });
}

const mocoOptions = { queueLength: 64, dim: 16, bnSplits: 2 };

const cases: Record<string, (comm: Communicator) => Promise<void> | void> = {
  collectives(comm) {
    const sizes = [5, 0, 3, 1, 7];
    // Tiny buckets and chunks exercise the packing and the >2^31 path.
    for (const [label, op] of [['sum', 'sum'], ['mean', 'mean'], ['max', 'max']] as const) {
      const arrays = sizes.map((n, a) => rankArray(comm.rank, a, n));
      comm.allreduce(arrays, op);
      report(comm, { case: `allreduce-${label}`, arrays: arrays.map((x) => Array.from(x)) });
    }
    const f64 = Float64Array.from([comm.rank + 0.5, -comm.rank]);
    comm.allreduceF64(f64, 'min');
    report(comm, { case: 'allreduceF64-min', values: Array.from(f64) });
    const root = comm.size - 1;
    const bytes = Uint8Array.from({ length: 11 }, (_, i) => (comm.rank === root ? 200 + i : 0));
    comm.broadcast(bytes, root);
    report(comm, { case: 'broadcast', root, values: Array.from(bytes) });
    // Ragged, rank 0 empty: rank r gives r elements.
    const gathered = comm.allgather(rankArray(comm.rank, 0, comm.rank));
    report(comm, { case: 'allgather', values: Array.from(gathered) });
    const empty = comm.allgather(new Float32Array(0));
    report(comm, { case: 'allgather-empty', length: empty.length });
    comm.barrier();
    report(comm, { case: 'done', size: comm.size, localRank: comm.localRank, description: comm.description });
  },

  /** 3 SGD steps of TinyNet, global batch 16; argv: out dir. Also runs without mpirun (the 1-process reference). */
  async ddp(comm) {
    await useBackend('native');
    const losses: number[] = [];
    let method: TinyNet | null = null;
    let params: number[] = [];
    await train(runConfig({ out: rest[0], method: 'supervised' }), {
      quiet: true,
      comm,
      // The run frees the method when it ends: read it after each step.
      onStep: (s) => {
        losses.push(s.loss);
        params = values(method!, 'params');
      },
      method: (ctx) => (method = new TinyNet(ctx, ctx.seed + 1000 * comm.rank)),
    });
    report(comm, { case: 'ddp', losses, params });
  },

  /** MoCo v2 built with a different seed on each rank, then the trainer's broadcast: every rank holds rank 0's state. */
  async broadcast(comm) {
    await useBackend('native');
    const config = runConfig({ out: '/nonexistent', method: 'mocov2', methodOptions: mocoOptions, seed: 1 + comm.rank });
    const method = buildMethod(config, { channels: 1, numClasses: 10, datasetSize: 48 });
    const before = digest(values(method));
    const optimizer = createOptimizer(config.optimizer, namedParameters(method));
    broadcastRunState(comm, method, optimizer);
    report(comm, { case: 'broadcast', before, after: digest(values(method)), tensors: method.namedParameters().length + method.namedBuffers().length });
  },

  /** NT-Xent across ranks on a fixed global batch of 8 pairs: this rank's loss and gradients, and one process's over the whole batch. */
  async ntxent(comm) {
    await useBackend('native');
    const B = 8;
    const D = 5;
    const global1 = tf.tensor2d(Float32Array.from({ length: B * D }, (_, i) => Math.sin(i * 1.3)), [B, D]);
    const global2 = tf.tensor2d(Float32Array.from({ length: B * D }, (_, i) => Math.cos(i * 0.7)), [B, D]);
    const n = B / comm.size;
    const mine = (t: Tensor2D) => tf.slice(t, [comm.rank * n, 0], [n, D]);
    const grad = tf.grads((...xs: Tensor[]) => ntXentAcrossRanks(comm, xs[0] as Tensor2D, xs[1] as Tensor2D, 0.5));
    const loss = ntXentAcrossRanks(comm, mine(global1), mine(global2), 0.5).dataSync()[0];
    const [g1, g2] = grad([mine(global1), mine(global2)]);
    const refGrad = tf.grads((...xs: Tensor[]) => ntXent(xs[0] as Tensor2D, xs[1] as Tensor2D, 0.5));
    const [r1, r2] = refGrad([global1, global2]);
    report(comm, {
      case: 'ntxent',
      loss,
      grads: [...g1!.dataSync(), ...g2!.dataSync()],
      reference: { loss: ntXent(global1, global2, 0.5).dataSync()[0], grads: [...mine(r1 as Tensor2D).dataSync(), ...mine(r2 as Tensor2D).dataSync()] },
    });
  },

  /** MoCo v2, DetCo, InsDis or SimCLR (argv: method, out) for 2 steps: the queues (or memory bank), parameters and pointers of every rank. */
  async queues(comm) {
    await useBackend('native');
    const name = rest[0]!;
    let method: Method | null = null;
    const options = { detco: { queueLength: 64, dim: 16 }, insdis: { dim: 16, negatives: 64 }, simclr: { hiddenDim: 32, outDim: 16 } }[name] ?? mocoOptions;
    let seen: Record<string, unknown> = {};
    await train(runConfig({ out: rest[1], method: name, methodOptions: options, dataset: { limit: 32 }, epochs: 1 }), {
      quiet: true,
      comm,
      method: (ctx) => (method = createMethod(name, options, ctx)),
      onStep: () => {
        const queues = method!.namedBuffers().filter(([n]) => /[qQ]ueue.*\.keys$|memory\.bank$/.test(n));
        const pointers = method!.namedBuffers().filter(([n]) => /[qQ]ueue.*\.pointer$/.test(n)).map(([, v]) => v.dataSync()[0]);
        seen = {
          case: 'queues',
          queues: queues.length,
          queueDigest: digest(queues.flatMap(([, v]) => Array.from(v.dataSync()))),
          paramDigest: digest(values(method!, 'params')),
          pointers,
        };
      },
    });
    report(comm, seen);
  },

  /** MoCo v2, 2 epochs of 2 steps; argv: out, then 'stop' (rank 1 alone asks to stop after step 1) or 'resume' or 'straight'. */
  async resume(comm) {
    await useBackend('native');
    const [out, mode] = rest;
    const controller = new AbortController();
    const result = await train(runConfig({ out, method: 'mocov2', methodOptions: mocoOptions, dataset: { limit: 32 }, epochs: 2 }), {
      quiet: true,
      comm,
      resume: mode === 'resume',
      signal: controller.signal,
      onStep: (s) => mode === 'stop' && comm.rank === 1 && s.step === 1 && controller.abort(),
    });
    report(comm, { case: 'resume', steps: result.steps, stoppedEarly: result.stoppedEarly });
  },

  /** The rank in argv[0] stops answering; the others wait in a barrier until the watchdog ends the job. */
  hang(comm) {
    if (comm.rank === Number(rest[0] ?? 1)) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
    comm.barrier();
    report(comm, { case: 'hang', passed: true });
  },

  /** The rank in argv[0] dies while the others are in an all-reduce. */
  die(comm) {
    if (comm.rank === Number(rest[0] ?? 1)) process.kill(process.pid, 'SIGKILL');
    comm.allreduce([new Float32Array(1000)]);
    report(comm, { case: 'die', passed: true });
  },
};

if (which !== undefined) {
  const run = cases[which];
  if (!run) throw new Error(`dist_worker: unknown case ${which}`);
  const comm = worldCommunicator({ bucketElements: Number(process.env.TEST_BUCKET ?? 0) || undefined, maxCount: Number(process.env.TEST_MAX_COUNT ?? 0) || undefined });
  await run(comm);
  await closeWorld();
}
