/**
 * The scheduler (src/sandboxes/pool.ts) and the handles that own their tasks
 * (src/sandboxes/sandbox-handle.ts), driven through fake processes (test/helpers/fake-sandbox.ts):
 * the test delivers results, retirements and exits in the order it wants. A result settles its task
 * once; a death with no culprit sends each task again once, alone on a process, and fails it if that
 * one dies too; a named culprit fails only its own task and its bystanders run again; tasks sent
 * back go first, in the order they were sent. No clock: the tests wait for events, never for time.
 * test/limits/sandbox-death.test.ts proves the same with real processes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CallBudget } from '../../src/calls/call-budget';
import { type CallSpec, Frame, type FrameKind } from '../../src/contract/channel';
import { PluginError } from '../../src/contract/errors';
import { DataType, type TaskResult, type TaskSuccess } from '../../src/contract/task';
import { SandboxPool } from '../../src/sandboxes/pool';
import type { TaskRequest } from '../../src/sandboxes/task-runner';
import { FakeSpawner, silentLogger } from '../helpers/fake-sandbox';

const CALL: CallSpec = {
  spec: {
    script: 'args[0]',
    paramTypes: [DataType.NUMERIC],
    boundNames: [''],
    returnType: DataType.NUMERIC,
    mode: 'rows',
    tableAllowed: false,
  },
  contextKey: 'k',
  callTimeoutMs: 1_000,
  maxReplyBytes: 4 * 1024 * 1024,
};

function request(callId: number): TaskRequest {
  return {
    callId,
    owner: { host: 'h', appId: 'app', userId: 'user' },
    call: CALL,
    chunks: [],
    rows: 1,
    firstRow: 0,
    budget: new CallBudget(CALL.callTimeoutMs),
  };
}

function answerFor(value: number): TaskSuccess {
  return { ok: true, replies: [Buffer.of(value)], rowsOut: 1, nondeterministic: false, table: null, scriptMs: 1 };
}

/** A task's promise, and what became of it so far. */
interface Tracked {
  readonly done: Promise<TaskResult>;
  outcome: 'pending' | TaskResult | PluginError;
}

function track(done: Promise<TaskResult>): Tracked {
  const tracked: Tracked = { done, outcome: 'pending' };
  done.then(
    (result) => (tracked.outcome = result),
    (error: PluginError) => (tracked.outcome = error),
  );
  return tracked;
}

/** The error a task failed with; the test fails when it did not fail. */
function failure(tracked: Tracked | undefined): PluginError {
  const outcome = tracked?.outcome;
  assert.ok(outcome instanceof PluginError, `the task did not fail: ${JSON.stringify(outcome)}`);
  return outcome;
}

/** Lets settled promises run their callbacks (microtasks only: no timer of the pool fires meanwhile). */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

async function startPool(processes: number, threads: number): Promise<{ pool: SandboxPool; spawner: FakeSpawner }> {
  const spawner = new FakeSpawner();
  const settings = {
    workers: processes * threads,
    sandboxProcesses: processes,
    memoryLimitMb: 64,
    scriptTimeoutMs: 1_000,
    maxQueue: 100,
    sandboxMemoryMb: undefined,
  };
  const pool = new SandboxPool(settings, silentLogger, {}, spawner.spawn);
  const started = pool.start();
  for (const sandbox of spawner.all) sandbox.becomeReady();
  await started;
  return { pool, spawner };
}

/** The task ids, in the order the pool numbers them (1, 2, …), of `count` one-row calls. */
function runCalls(pool: SandboxPool, count: number): Tracked[] {
  return Array.from({ length: count }, (_, i) => track(pool.run(request(i + 1))));
}

