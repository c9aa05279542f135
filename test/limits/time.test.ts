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
import { assertServing, bigRow, DataType, evalRows, evalText, textOf, timed } from '../helpers/sandbox-calls';

const LIMIT_MS = 1_000;
/** isolated-vm's timeout fires on time; the parent kills a worker at the budget + 500 ms at the latest. */
const SLACK_MS = 500;
const TEXT_IN = { paramType: DataType.STRING };

function assertDeadline(result: CallResult, ms: number): void {
  assert.equal(result.code, status.DEADLINE_EXCEEDED, `expected DEADLINE_EXCEEDED, got ${result.code} ${result.details}`);
  assert.match(result.details, /1000 ms/);
  assert.match(result.details, /SSE_SCRIPT_TIMEOUT_MS/);
  assert.ok(ms < LIMIT_MS + SLACK_MS, `the call took ${Math.round(ms)} ms`);
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
    'a microtask loop': 'Promise.resolve().then(function loop() { return Promise.resolve().then(loop); })',
    'a promise whose callback never ends': 'Promise.resolve().then(() => { for (;;) {} })',
    'an async function that never ends': '(async () => { for (;;) {} })()',
    'an async function that never ends after an await': '(async () => { await null; for (;;) {} })()',
    'a rejected promise handler that never ends': 'Promise.reject(new Error("x")).catch(() => { for (;;) {} })',
  };
  for (const [name, script] of Object.entries(endless)) {
    it(`${name} fails with DEADLINE_EXCEEDED and the next call works`, async () => {
      const { value, ms } = await timed(() => evalText(t.client, script));
      assertDeadline(value, ms);
      assert.equal(await textOf(t.client, 'args[0] + 41'), '42');
    });
  }

  it('Atomics.wait has nothing to wait on: SharedArrayBuffer is gone and a plain buffer throws at once', async () => {
    assert.equal(await textOf(t.client, 'typeof SharedArrayBuffer + "," + typeof WebAssembly'), 'undefined,undefined');
    const { value, ms } = await timed(() => evalText(t.client, 'Atomics.wait(new Int32Array(4), 0, 0, 5000)'));
    assert.equal(value.code, status.INVALID_ARGUMENT);
    assert.match(value.details, /TypeError: .*not a shared typed array/);
    assert.ok(ms < 500, `took ${Math.round(ms)} ms`);
    const viaMemory = await evalText(
      t.client,
      'Atomics.wait(new Int32Array(new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer), 0, 0)',
    );
    assert.equal(viaMemory.code, status.INVALID_ARGUMENT);
    assert.match(viaMemory.details, /ReferenceError: WebAssembly is not defined/);
  });

  it('a returned promise or thenable is never awaited: it converts at once (STRING "{}", NUMERIC null)', async () => {
    const { value: text, ms } = await timed(() => textOf(t.client, '({ then(resolve) { for (;;) {} } })'));
    assert.equal(text, '{}');
    assert.ok(ms < 500, `took ${Math.round(ms)} ms`);
    assert.equal(await textOf(t.client, 'Promise.resolve(42)'), '{}');
    const numeric = await evalRows(t.client, 'new Promise(() => {})', [[num(1)]]);
    assert.equal(numeric.code, status.OK);
    assert.ok(Number.isNaN(numbers(numeric)[0]));
  });

  it('the budget is shared by all chunks of a call: six chunks of 300 ms each fail a 1000 ms budget', async () => {
    // Each row is over 256 KiB, so each is a chunk (task) of its own; each alone is well within the limit.
    const rows = Array.from({ length: 6 }, () => bigRow(300_000));
    const script = 'const end = Date.now() + 300; while (Date.now() < end); return args[0].length;';
    const { value, ms } = await timed(() => evalRows(t.client, script, rows, TEXT_IN));
    assertDeadline(value, ms);
  });

  it('a chunk that waited in the queue starts with what the call has left, not a stale full budget', async () => {
    // Rows 0 and 1 run in parallel for 900 ms each (1800 ms of the 1000 ms budget); row 2 loops for
    // ever. Had it kept the budget it was queued with, the call would last about 1.9 s.
    const rows = [bigRow(300_000, 'a'), bigRow(300_000, 'a'), bigRow(300_000, 'b')];
    const script = 'if (args[0][0] === "b") for (;;) {} const end = Date.now() + 900; while (Date.now() < end); return 1;';
    const { value, ms } = await timed(() => evalRows(t.client, script, rows, TEXT_IN));
    assertDeadline(value, ms);
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
    const loop = evalText(t.client, 'for (;;) {}');
    await new Promise((resolve) => setTimeout(resolve, 100));
    const { value, ms } = await timed(() =>
      evalRows(t.client, 'args[0]', [[str('hi')]], { paramType: DataType.STRING, returnType: DataType.STRING }),
    );
    assert.equal(value.code, status.OK, value.details);
    assert.deepEqual(strings(value), ['hi']);
    assert.ok(ms < 500, `a normal call waited ${Math.round(ms)} ms behind a loop`);
    assert.equal((await loop).code, status.DEADLINE_EXCEEDED);
  });

  it('keeps serving on every worker after all of the above', async () => {
    await assertServing(t.client);
    assert.equal(t.plugin.pool.queueSize, 0);
  });
});
