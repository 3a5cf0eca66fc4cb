// The scale-out collectives (src/dist/): bucketing and chunking and the
// single-process communicator everywhere; under a real `mpirun` (skipped,
// with the reason, where Open MPI or the addon is missing) the collectives on
// 2 and 3 ranks, the watchdog ending a job whose peer hangs, and a dying
// rank ending the job instead of hanging it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { chunkRanges, planBuckets } from '../src/dist/buckets.js';
import { SingleCommunicator, launchedUnderMpi } from '../src/dist/communicator.js';
import { WATCHDOG_EXIT_CODE } from '../src/dist/watchdog.js';
import { WORKER, mpiSkipReason, runJob } from './mpi_launch.js';

const skip = mpiSkipReason() ?? false;

test('buckets: every non-empty array in exactly one bucket, walked backwards, under the cap unless alone', () => {
  const sizes = [4, 0, 3, 10, 2, 2, 1];
  const buckets = planBuckets(sizes, 5);
  assert.deepEqual(
    buckets.map((b) => b.members),
    [[6, 5, 4], [3], [2], [0]],
  );
  assert.deepEqual(buckets[0]!.offsets, [0, 1, 3]);
  assert.deepEqual(
    buckets.map((b) => b.length),
    [5, 10, 3, 4],
  );
  const seen = buckets.flatMap((b) => b.members).sort((a, b) => a - b);
  assert.deepEqual(seen, [0, 2, 3, 4, 5, 6]);
  assert.deepEqual(planBuckets([]), []);
});

test('chunks cover a length with at most max elements each', () => {
  assert.deepEqual(chunkRanges(10, 4), [
    [0, 4],
    [4, 8],
    [8, 10],
  ]);
  assert.deepEqual(chunkRanges(0, 4), []);
  assert.deepEqual(chunkRanges(2 ** 32, 2 ** 31 - 1).length, 3);
});

test('the single communicator is the identity; MPI is detected from the launchers’ variables', () => {
  const c = new SingleCommunicator();
  const a = Float32Array.from([1, 2, 3]);
  c.allreduce([a], 'mean');
  c.broadcast(Uint8Array.from([7]));
  c.barrier();
  assert.deepEqual(Array.from(a), [1, 2, 3]);
  assert.deepEqual(Array.from(c.allgather(a)), [1, 2, 3]);
  assert.equal(launchedUnderMpi({}), false);
  assert.equal(launchedUnderMpi({ OMPI_COMM_WORLD_SIZE: '2' }), true);
  assert.equal(launchedUnderMpi({ PMI_SIZE: '2' }), true);
  assert.equal(launchedUnderMpi({ OMPI_COMM_WORLD_SIZE: '2', SELFSUP_DIST: 'single' }), false);
});

test('launched under MPI without the addon: an error that names the packages to install', () => {
  const r = spawnSync(process.execPath, [WORKER, 'collectives'], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, SELFSUP_DIST: 'mpi', SELFSUP_MPI_ADDON: '/nonexistent/selfsup_mpi.node' },
  });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /MPI addon is not built .*openmpi-bin libopenmpi-dev/);
});

/** What rank r's array a holds in dist_worker's collectives case. */
const rankArray = (rank: number, a: number, n: number) => Array.from({ length: n }, (_, i) => rank * 10 + a + i / 8);

for (const np of [2, 3]) {
  test(`collectives on ${np} ranks: all-reduce sum/mean/max of a bucketed, chunked list with an empty array, broadcast, ragged all-gather, barrier`, { skip, timeout: 180_000 }, async () => {
    // Buckets of 6 floats and MPI calls of 4: the lists need several buckets, and the 7-float array two chunks.
    const job = await runJob(np, ['collectives'], { timeoutMs: 150_000, env: { TEST_BUCKET: '6', TEST_MAX_COUNT: '4' } });
    assert.equal(job.timedOut, false, `mpirun -np ${np} did not finish:\n${job.stderr}`);
    assert.equal(job.code, 0, job.stderr);
    const sizes = [5, 0, 3, 1, 7];
    const ranks = [...Array(np).keys()];
    const sum = sizes.map((n, a) => rankArray(0, a, n).map((_, i) => ranks.reduce((s, r) => s + rankArray(r, a, n)[i]!, 0)));
    for (const r of ranks) {
      const got = new Map((job.results.get(r) ?? []).map((v) => [(v as { case: string }).case, v as Record<string, unknown>]));
      assert.equal(got.size, 8, `rank ${r} reported ${got.size} cases:\n${job.stdout}\n${job.stderr}`);
      assert.deepEqual(got.get('allreduce-sum')!.arrays, sum);
      const mean = got.get('allreduce-mean')!.arrays as number[][];
      mean.forEach((arr, a) => arr.forEach((v, i) => assert.ok(Math.abs(v - sum[a]![i]! / np) < 1e-5)));
      assert.deepEqual(got.get('allreduce-max')!.arrays, sizes.map((n, a) => rankArray(np - 1, a, n)));
      assert.deepEqual(got.get('allreduceF64-min')!.values, [0.5, -(np - 1)]);
      assert.deepEqual(got.get('broadcast')!.values, Array.from({ length: 11 }, (_, i) => 200 + i));
      assert.deepEqual(got.get('allgather')!.values, ranks.flatMap((q) => rankArray(q, 0, q)));
      assert.equal(got.get('allgather-empty')!.length, 0);
      assert.equal(got.get('done')!.size, np);
    }
  });
}

test('a rank that stops answering: the watchdog ends the job non-zero, naming the collective', { skip, timeout: 120_000 }, async () => {
  const job = await runJob(2, ['hang', '1'], { timeoutMs: 90_000, env: { SELFSUP_DIST_TIMEOUT: '3' } });
  assert.equal(job.timedOut, false, 'the job hung past the test timeout');
  assert.equal(job.code, WATCHDOG_EXIT_CODE, job.stderr);
  assert.match(job.stderr, /rank 0: barrier has waited 3 s for the other ranks/);
  assert.ok(job.seconds < 60, `took ${job.seconds.toFixed(1)} s`);
});

test('a rank that dies mid-collective ends the whole job non-zero, without a hang', { skip, timeout: 120_000 }, async () => {
  const job = await runJob(2, ['die', '1'], { timeoutMs: 90_000 });
  assert.equal(job.timedOut, false, 'the job hung past the test timeout');
  assert.notEqual(job.code, 0);
  assert.equal(job.results.size, 0, 'no rank finished its all-reduce');
});
