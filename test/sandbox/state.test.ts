/**
 * Nothing survives from one call to the next, and two calls never see each other: prototype
 * pollution, globals, microtasks and finalizers left behind, SharedArrayBuffer/Atomics. Each check
 * runs enough calls to land on both workers, one after another (same worker again) and at once.
 * Calls of the same script by the same user and app may reuse a context with its globals reset
 * (test/sandbox/context-reuse.test.ts); here every polluting call is a script of its own.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { type CallResult, num, str, strings } from '../helpers/qlik-client';
import { assertServing, DataType, evalRows, evalText, FunctionType, textOf } from '../helpers/sandbox-calls';

const TABLE = { functionType: FunctionType.TENSOR, returnType: DataType.STRING };

/**
 * Runs `script` `times` times one after another (a free worker takes the next call, so these mostly
 * land on the same worker), then `times` at once (spread over both workers); returns every answer.
 */
async function everywhere(t: TestPlugin, script: string, times = 6): Promise<string[]> {
  const answers: string[] = [];
  // A comment makes each call a script of its own: what one leaves must not reach another.
  for (let i = 0; i < times; i++) answers.push(await textOf(t.client, `${script}\n// call ${i}`));
  answers.push(...(await Promise.all(Array.from({ length: times }, (_, i) => textOf(t.client, `${script}\n// call ${times + i}`)))));
  return answers;
}

const POLLUTE = `{
  Array.prototype.polluted = 'array';
  Object.prototype.polluted = 'object';
  String.prototype.trim = function () { return 'hijacked'; };
  JSON.stringify = () => 'hijacked';
  Math.max = () => -1;
  Object.defineProperty(Array.prototype, 'length2', { get() { return 'hijacked'; } });
  Function.prototype.call = function () { return 'hijacked'; };
  return 'polluted';
}`;

const CHECK = `[
  typeof [].polluted, typeof ({}).polluted, ' x '.trim(), JSON.stringify([1]), Math.max(1, 2),
  typeof [].length2, typeof globalThis.leaked, typeof leakedVar, typeof lateMicrotask, typeof finalized
].join()`;
const CLEAN = 'undefined,undefined,x,[1],2,undefined,undefined,undefined,undefined,undefined';

