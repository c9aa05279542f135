/**
 * The scheduler (src/sandboxes/pool.ts) and the handles that own their tasks
 * (src/sandboxes/sandbox-handle.ts), driven through fake processes (test/helpers/fake-sandbox.ts):
 * the test delivers results, retirements and exits in the order it wants. A result settles its task
 * once; a death with no culprit sends each task again once, alone on a process, and fails it if that
 * one dies too; a named culprit fails only its own task and its bystanders run again; tasks sent
 * back go first, in the order they were sent. A spare takes a dead process's slot at once, and a
 * suspect that ran long runs again alone on a spare. No clock: the tests wait for events, never for
 * time (a fake death may say it happened later than now).
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

function request(callId: number, host = 'h'): TaskRequest {
  return {
    callId,
    owner: { host, appId: 'app', userId: 'user' },
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

async function startPool(
  processes: number,
  threads: number,
  spareSandboxes = 0,
  queue: { maxQueue: number; hostSharePercent?: number } = { maxQueue: 100 },
): Promise<{ pool: SandboxPool; spawner: FakeSpawner }> {
  const spawner = new FakeSpawner();
  const settings = {
    workers: processes * threads,
    sandboxProcesses: processes,
    spareSandboxes,
    memoryLimitMb: 64,
    scriptTimeoutMs: 1_000,
    sandboxMemoryMb: undefined,
    ...queue,
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
  it('a full queue makes room for a host with nothing waiting by refusing the newest task of the host waiting most', async () => {
    const { pool } = await startPool(1, 1, 0, { maxQueue: 4 });
    const fromHost = (callId: number, host: string): TaskRequest => ({ ...request(callId), owner: { host, appId: 'app', userId: 'user' } });
    // One runs on the thread, four wait: the queue is full, all of host a.
    const tasks = [1, 2, 3, 4, 5].map((callId) => track(pool.run(fromHost(callId, 'a'))));
    await settle();
    assert.equal(pool.queueSize, 4);
    assert.equal(pool.saturatedFor('a'), true);
    assert.equal(pool.saturatedFor('b'), false);
    const fromB = track(pool.run(fromHost(6, 'b')));
    await settle();
    assert.equal(fromB.outcome, 'pending');
    assert.match(failure(tasks[4]).message, /^the plugin is busy: 4 chunks are already waiting/);
    assert.deepEqual(
      tasks.slice(0, 4).map((task) => task.outcome),
      ['pending', 'pending', 'pending', 'pending'],
    );
    // a (3 waiting) cannot take b's place back (1 waiting): refused as before.
    const again = track(pool.run(fromHost(7, 'a')));
    await settle();
    assert.match(failure(again).message, /^the plugin is busy: 4 chunks are already waiting/);
    assert.equal(fromB.outcome, 'pending');
  });

  it("refuses a host's task past its share of the queue, busy, while another host's still queues", async () => {
    const { pool } = await startPool(1, 1, 0, { maxQueue: 4, hostSharePercent: 50 });
    const fromHost = (callId: number, host: string): TaskRequest => ({ ...request(callId), owner: { host, appId: 'app', userId: 'user' } });
    // The one thread takes the first task; two more of host a wait, the third is past a's share of 4.
    const tasks = [1, 2, 3, 4].map((callId) => track(pool.run(fromHost(callId, 'a'))));
    await settle();
    assert.deepEqual(
      tasks.slice(0, 3).map((task) => task.outcome),
      ['pending', 'pending', 'pending'],
    );
    assert.match(
      failure(tasks[3]).message,
      /^the plugin is busy: chunks of calls from a already fill their host's share of the queue, 50% of 4/,
    );
    const other = track(pool.run(fromHost(5, 'b')));
    await settle();
    assert.equal(other.outcome, 'pending');
    assert.equal(pool.queueSize, 3);
  });

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

  it('asks a task that runs long back when another host waits: that host goes first, then the task runs again from its start', async () => {
    const { pool, spawner } = await startPool(1, 1);
    const fromHost = (callId: number, host: string): TaskRequest => ({ ...request(callId), owner: { host, appId: 'app', userId: 'user' } });
    const long = track(pool.run(fromHost(1, 'a')));
    const other = track(pool.run(fromHost(2, 'b')));
    const sandbox = spawner.slot(0);
    // Asked back once it has run YIELD_AFTER_MS (an event the test waits for; the pool looks every 50 ms).
    while (sandbox.yielded.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(sandbox.yielded, [1]);
    sandbox.answer(1, {
      ok: false,
      error: { code: 'ABORTED', message: 'asked back' },
      scriptMs: 0,
      isolateRebuilt: false,
      timedOut: false,
    });
    await settle();
    assert.equal(long.outcome, 'pending', 'a task asked back settled its call');
    assert.deepEqual(sandbox.sentIds(), [1, 2]);
    sandbox.answer(2, answerFor(2));
    await settle();
    assert.deepEqual(other.outcome, answerFor(2));
    assert.deepEqual(sandbox.sentIds(), [1, 2, 1]);
    sandbox.answer(1, answerFor(1));
    assert.deepEqual(await long.done, answerFor(1));
    assert.equal(pool.yieldedTasks, 1);
    assert.deepEqual(sandbox.yielded, [1], 'the task sent again was asked back again');
    await pool.close();
  });

  it('fails a task a sandbox answers ABORTED for unasked, instead of sending it again and again', async () => {
    const { pool, spawner } = await startPool(1, 1);
    const [task] = runCalls(pool, 1);
    spawner
      .slot(0)
      .answer(1, { ok: false, error: { code: 'ABORTED', message: 'forged' }, scriptMs: 0, isolateRebuilt: false, timedOut: false });
    await settle();
    assert.match(failure(task).message, /a sandbox stopped a task the front had not asked back/);
    assert.deepEqual(spawner.slot(0).sentIds(), [1]);
    assert.equal(pool.yieldedTasks, 0);
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
    const replacement = spawner.next(0);
    sandbox.retire({ reason: 'stuck', taskIds: [2], detail: 'a sandbox thread stopped responding past its time limit' });
    // Killed: done with at once (nothing it does is read any more), its tasks handed back.
    assert.equal(sandbox.state, 'exited');
    assert.equal(sandbox.terminated, 1);
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

describe('the spare sandbox process', () => {
  it('takes over the slot of a process that dies: its tasks and the queue go to it at once, and a new spare starts', async () => {
    const { pool, spawner } = await startPool(1, 2, 1);
    const [slot, spare] = [spawner.slot(0), spawner.slot(1)];
    assert.deepEqual(
      pool.spareProcesses().map((p) => [p.index, p.state, p.busy]),
      [[1, 'ready', 0]],
    );
    const [t1, t2, t3] = runCalls(pool, 3);
    assert.deepEqual(slot.sentIds(), [1, 2]);
    assert.deepEqual(spare.sentIds(), [], 'a spare takes no new work');
    const newSpare = spawner.next(1);
    slot.die();
    // Both ran a moment: short suspects, each sent again alone to the process now in the slot.
    assert.deepEqual(
      pool.processes().map((p) => [p.pid, p.state]),
      [[spare.pid, 'retrying']],
    );
    assert.deepEqual(spare.sentIds(), [1]);
    spare.answer(1, answerFor(1));
    assert.deepEqual(spare.sentIds(), [1, 2]);
    spare.answer(2, answerFor(2));
    assert.deepEqual(spare.sentIds(), [1, 2, 3], 'then the queue, beside others');
    spare.answer(3, answerFor(3));
    await settle();
    assert.deepEqual(
      [t1, t2, t3].map((t) => t?.outcome),
      [1, 2, 3].map(answerFor),
    );
    (await newSpare).becomeReady();
    assert.deepEqual(
      pool.spareProcesses().map((p) => [p.index, p.state]),
      [[1, 'ready']],
    );
    assert.equal(pool.threads, 2, 'the spare is not counted among the threads');
    await pool.close();
  });

  it('takes the slot of a process whose main thread is held: the tasks waiting behind the hold go to it, pool-only', async () => {
    const { pool, spawner } = await startPool(1, 3, 1);
    const [slot, spare] = [spawner.slot(0), spawner.slot(1)];
    const [t1, t2, t3] = runCalls(pool, 3);
    assert.deepEqual(slot.sentIds(), [1, 2, 3]);
    assert.deepEqual(slot.poolOnly, [false, false, false]);
    slot.held(1);
    assert.deepEqual(
      pool.processes().map((p) => p.pid),
      [spare.pid],
    );
    assert.deepEqual(spare.sentIds(), [2, 3], 'the tasks written after the held one, in order');
    assert.deepEqual(spare.poolOnly, [true, true], 'no main thread takes a task while the front pauses the fast path');
    assert.equal(slot.busy, 1, 'the held process keeps only the held task');
    slot.answer(2, answerFor(99));
    spare.answer(2, answerFor(2));
    spare.answer(3, answerFor(3));
    slot.answer(1, answerFor(1));
    await settle();
    assert.deepEqual(
      [t1, t2, t3].map((t) => t?.outcome),
      [1, 2, 3].map(answerFor),
    );
    assert.equal(pool.retirements, 1);
    const [t4] = [track(pool.run(request(4)))];
    assert.deepEqual(spare.poolOnly, [true, true, true]);
    spare.answer(4, answerFor(4));
    assert.deepEqual(await t4?.done, answerFor(4));
    await pool.close();
  });

  it('sends every task pool-only after a process died running tasks: its replacement knows nothing of a hold', async () => {
    const { pool, spawner } = await startPool(1, 2, 1);
    const [slot, spare] = [spawner.slot(0), spawner.slot(1)];
    const [t1] = runCalls(pool, 1);
    assert.deepEqual(slot.poolOnly, [false]);
    slot.retire({ reason: 'stuck', taskIds: [1], detail: "the sandbox process's main thread stopped responding" });
    await settle();
    assert.equal(failure(t1).code, 'DEADLINE_EXCEEDED');
    const [t2] = [track(pool.run(request(2)))];
    assert.deepEqual(spare.sentIds(), [2]);
    assert.deepEqual(spare.poolOnly, [true]);
    spare.answer(2, answerFor(2));
    assert.deepEqual(await t2?.done, answerFor(2));
    await pool.close();
  });

  it('runs suspects that ran long alone on the next spare, one at a time, while the slot serves new calls at once', async () => {
    const { pool, spawner } = await startPool(1, 2, 1);
    const [slot, spare] = [spawner.slot(0), spawner.slot(1)];
    const [t1, t2] = runCalls(pool, 2);
    const newSpare = spawner.next(1);
    // Both had run 150 ms when the process died: likely the script that killed it, so neither may hold up the slot.
    slot.die({}, 150);
    const t3 = track(pool.run(request(3)));
    assert.deepEqual(spare.sentIds(), [3], 'the spare took the slot and serves a new call at once');
    assert.equal(spare.state, 'ready');
    assert.equal(pool.queueSize, 2);
    const quarantine = await newSpare;
    quarantine.becomeReady();
    assert.deepEqual(quarantine.sentIds(), [1], 'alone on the new spare');
    assert.equal(quarantine.state, 'retrying');
    assert.deepEqual(
      pool.processes().map((p) => p.pid),
      [spare.pid],
      'the quarantine is no slot',
    );
    const replacement = spawner.next(1);
    quarantine.die();
    await settle();
    const twice = failure(t1);
    assert.equal(twice.code, 'UNAVAILABLE');
    (await replacement).becomeReady();
    assert.deepEqual(spawner.slot(1).sentIds(), [2], 'the next suspect, alone on the next spare');
    spawner.slot(1).answer(2, answerFor(2));
    spare.answer(3, answerFor(3));
    await settle();
    assert.deepEqual([t2?.outcome, t3.outcome], [answerFor(2), answerFor(3)]);
    assert.equal(spawner.slot(1).state, 'ready', 'back to a spare');
    await pool.close();
  });

  it('runs quarantined suspects in turn, earliest first: later deaths do not keep one waiting', async () => {
    const { pool, spawner } = await startPool(1, 2, 1);
    const [slot, spare] = [spawner.slot(0), spawner.slot(1)];
    // A bystander's 300 ms chart and a script that runs out of memory, from two hosts, die together.
    const bystander = track(pool.run(request(1, 'engine')));
    const killer = track(pool.run(request(2, 'attacker-1')));
    const second = spawner.next(1);
    slot.die({}, 300);
    // The spare took the slot; another killer kills it too, before the new spare is ready.
    const again = track(pool.run(request(3, 'attacker-2')));
    assert.deepEqual(spare.sentIds(), [3]);
    const starting = await second;
    const third = spawner.next(1);
    spare.die({}, 300);
    starting.becomeReady();
    const quarantine = await third;
    quarantine.becomeReady();
    // Served last in first, every later death's suspect went before the bystander's: 41-59 s under two
    // clients running out of memory in a loop.
    assert.deepEqual(quarantine.sentIds(), [1], 'the earliest suspect first');
    quarantine.answer(1, answerFor(1));
    await settle();
    assert.deepEqual(bystander.outcome, answerFor(1));
    assert.deepEqual(quarantine.sentIds(), [1, 2], 'then the next, alone');
    assert.deepEqual([killer.outcome, again.outcome], ['pending', 'pending']);
    await pool.close();
  });

  it('a task past its time limit when its process met a memory bound fails naming the time limit, the one it passed first', async () => {
    const { pool, spawner } = await startPool(1, 2, 1);
    const [late] = runCalls(pool, 1);
    // CALL's time limit is 1000 ms: V8 gave up on the process's heap 1001 ms after the task was sent.
    spawner.slot(0).die({ stderrTail: 'FATAL ERROR: Ineffective mark-compacts near heap limit Allocation failed' }, 1_001);
    await settle();
    const error = failure(late);
    assert.equal(error.code, 'DEADLINE_EXCEEDED');
    assert.equal(
      error.message,
      'the script stopped responding past its time limit of 1000 ms (SSE_SCRIPT_TIMEOUT_MS) and its sandbox was replaced',
    );
    assert.deepEqual(spawner.slot(1).sentIds(), [], 'not run again');
    await pool.close();
  });

  it('takes an empty slot as soon as it is ready, when the slot died while no spare was', async () => {
    const { pool, spawner } = await startPool(1, 1, 1);
    const firstSpare = spawner.slot(1);
    const newSpare = spawner.next(1);
    spawner.slot(0).die({ code: 0, signal: null }); // the spare takes over
    const second = await newSpare;
    const spareAgain = spawner.next(1);
    firstSpare.die({ code: 0, signal: null }); // the slot dies again before the new spare is ready
    assert.deepEqual(pool.processes(), []);
    const [task] = runCalls(pool, 1);
    second.becomeReady();
    assert.deepEqual(
      pool.processes().map((p) => p.pid),
      [second.pid],
    );
    assert.deepEqual(second.sentIds(), [1]);
    second.answer(1, answerFor(1));
    assert.deepEqual(await task?.done, answerFor(1));
    (await spareAgain).becomeReady();
    assert.deepEqual(
      pool.spareProcesses().map((p) => p.state),
      ['ready'],
    );
    await pool.close();
  });

  it('ends with the plugin: close stops the spare too, and nothing is started after', async () => {
    const { pool, spawner } = await startPool(1, 1, 1);
    await pool.close();
    assert.deepEqual(
      spawner.all.map((s) => s.state),
      ['exited', 'exited'],
    );
    assert.equal(spawner.all.length, 2);
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
      assert.equal(a.state, 'exited');
      assert.equal(a.terminated, 1);
      assert.equal(task?.outcome, 'pending');
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
