/**
 * SSE_SCRIPT_TIMEOUT_MS bounds the script time of a whole call: endless loops, Atomics.wait,
 * microtask loops, promises, thenables and async functions cannot hold a worker past it, and the
 * budget is shared by all chunks of a call (not given to each).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { type CallResult, num, numbers, str, strings } from '../helpers/qlik-client';
import { assertServing, bigRow, DataType, evalRows, evalText, textOf, waitFor } from '../helpers/sandbox-calls';

const LIMIT_MS = 1_000;
const TIME_LIMIT = 'the script ran past its time limit of 1000 ms (SSE_SCRIPT_TIMEOUT_MS)';
const TEXT_IN = { paramType: DataType.STRING };

/**
 * The call failed on the time limit itself: isolated-vm's timeout stopped the script and the sandbox
 * process was kept. (Had the script outrun it, the watchdog would have replaced the process, which
 * the restart count shows, and the message would say it stopped responding.) No wall-clock bound: the
 * status and the count say which limit ended the call on any machine.
 */
function assertDeadline(t: TestPlugin, result: CallResult, restartsBefore: number): void {
  assert.equal(result.code, status.DEADLINE_EXCEEDED, `expected DEADLINE_EXCEEDED, got ${result.code} ${result.details}`);
  assert.equal(result.details, TIME_LIMIT);
  assert.equal(t.plugin.pool.restarts, restartsBefore, 'a sandbox process was replaced: the time limit did not stop the script');
}

/** Runs a call and asserts it failed on the time limit alone. */
async function assertTimesOut(t: TestPlugin, call: () => Promise<CallResult>): Promise<void> {
  const restarts = t.plugin.pool.restarts;
  assertDeadline(t, await call(), restarts);
}

