/**
 * A call that ends before its running chunk does (the client cancels, its deadline passes, another of
 * its chunks fails) has that chunk stopped where it runs (workers/thread-stop.ts), not left running to
 * its time limit: the thread serves the next call at once. Before, a client that cancelled and
 * reopened one looping call at a time held every thread of the plugin, each orphan for the time limit.
 * The time limit here is a minute, so only the stop can free the thread within the waits below.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import * as grpc from '@grpc/grpc-js';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { type CallResult, DataType, encodeBundle, FunctionType, num, numbers, scriptMetadata } from '../helpers/qlik-client';
import { assertServing, evalRows, waitFor } from '../helpers/sandbox-calls';

const LIMIT_MS = 60_000;
/** "Long before the cancelled script's time limit": a third of it, slack for a busy shared machine. */
const FREED_WITHIN_MS = LIMIT_MS / 3;
const LOOP = 'for (;;) {}';
/** Linux's clock ticks a second, in which /proc reports CPU time. */
const TICKS_PER_S = 100;

/** CPU time a process has used (user + system), in ms, from /proc (Linux). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1]?.split(' ') ?? [];
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_S;
}

function sandboxPid(t: TestPlugin): number {
  const [process] = t.plugin.pool.processes();
  assert.ok(process?.pid !== undefined, 'no sandbox process');
  return process.pid;
}

/** A SCALAR call over `rows`, one message each, kept for the caller to cancel. */
function openCall(t: TestPlugin, script: string, rows: number[]): { result: Promise<CallResult>; cancel: () => void } {
  let call: grpc.ClientDuplexStream<Buffer, Buffer> | undefined;
  const metadata = scriptMetadata({
    script,
    functionType: FunctionType.SCALAR,
    returnType: DataType.NUMERIC,
    params: [{ dataType: DataType.NUMERIC }],
  });
  const result = t.client.stream('/qlik.sse.Connector/EvaluateScript', metadata, { deadlineMs: 2 * LIMIT_MS }, (opened) => {
    call = opened;
    for (const row of rows) opened.write(encodeBundle([[num(row)]]));
    opened.end();
  });
  return { result, cancel: () => call?.cancel() };
}

/** The script really runs: the sandbox process used this much more CPU (a task sent is not yet a task running). */
async function runningFor(t: TestPlugin, cpuSinceMs: number, moreMs: number): Promise<void> {
  const pid = sandboxPid(t);
  await waitFor(`${moreMs} ms of sandbox CPU`, () => cpuMs(pid) - cpuSinceMs >= moreMs, FREED_WITHIN_MS);
}

async function assertDoubles(t: TestPlugin): Promise<void> {
  const next = await evalRows(t.client, 'args[0] * 2', [[num(21)]]);
  assert.equal(next.code, grpc.status.OK, next.details);
  assert.deepEqual(numbers(next), [42]);
}

describe('one sandbox thread, and a looping call that ends early', () => {
  let t: TestPlugin;
  before(
    async () =>
      (t = await startTestPlugin({
        SSE_WORKERS: '1',
        SSE_SANDBOX_PROCESSES: '1',
        // The pool thread, not the main thread's 10 ms budget, is what must be stopped.
        SSE_FAST_PATH_MS: '0',
        SSE_SCRIPT_TIMEOUT_MS: String(LIMIT_MS),
      })),
  );
  after(async () => t.stop());

  it('cancelled by the client, three times in a row: each loop stops, the thread answers the next call', async () => {
    const restarts = t.plugin.pool.restarts;
    const stoppedBefore = t.plugin.pool.stoppedTasks;
    for (let round = 1; round <= 3; round++) {
      const cpuBefore = cpuMs(sandboxPid(t));
      const looping = openCall(t, LOOP, [1]);
      await runningFor(t, cpuBefore, 100);
      looping.cancel();
      assert.equal((await looping.result).code, grpc.status.CANCELLED);
      // The stopped task's result is what frees its thread in the front's count (sse_busy_workers).
      await waitFor('the cancelled loop to stop', () => t.plugin.pool.busyWorkers === 0, FREED_WITHIN_MS);
      assert.equal(t.plugin.pool.stoppedTasks, stoppedBefore + round);
      await assertDoubles(t);
    }
    // Stopped by disposing its isolate: the process, its thread and the watchdog were not involved.
    assert.equal(t.plugin.pool.restarts, restarts);
    assert.equal(t.plugin.pool.threads, 1);
    assert.equal(t.plugin.pool.queueSize, 0);
    await waitFor('every held byte back', () => t.plugin.held.bytes === 0, FREED_WITHIN_MS);
  });

  it('past its deadline: the loop stops, the thread answers the next call', async () => {
    const stoppedBefore = t.plugin.pool.stoppedTasks;
    const cpuBefore = cpuMs(sandboxPid(t));
    const result = await t.client.evaluate({
      script: LOOP,
      functionType: FunctionType.SCALAR,
      returnType: DataType.NUMERIC,
      params: [{ dataType: DataType.NUMERIC }],
      bundles: [[[num(1)]]],
      deadlineMs: 1_000,
    });
    assert.equal(result.code, grpc.status.DEADLINE_EXCEEDED, result.details);
    assert.ok(cpuMs(sandboxPid(t)) > cpuBefore, 'the loop never ran');
    await waitFor('the loop past its deadline to stop', () => t.plugin.pool.busyWorkers === 0, FREED_WITHIN_MS);
    assert.equal(t.plugin.pool.stoppedTasks, stoppedBefore + 1);
    await assertDoubles(t);
  });
});

describe('two sandbox threads, and a call whose first chunk fails while its second loops', () => {
  let t: TestPlugin;
  before(
    async () =>
      (t = await startTestPlugin({
        SSE_WORKERS: '2',
        SSE_SANDBOX_PROCESSES: '1',
        SSE_FAST_PATH_MS: '0',
        SSE_SCRIPT_TIMEOUT_MS: String(LIMIT_MS),
      })),
  );
  after(async () => t.stop());

  it('the call fails with the first chunk error, and the looping chunk stops', async () => {
    const restarts = t.plugin.pool.restarts;
    // Row 0 goes out as a task at once, row 1 as a second when the client half-closes: two threads.
    const script = `if (args[0] === 1) for (;;) {}
      const end = Date.now() + 300; while (Date.now() < end);
      throw new Error('row 0 fails');`;
    const call = openCall(t, script, [0, 1]);
    const result = await call.result;
    assert.equal(result.code, grpc.status.INVALID_ARGUMENT, result.details);
    assert.match(result.details, /row 0 fails/);
    await waitFor('the looping chunk to stop', () => t.plugin.pool.busyWorkers === 0, FREED_WITHIN_MS);
    assert.equal(t.plugin.pool.stoppedTasks, 1);
    assert.equal(t.plugin.pool.restarts, restarts);
    await assertDoubles(t);
    await assertServing(t.client);
  });
});
