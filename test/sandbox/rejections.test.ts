/**
 * Promises a script rejects and never handles. isolated-vm reads such a reason after the time limit
 * is disarmed, so the sandbox never lets it (workers/thread/rejection-watch.ts): a trap in a reason
 * must not run outside the limit nor cost the sandbox process, a rejection the runtime can see still
 * fails the call as the script's own error, and a handled one does not; nor may a script reach the
 * top level, where what it throws is read the same way. The trap cases that run out of time are in
 * test/limits/time.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { num, numbers } from '../helpers/qlik-client';
import { evalRows, evalText, FunctionType, textOf } from '../helpers/sandbox-calls';

const NEVER_HANDLED = '(a promise the script rejected and never handled)';
/** A reason isolated-vm would have read forever: any property read loops. */
const TRAP = 'new Proxy({}, { get() { for (;;) {} } })';

describe('sandbox: unhandled rejections', () => {
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_SCRIPT_TIMEOUT_MS: '1000' });
  });
  after(async () => t.stop());

  /** The call failed as the script's error, no sandbox process was replaced, and the next call answers. */
  async function assertRejected(script: string, details: string): Promise<void> {
    const restarts = t.plugin.pool.restarts;
    const result = await evalText(t.client, script);
    assert.equal(result.code, status.INVALID_ARGUMENT, result.details);
    assert.equal(result.details, `${details} ${NEVER_HANDLED}`);
    assert.equal(t.plugin.pool.restarts, restarts, 'a sandbox process was replaced');
    assert.equal(await textOf(t.client, 'args[0] + 41'), '42');
  }

  it('a rejection nobody handles fails the call with its name and message', async () => {
    await assertRejected('(Promise.reject(new Error("boom")), 1)', 'Error: boom');
    await assertRejected('(new Promise((resolve, reject) => reject(new RangeError("executor"))), 1)', 'RangeError: executor');
    await assertRejected('(Promise.resolve().then(() => { throw new TypeError("late"); }), 1)', 'TypeError: late');
    await assertRejected('(Promise.all([Promise.reject(new Error("one of all"))]), 1)', 'Error: one of all');
    await assertRejected('(async () => { throw new Error("async result"); })()', 'Error: async result');
    await assertRejected("import('node:fs')", 'Error: Not supported');
  });

  it('a reason whose stack getter never ends fails the call without its stack being read', async () => {
    await assertRejected('(Promise.resolve().then(() => { throw { name: "E", get stack() { for (;;) {} } }; }), 1)', 'E: [object Object]');
  });

  it('a reason whose getters leave a rejection of their own is described, and that one never read', async () => {
    // The reason's name is read after the run, in an entry of its own: what its getter rejects must
    // not be read with no limit either.
    const reason = `{ get name() { (async () => { throw ${TRAP}; })(); return "Sly"; }, message: "m" }`;
    await assertRejected(`(Promise.reject(${reason}), 1)`, 'Sly: m');
  });

  it('an aggregation that leaves a rejection fails the same way', async () => {
    const restarts = t.plugin.pool.restarts;
    const script = '(Promise.reject(new Error("aggregate")), args[0].length)';
    const result = await evalRows(t.client, script, [[num(1)], [num(2)]], { functionType: FunctionType.AGGREGATION });
    assert.equal(result.code, status.INVALID_ARGUMENT, result.details);
    assert.equal(result.details, `Error: aggregate ${NEVER_HANDLED}`);
    assert.equal(t.plugin.pool.restarts, restarts);
  });

  it('a handled rejection does not fail the call, whichever way it was handled', async () => {
    const handled = [
      'Promise.reject(new Error("x")).catch(() => 0)',
      'Promise.reject(new Error("x")).then(() => 0, () => 0)',
      '(async () => { try { await Promise.reject(new Error("x")); } catch {} })()',
      'Promise.all([Promise.reject(new Error("x"))]).catch(() => 0)',
      '{ const p = Promise.reject(new Error("x")); Promise.resolve().then(() => p.catch(() => 0)); return 1; }',
    ];
    for (const script of handled) {
      const result = await evalRows(t.client, script, [[num(1)]]);
      assert.equal(result.code, status.OK, `${script}: ${result.details}`);
      assert.equal(numbers(result).length, 1);
    }
  });

  it('a script that closes its wrapper to throw at the top level is refused before any of it runs', async () => {
    // Its top-level statements would run when the script is instantiated, and isolated-vm would read
    // the thrown value with no time limit.
    const restarts = t.plugin.pool.restarts;
    const result = await evalText(t.client, `1); }); throw { get message() { for (;;) {} } }; (function () { return (1`);
    assert.equal(result.code, status.INVALID_ARGUMENT, result.details);
    assert.match(result.details, /^SyntaxError: the script closes the function it runs in/);
    assert.equal(t.plugin.pool.restarts, restarts, 'a sandbox process was replaced');
    assert.equal(await textOf(t.client, 'args[0] + 41'), '42');
  });

  it('a rejection V8 made itself that the script drops is never read: the call answers, the process stays', async () => {
    // An async function's promise and import()'s are made inside V8, where the runtime cannot watch
    // them; isolated-vm would have read these reasons with no time limit.
    const restarts = t.plugin.pool.restarts;
    assert.equal(await textOf(t.client, `((async () => { throw ${TRAP}; })(), 1)`), '1');
    assert.equal(await textOf(t.client, "(Error.prepareStackTrace = () => { for (;;) {} }, import('node:fs'), 1)"), '1');
    assert.equal(t.plugin.pool.restarts, restarts, 'a sandbox process was replaced');
    assert.equal(await textOf(t.client, 'args[0] + 41'), '42');
  });
});