describe('sandbox: no state across calls', () => {
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_SCRIPT_TIMEOUT_MS: '2000' });
  });
  after(async () => t.stop());

  it('prototype pollution of built-ins in one call is gone in the next, on both workers', async () => {
    for (const answer of await everywhere(t, POLLUTE, 3)) assert.equal(answer, 'polluted');
    for (const answer of await everywhere(t, CHECK)) assert.equal(answer, CLEAN);
  });

  it('globals set by one call are gone in the next', async () => {
    for (const answer of await everywhere(t, '{ globalThis.leaked = "secret"; var leakedVar = 1; this.leaked2 = 2; return "set"; }', 3))
      assert.equal(answer, 'set');
    for (const answer of await everywhere(t, CHECK)) assert.equal(answer, CLEAN);
    assert.equal(await textOf(t.client, 'typeof leaked2'), 'undefined');
  });

  it('microtasks queued by a call run within that call and leave nothing for the next', async () => {
    const schedule = `{ Promise.resolve().then(() => { globalThis.lateMicrotask = 1; Array.prototype.polluted = 1; });
      (async () => { await null; await null; Object.prototype.polluted = 1; })(); return 'queued'; }`;
    for (const answer of await everywhere(t, schedule, 3)) assert.equal(answer, 'queued');
    for (const answer of await everywhere(t, CHECK)) assert.equal(answer, CLEAN);
  });

  it('finalizers (the only callbacks that could outlive a call) neither leak state nor hold a worker', async () => {
    const register = `{ const r = new FinalizationRegistry(() => { globalThis.finalized = 1; Array.prototype.polluted = 1; for (;;) {} });
      for (let i = 0; i < 20000; i++) r.register({ a: [i] }, i); return 'registered'; }`;
    for (const answer of await everywhere(t, register, 2)) assert.equal(answer, 'registered');
    // Garbage for the collector, then ordinary calls: they answer promptly and see nothing.
    const churn = '{ let a; for (let i = 0; i < 200000; i++) a = { i }; return "churned"; }';
    for (let i = 0; i < 4; i++) assert.equal(await textOf(t.client, churn), 'churned');
    const restarts = t.plugin.pool.restarts;
    for (const answer of await everywhere(t, CHECK)) assert.equal(answer, CLEAN);
    // A finalizer that ran its endless loop would hold its thread between tasks: the watchdog would
    // call it stuck and replace the sandbox process. A count, not a time.
    assert.equal(t.plugin.pool.restarts, restarts);
    assert.equal(t.plugin.pool.restartsFor('stuck'), 0);
  });

  it('two calls at once never see each other’s globals or rows', async () => {
    // Each call writes its own marker to the global in every row, waits, and reports what it sees.
    const script = `{ if (globalThis.marker !== undefined && globalThis.marker !== args[0]) return 'saw ' + globalThis.marker;
      globalThis.marker = args[0]; const end = Date.now() + 10; while (Date.now() < end); return 'only ' + globalThis.marker; }`;
    const call = (who: string): Promise<CallResult> =>
      evalRows(
        t.client,
        script,
        // 20 rows, not 100: each row needs its (niceness 10) thread scheduled, slow on a busy machine.
        Array.from({ length: 20 }, () => [str(who)]),
        { paramType: DataType.STRING, returnType: DataType.STRING },
      );
    const results = await Promise.all(['alice', 'bob', 'carol', 'dave'].map((who) => call(who)));
    results.forEach((result, i) => {
      const who = ['alice', 'bob', 'carol', 'dave'][i] as string;
      assert.equal(result.code, status.OK, result.details);
      assert.deepEqual(new Set(strings(result)), new Set([`only ${who}`]));
    });
  });

  it('SharedArrayBuffer and Atomics give nothing to share or wait on, in any call', async () => {
    for (const answer of await everywhere(t, 'typeof SharedArrayBuffer + "," + typeof WebAssembly', 3))
      assert.equal(answer, 'undefined,undefined');
    const attempts = [
      'Atomics.wait(new Int32Array(4), 0, 0, 1000)',
      'Atomics.waitAsync(new Int32Array(4), 0, 0, 1000)',
      'Atomics.notify(new Int32Array(new ArrayBuffer(16)), 0) + Atomics.wait(new Int32Array(16), 0, 0)',
    ];
    for (const script of attempts) {
      // A TypeError, not a wait: had it waited its 1000 ms it would answer "timed-out" (OK).
      const result = await evalText(t.client, script);
      assert.equal(result.code, status.INVALID_ARGUMENT, `${script}: ${result.details}`);
      assert.match(result.details, /TypeError/);
    }
    // A growable or transferred ArrayBuffer is still the call's own.
    assert.equal(
      await textOf(t.client, '{ const b = new ArrayBuffer(8); new Int32Array(b)[0] = 7; return new Int32Array(b.slice(0))[0]; }'),
      '7',
    );
  });

  it('state kept in a closure does not leak through the compiled-script cache', async () => {
    const script = '{ globalThis.counter = (globalThis.counter || 0) + 1; return globalThis.counter; }';
    for (const answer of await everywhere(t, script, 4)) assert.equal(answer, '1');
  });

  it('a script that rewrites the built-ins the runtime uses can only fail its own call', async () => {
    const tampering = [
      "{ Object.defineProperty(Array.prototype, '0', { set() {}, get() { return { length: 5 }; }, configurable: true }); return [1, 2]; }",
      "{ Object.getPrototypeOf(Float64Array.prototype).fill = function () { return { length: 1e9 }; }; return [1, 'a']; }",
      "{ Map.prototype.get = () => 5; return { a: 1, b: 'x' }; }",
    ];
    const rows = [[num(1)], [num(2)], [num(3)]];
    for (const script of tampering) {
      const result = await evalRows(t.client, script, rows, TABLE);
      assert.equal(result.code, status.INVALID_ARGUMENT, `${script}: ${result.code} ${result.details}`);
    }
    // Text results are encoded without the array built-ins: this rewrite no longer even bends its own call.
    const text = await evalRows(
      t.client,
      "{ Object.defineProperty(Array.prototype, '1', { set() {}, configurable: true }); return 'text'; }",
      rows,
      TABLE,
    );
    assert.deepEqual([text.code, strings(text)], [0, ['text', 'text', 'text']]);
    const table = await evalRows(t.client, '[args[0], "v" + args[0]]', rows, TABLE);
    assert.equal(table.code, status.OK, table.details);
    assert.deepEqual(
      table.rows.map((row) => row[1]?.strData),
      ['v1', 'v2', 'v3'],
    );
  });

  it('keeps serving', async () => {
    await assertServing(t.client);
    assert.deepEqual(strings(await evalRows(t.client, 'args[0] * 3', [[num(2)]], { returnType: DataType.STRING })), ['6']);
  });
});
