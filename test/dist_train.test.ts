// Data-parallel training under a real `mpirun -np 2` (skipped, with the
// reason, where Open MPI or the MPI addon is missing): 2 ranks x 8 images
// take the steps 1 process takes with 16; ranks built with different seeds
// hold rank 0's state after the trainer's broadcast; MoCo's and DetCo's key
// queues and InsDis's memory bank stay identical across ranks (the queues
// holding the global batch's keys); a 2-rank run stopped by one rank and
// resumed takes the uninterrupted run's steps exactly; a rank killed
// mid-step ends the job non-zero, with no hang.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { MetricsLog, type StepMetrics } from '../src/train/metrics.js';
import { WORKER, mpiSkipReason, runJob, type JobResult } from './mpi_launch.js';

const skip = mpiSkipReason() ?? false;
const fresh = (name: string) => join(mkdtempSync(join(tmpdir(), `selfsup-dist-${name}-`)), 'run');

type Report = Record<string, unknown>;

/** Each rank's single RESULT, after checking the job ended well. */
function reports(job: JobResult, np: number): Report[] {
  assert.equal(job.timedOut, false, `the job did not finish:\n${job.stderr}`);
  assert.equal(job.code, 0, job.stderr);
  return [...Array(np).keys()].map((r) => {
    const got = job.results.get(r);
    assert.ok(got && got.length === 1, `rank ${r} reported ${got?.length ?? 0} results:\n${job.stdout}\n${job.stderr}`);
    return got[0] as Report;
  });
}

test('2 ranks x batch 8 take the steps of 1 process x batch 16: three SGD steps of a BN-free network', { skip, timeout: 240_000 }, async () => {
  // The reference: the same worker without mpirun is a single process.
  const single = spawnSync(process.execPath, [WORKER, 'ddp', fresh('single')], {
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, SELFSUP_THREADS: '1' },
  });
  assert.equal(single.status, 0, single.stderr);
  const ref = JSON.parse(/^RESULT 0 (.*)$/m.exec(single.stdout)![1]!) as { losses: number[]; params: number[] };
  const [r0, r1] = reports(await runJob(2, ['ddp', fresh('ddp')], { timeoutMs: 180_000 }), 2) as Array<typeof ref>;
  assert.equal(ref.losses.length, 3);
  // Rank 1 started from other weights (another seed); the broadcast and the all-reduce keep it on rank 0's.
  assert.deepEqual(r1!.params, r0!.params, 'the ranks hold the same parameters, bit for bit');
  assert.equal(r0!.params.length, ref.params.length);
  const worst = Math.max(...r0!.params.map((p, i) => Math.abs(p - ref.params[i]!)));
  assert.ok(worst < 1e-5, `largest parameter difference from the 1-process run: ${worst}`);
  r0!.losses.forEach((l, i) => assert.ok(Math.abs(l - ref.losses[i]!) < 1e-5, `step ${i}: loss ${l} vs ${ref.losses[i]}`));
});

test('ranks built with different seeds hold rank 0’s weights and buffers after the broadcast', { skip, timeout: 180_000 }, async () => {
  const [r0, r1] = reports(await runJob(2, ['broadcast'], { timeoutMs: 150_000 }), 2);
  assert.notEqual(r0!.before, r1!.before, 'the seeds gave different models');
  assert.equal(r0!.after, r0!.before, "rank 0's state is unchanged");
  assert.equal(r1!.after, r0!.before, "rank 1 holds rank 0's state");
  assert.ok((r0!.tensors as number) > 100);
});

for (const method of ['mocov2', 'detco']) {
  test(`${method}: key queues identical on both ranks, fed with the global batch's keys`, { skip, timeout: 300_000 }, async () => {
    const [r0, r1] = reports(await runJob(2, ['queues', method, fresh(method)], { timeoutMs: 270_000 }), 2);
    assert.equal(r0!.queues, method === 'detco' ? 8 : 1);
    assert.equal(r1!.queueDigest, r0!.queueDigest, 'the queues are identical');
    assert.equal(r1!.paramDigest, r0!.paramDigest, 'the parameters are identical');
    // 2 steps of a global batch of 16: each queue took 32 keys (not the 16 of one rank's shares).
    assert.deepEqual(r0!.pointers, Array((r0!.queues as number)).fill(32));
  });
}