describe('the sandbox pool with fake processes', () => {
  it('a result settles its task once: a second RESULT for it is ignored, and an exit does not hand it back', async () => {
    const { pool, spawner } = await startPool(1, 2);
    const [task] = runCalls(pool, 1);
    const sandbox = spawner.slot(0);
    assert.deepEqual(sandbox.sentIds(), [1]);
    sandbox.answer(1, answerFor(7));
    assert.deepEqual(await task?.done, answerFor(7));
    sandbox.answer(1, answerFor(8));
    assert.equal(sandbox.busy, 0);
    assert.equal(sandbox.state, 'ready');
    assert.equal(pool.busyWorkers, 0);
    const replacement = spawner.next(0);
    sandbox.die();
    (await replacement).becomeReady();
    assert.deepEqual(spawner.slot(0).sentIds(), [], 'nothing is sent again');
    await pool.close();
  });

  it('a death with no culprit sends each task again once, alone on a held process, and fails it if that one dies too', async () => {
    const { pool, spawner } = await startPool(2, 2);
    const [t1, t2, t3, t4] = runCalls(pool, 4);
    const [a, b] = [spawner.slot(0), spawner.slot(1)];
    assert.deepEqual(
      [a.sentIds(), b.sentIds()],
      [
        [1, 3],
        [2, 4],
      ],
    );
    a.die();
    // The one process left is busy: held (no new tasks) until it falls idle for the retry.
    assert.equal(b.state, 'held');
    const t5 = track(pool.run(request(5)));
    assert.equal(pool.queueSize, 3);
    b.answer(2, answerFor(2));
    assert.deepEqual(b.sentIds(), [2, 4], 'a held process takes nothing new');
    b.answer(4, answerFor(4));
    assert.equal(b.state, 'retrying');
    assert.deepEqual(b.sentIds(), [2, 4, 1], 'the first task sent is retried first, alone');
    b.answer(1, answerFor(1));
    assert.equal(b.state, 'retrying');
    assert.deepEqual(b.sentIds(), [2, 4, 1, 3], 'then the next, alone too');
    b.die();
    await settle();
    assert.deepEqual([t1?.outcome, t2?.outcome, t4?.outcome], [answerFor(1), answerFor(2), answerFor(4)]);
    const twice = failure(t3);
    assert.equal(twice.code, 'UNAVAILABLE');
    assert.match(twice.message, /^the sandbox process running this call's script ended twice \(signal SIGKILL\)/);
    assert.equal(t5.outcome, 'pending');
    const replacement = await spawner.next(0);
    replacement.becomeReady();
    assert.equal(replacement.state, 'ready', 'a task never retried runs beside others');
    assert.deepEqual(replacement.sentIds(), [5]);
    await pool.close();
    await settle();
    assert.deepEqual(failure(t5).toData(), { code: 'UNAVAILABLE', message: 'the plugin is shutting down' });
  });

  it('a task sent again after its process died is charged none of the dead attempt: a bystander keeps its whole time limit', async () => {
    const { pool, spawner } = await startPool(1, 2);
    const bystander = request(1);
    const done = track(pool.run(bystander));
    const a = spawner.slot(0);
    assert.deepEqual(a.sentIds(), [1]);
    const replacement = spawner.next(0);
    a.die();
    (await replacement).becomeReady();
    assert.deepEqual(spawner.slot(0).sentIds(), [1]);
    assert.equal(bystander.budget.spentMs, 0);
    spawner.slot(0).answer(1, answerFor(1));
    assert.deepEqual(await done.done, answerFor(1));
    await pool.close();
  });

  it('a named culprit fails only its task; its bystanders run again first, in the order they were sent', async () => {
    const { pool, spawner } = await startPool(1, 3);
    const tasks = runCalls(pool, 5);
    const sandbox = spawner.slot(0);
    assert.deepEqual(sandbox.sentIds(), [1, 2, 3]);
    sandbox.retire({ reason: 'stuck', taskIds: [2], detail: 'a sandbox thread stopped responding past its time limit' });
    assert.equal(sandbox.state, 'ending');
    assert.equal(sandbox.terminated, 1);
    const replacement = spawner.next(0);
    sandbox.die();
    const next = await replacement;
    next.becomeReady();
    assert.deepEqual(next.sentIds(), [1, 3, 4], 'bystanders first, then the queue in its order');
    for (const id of [1, 3, 4]) next.answer(id, answerFor(id));
    assert.deepEqual(next.sentIds(), [1, 3, 4, 5]);
    next.answer(5, answerFor(5));
    await settle();
    const culprit = failure(tasks[1]);
    assert.equal(culprit.code, 'DEADLINE_EXCEEDED');
    assert.equal(
      culprit.message,
      'the script stopped responding past its time limit of 1000 ms (SSE_SCRIPT_TIMEOUT_MS) and its sandbox was replaced',
    );
    assert.deepEqual(
      [0, 2, 3, 4].map((i) => tasks[i]?.outcome),
      [1, 3, 4, 5].map(answerFor),
    );
    assert.equal(pool.restartsFor('stuck'), 1);
    await pool.close();
  });
});

describe('a sandbox process that sends what the front cannot read', () => {
  const malformed: [string, (send: (kind: FrameKind, id: number, payload: Buffer) => void) => void][] = [
    [
      'a RESULT failure whose error code is not one of ours',
      (send) => send(Frame.RESULT, 1, failurePayload({ code: 'NOPE', message: 'x' })),
    ],
    ['a RESULT failure whose message is not text', (send) => send(Frame.RESULT, 1, failurePayload({ code: 'INTERNAL', message: 42 }))],
    ['a RESULT failure that is not JSON', (send) => send(Frame.RESULT, 1, Buffer.concat([Buffer.of(0), Buffer.from('{nope')]))],
    ['a RESULT of an unknown outcome byte', (send) => send(Frame.RESULT, 1, Buffer.of(7))],
    ['a READY once more', (send) => send(Frame.READY, 0, Buffer.from('{"threads":1}'))],
    ['a RETIRE with an unknown reason', (send) => send(Frame.RETIRE, 0, Buffer.from('{"reason":"bored","taskIds":[],"detail":""}'))],
  ];
  for (const [name, sendBad] of malformed) {
    it(`${name}: that process is ended (protocol) and its task runs again elsewhere`, async () => {
      const { pool, spawner } = await startPool(2, 1);
      const [task] = runCalls(pool, 1);
      const [a, b] = [spawner.slot(0), spawner.slot(1)];
      sendBad((kind, id, payload) => a.deliverRaw(kind, id, payload));
      assert.equal(a.state, 'ending');
      assert.equal(a.terminated, 1);
      assert.equal(task?.outcome, 'pending');
      a.die();
      assert.equal(b.state, 'retrying');
      b.answer(1, answerFor(1));
      assert.deepEqual(await task?.done, answerFor(1));
      assert.equal(pool.restartsFor('protocol'), 1);
      await pool.close();
    });
  }
});

function failurePayload(error: unknown): Buffer {
  const failure = { error, scriptMs: 0, isolateRebuilt: false, timedOut: false };
  return Buffer.concat([Buffer.of(0), Buffer.from(JSON.stringify(failure))]);
}