describe('time limit', () => {
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_SCRIPT_TIMEOUT_MS: String(LIMIT_MS) });
  });
  after(async () => t.stop());

  const endless: Record<string, string> = {
    'an endless loop': 'for (;;) {}',
    'an endless loop in a function body': 'let i = 0; while (true) { i++; } return i;',
    'endless recursion through try/finally': 'function f() { try { f(); } finally { f(); } } f(); return 1;',
    // Each turn queues the next and drops its promise: nothing grows, so only the time limit can end it.
    'a microtask loop': '{ const loop = () => { Promise.resolve().then(loop); }; loop(); return 1; }',
    'a promise whose callback never ends': 'Promise.resolve().then(() => { for (;;) {} })',
    'an async function that never ends': '(async () => { for (;;) {} })()',
    'an async function that never ends after an await': '(async () => { await null; for (;;) {} })()',
    'a rejected promise handler that never ends': 'Promise.reject(new Error("x")).catch(() => { for (;;) {} })',
    // isolated-vm reads an unhandled rejection's reason (message, stack, name) after the time limit is
    // disarmed: the runtime reads it first, inside the limit, so a trap in it spends the script's time.
    'an unhandled rejection whose reason is a Proxy that never answers': '(Promise.reject(new Proxy({}, { get() { for (;;) {} } })), 1)',
    'an unhandled rejection whose message getter never ends': '(Promise.reject({ get message() { for (;;) {} } }), 1)',
    'an unhandled rejection inside a then handler whose reason never answers':
      '(Promise.resolve().then(() => { throw new Proxy({}, { get() { for (;;) {} } }); }), 1)',
  };
  for (const [name, script] of Object.entries(endless)) {
    it(`${name} fails with DEADLINE_EXCEEDED and the next call works`, async () => {
      await assertTimesOut(t, () => evalText(t.client, script));
      assert.equal(await textOf(t.client, 'args[0] + 41'), '42');
    });
  }

  it('a microtask loop that keeps every promise meets the time limit or the memory limit, and the next call works', async () => {
    // Each turn returns a promise the one before waits on: the chain grows until one of two limits
    // ends it, and which comes first depends only on how fast this machine allocates. Both are right.
    const chain = 'Promise.resolve().then(function loop() { return Promise.resolve().then(loop); })';
    const result = await evalText(t.client, chain);
    if (result.code === status.RESOURCE_EXHAUSTED) assert.match(result.details, /memory limit of \d+ MB \(SSE_MEMORY_LIMIT_MB\)/);
    else {
      assert.equal(result.code, status.DEADLINE_EXCEEDED, result.details);
      assert.equal(result.details, TIME_LIMIT);
    }
    assert.equal(await textOf(t.client, 'args[0] + 41'), '42');
  });

  it('Atomics.wait has nothing to wait on: SharedArrayBuffer is gone and a plain buffer throws at once', async () => {
    assert.equal(await textOf(t.client, 'typeof SharedArrayBuffer + "," + typeof WebAssembly'), 'undefined,undefined');
    // Had it waited, its 5 s would have met the 1 s time limit (DEADLINE_EXCEEDED), not a TypeError.
    const value = await evalText(t.client, 'Atomics.wait(new Int32Array(4), 0, 0, 5000)');
    assert.equal(value.code, status.INVALID_ARGUMENT);
    assert.match(value.details, /TypeError: .*not a shared typed array/);
    const viaMemory = await evalText(
      t.client,
      'Atomics.wait(new Int32Array(new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer), 0, 0)',
    );
    assert.equal(viaMemory.code, status.INVALID_ARGUMENT);
    assert.match(viaMemory.details, /ReferenceError: WebAssembly is not defined/);
  });

  it('a returned promise or thenable is never awaited: it converts at once (STRING "{}", NUMERIC null)', async () => {
    // Had the thenable been awaited, its endless loop would have met the time limit instead.
    assert.equal(await textOf(t.client, '({ then(resolve) { for (;;) {} } })'), '{}');
    assert.equal(await textOf(t.client, 'Promise.resolve(42)'), '{}');
    const numeric = await evalRows(t.client, 'new Promise(() => {})', [[num(1)]]);
    assert.equal(numeric.code, status.OK);
    assert.ok(Number.isNaN(numbers(numeric)[0]));
  });

  it('the budget is shared by all chunks of a call: six chunks of 300 ms each fail a 1000 ms budget', async () => {
    // Each row is over 256 KiB, so each is a chunk (task) of its own; each alone is well within the limit.
    const rows = Array.from({ length: 6 }, () => bigRow(300_000));
    const script = 'const end = Date.now() + 300; while (Date.now() < end); return args[0].length;';
    await assertTimesOut(t, () => evalRows(t.client, script, rows, TEXT_IN));
  });

  it('a chunk that waited in the queue starts with what the call has left, not a stale full budget', async () => {
    // Rows "a" spin 600 ms each, side by side; row "b" waits for a free worker and then spins 600 ms
    // too. It starts with the 400 ms the call has left and fails; with the full budget it was queued
    // with, it would succeed and the call would answer OK after 1800 ms of script against 1000 ms.
    const rows = [bigRow(300_000, 'a'), bigRow(300_000, 'a'), bigRow(300_000, 'b')];
    const script = 'const end = Date.now() + 600; while (Date.now() < end); return args[0].length;';
    await assertTimesOut(t, () => evalRows(t.client, script, rows, TEXT_IN));
  });

  it('work within the budget succeeds: 3 chunks of 100 ms', async () => {
    const rows = Array.from({ length: 3 }, () => bigRow(300_000));
    const result = await evalRows(
      t.client,
      'const end = Date.now() + 100; while (Date.now() < end); return args[0].length;',
      rows,
      TEXT_IN,
    );
    assert.equal(result.code, status.OK, result.details);
    assert.deepEqual(numbers(result), [300_000, 300_000, 300_000]);
  });

  it('an endless loop on one worker does not delay a call on the other', async () => {
    const order: string[] = [];
    const loop = evalText(t.client, 'for (;;) {}').then((result) => (order.push('loop'), result));
    await waitFor('the loop running', () => t.plugin.pool.busyWorkers === 1, 10_000);
    const normal = await evalRows(t.client, 'args[0]', [[str('hi')]], { paramType: DataType.STRING, returnType: DataType.STRING });
    order.push('normal');
    assert.equal(normal.code, status.OK, normal.details);
    assert.deepEqual(strings(normal), ['hi']);
    assert.equal((await loop).code, status.DEADLINE_EXCEEDED);
    // An order, not a time: the normal call was answered while the loop still held the other worker.
    assert.deepEqual(order, ['normal', 'loop']);
  });

  it('keeps serving on every worker after all of the above', async () => {
    await assertServing(t.client);
    assert.equal(t.plugin.pool.queueSize, 0);
  });
});