test('insdis: memory banks identical on both ranks, each updated with every rank’s (index, embedding) pairs', { skip, timeout: 300_000 }, async () => {
  const [r0, r1] = reports(await runJob(2, ['queues', 'insdis', fresh('insdis')], { timeoutMs: 270_000 }), 2);
  assert.equal(r0!.queues, 1, 'one memory bank');
  assert.equal(r1!.queueDigest, r0!.queueDigest, 'the banks are identical');
  assert.equal(r1!.paramDigest, r0!.paramDigest, 'the parameters are identical');
});

test('SimCLR across ranks: the mean of the ranks’ NT-Xent and their gradients are one process’s over the whole batch', { skip, timeout: 120_000 }, async () => {
  type R = { loss: number; grads: number[]; reference: { loss: number; grads: number[] } };
  const ranks = reports(await runJob(2, ['ntxent'], { timeoutMs: 100_000 }), 2) as unknown as R[];
  const mean = (ranks[0]!.loss + ranks[1]!.loss) / 2;
  assert.ok(Math.abs(mean - ranks[0]!.reference.loss) < 1e-5, `mean ${mean} vs ${ranks[0]!.reference.loss}`);
  for (const r of ranks) {
    // Each rank's gradient is of the sum of the ranks' losses; the trainer's mean over ranks divides it by 2.
    r.grads.forEach((g, i) => assert.ok(Math.abs(g / 2 - r.reference.grads[i]!) < 1e-5, `gradient ${i}: ${g / 2} vs ${r.reference.grads[i]}`));
  }
  const [s0, s1] = reports(await runJob(2, ['queues', 'simclr', fresh('simclr')], { timeoutMs: 100_000 }), 2);
  assert.equal(s1!.paramDigest, s0!.paramDigest, 'a 2-rank SimCLR run keeps the ranks’ parameters identical');
});

test('a 2-rank run stopped by one rank and resumed takes exactly the uninterrupted run’s steps', { skip, timeout: 420_000 }, async () => {
  const stepLines = (out: string) =>
    new MetricsLog(join(out, 'metrics.jsonl'))
      .read()
      .filter((l): l is StepMetrics => l.kind === 'step')
      .map((l) => [l.step, l.loss, l.lr]);
  const straight = fresh('straight');
  const [a] = reports(await runJob(2, ['resume', straight, 'straight'], { timeoutMs: 150_000 }), 2);
  assert.equal(a!.steps, 4);
  const out = fresh('resumed');
  // Rank 1 alone asks to stop after step 1: both ranks must stop at the same step.
  const stopped = reports(await runJob(2, ['resume', out, 'stop'], { timeoutMs: 150_000 }), 2);
  assert.deepEqual(
    stopped.map((r) => [r.steps, r.stoppedEarly]),
    [
      [2, true],
      [2, true],
    ],
  );
  const [b] = reports(await runJob(2, ['resume', out, 'resume'], { timeoutMs: 150_000 }), 2);
  assert.equal(b!.steps, 4);
  assert.deepEqual(stepLines(out), stepLines(straight), 'the same losses and rates, bitwise');
});

test('a rank killed mid-step ends the training job non-zero, with no hang', { skip, timeout: 180_000 }, async () => {
  const job = await runJob(2, ['ddp', fresh('kill')], { timeoutMs: 150_000, env: { TEST_KILL_AT_STEP: '1' } });
  assert.equal(job.timedOut, false, 'the job hung past the test timeout');
  assert.notEqual(job.code, 0);
  assert.equal(job.results.size, 0, 'no rank finished');
  assert.ok(job.seconds < 120, `took ${job.seconds.toFixed(1)} s`);
});
