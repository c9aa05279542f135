/**
 * Calls of different apps and users share a thread's isolate (each gets its own context): its
 * microtask queue, its heap with the caches that live as long as it, and V8's protectors (the fast
 * paths of built-ins). What one tenant leaves there must not cost another tenant time, memory or
 * speed, and no code of a script may run outside a time limit. One sandbox process with one thread and
 * no fast path, so every call lands on the isolate the previous one used.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { type CallResult, DataType, FunctionType, num, type QlikClient, strings } from '../helpers/qlik-client';

const LIMIT_MS = 500;
/**
 * The fast path off: its main thread has an isolate of its own, and which of the two a call takes
 * depends on what ran before (a burst of new scripts goes to the pool thread once it has had its share
 * of the main thread), so the pool thread's isolate is the one every call lands on. Both are built by
 * the same code (workers/thread/sandbox.ts).
 */
const ONE_THREAD = { SSE_WORKERS: '1', SSE_SANDBOX_PROCESSES: '1', SSE_SCRIPT_TIMEOUT_MS: String(LIMIT_MS), SSE_FAST_PATH_MS: '0' };

/** One SCALAR call over one numeric row (args[0] = 1) as app/user, answering text. */
function callAs(client: QlikClient, script: string, appId: string, extra: { functionType?: FunctionType } = {}): Promise<CallResult> {
  return client.evaluate({
    script,
    functionType: extra.functionType ?? FunctionType.SCALAR,
    returnType: DataType.STRING,
    params: [{ dataType: DataType.NUMERIC }],
    bundles: [[[num(1)]]],
    common: { appId, userId: 'user', cardinality: 1 },
  });
}

async function textAs(client: QlikClient, script: string, appId: string): Promise<string> {
  const result = await callAs(client, script, appId);
  assert.equal(result.code, status.OK, `${script}: ${result.details}`);
  return strings(result)[0] as string;
}

function assertTimeLimit(result: CallResult): void {
  assert.equal(result.code, status.DEADLINE_EXCEEDED, result.details);
  assert.match(result.details, new RegExp(`ran past its time limit of ${LIMIT_MS} ms \\(SSE_SCRIPT_TIMEOUT_MS\\)`));
}

describe('one isolate, many tenants: time', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin(ONE_THREAD)));
  after(async () => t.stop());

  it("a job queued by a call that ran out of time never runs in another app's call", async () => {
    const stuck = t.plugin.pool.restartsFor('stuck');
    for (let i = 0; i < 3; i++) {
      assertTimeLimit(await callAs(t.client, 'Promise.resolve().then(function f() { for (;;) {} }); for (;;) {}', 'attacker'));
      // The next call, of another app, gets its own whole time limit: nothing of the attacker's runs in it.
      assert.equal(await textAs(t.client, 'args[0] + 41', `bystander-${i}`), '42');
    }
    assert.equal(t.plugin.pool.restartsFor('stuck'), stuck, 'no thread was left spinning');
  });

  const copyAttacks: Record<string, string> = {
    'an own getter planted on a table column through a replaced Array.prototype.fill':
      'Array.prototype.fill = function () { Object.defineProperty(this, 0, { get() { for (;;) {} }, enumerable: true, configurable: true }); return this; }; return [null];',
    'an index getter on Array.prototype':
      'Object.defineProperty(Array.prototype, 0, { get() { for (;;) {} }, set() {}, configurable: true }); return [null];',
    'an index getter on Object.prototype':
      'Object.defineProperty(Object.prototype, 0, { get() { for (;;) {} }, set() {}, configurable: true }); return [null];',
    'getters on the keys of the output':
      "for (const k of ['ok', 'nums', 'text', 'utf8', 'table', 'keys', 'columns', 'strs', 'shape', 'tainted']) Object.defineProperty(Object.prototype, k, { get() { for (;;) {} }, set() {}, configurable: true }); return [null];",
    'a typed-array species that returns its own array':
      'Uint8Array[Symbol.species] = function (n) { const a = new Uint8Array(n); Object.defineProperty(a, "x", { get() { for (;;) {} }, enumerable: true }); return a; }; return "text";',
  };
  for (const [name, script] of Object.entries(copyAttacks)) {
    it(`the result copy runs no script code: ${name}`, async () => {
      const stuck = t.plugin.pool.restartsFor('stuck');
      const result = await callAs(t.client, `{ ${script} }`, 'copier', { functionType: FunctionType.TENSOR });
      // Either the runtime met the getter inside the time limit, or it never met it at all.
      if (result.code !== status.OK) assertTimeLimit(result);
      assert.equal(t.plugin.pool.restartsFor('stuck'), stuck, 'a getter ran outside the time limit and the thread was lost');
      assert.equal(await textAs(t.client, 'args[0] + 41', 'after-copier'), '42');
    });
  }
});

describe('one isolate, many tenants: speed', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin(ONE_THREAD)));
  after(async () => t.stop());

  /**
   * The same script of the same app and user reuses its kept context, where its own prototype change
   * is still seen; a rebuilt isolate has no kept context. So the second call answers 'number' when the
   * isolate was kept between the two calls, 'undefined' when it was rebuilt.
   */
  const KEEPER = '{ const had = typeof [].mark; Array.prototype.mark = 1; return had; }';
  async function isolateKeptAcross(between: string, appId: string): Promise<boolean> {
    assert.equal(await textAs(t.client, KEEPER, appId), 'undefined');
    const result = await callAs(t.client, `{ ${between}; return 'changed'; }`, 'changer');
    assert.equal(result.code, status.OK, result.details);
    return (await textAs(t.client, KEEPER, appId)) === 'number';
  }

  const guarded: Record<string, string> = {
    'Array.prototype[Symbol.iterator]':
      'const it = Array.prototype[Symbol.iterator]; Array.prototype[Symbol.iterator] = function () { return it.call(this); }',
    'the array iterator next':
      'const p = Object.getPrototypeOf([][Symbol.iterator]()); const n = p.next; p.next = function () { return n.call(this); }',
    'Array[Symbol.species]': 'Object.defineProperty(Array, Symbol.species, { get() { return Array; } })',
    'Array.prototype.constructor': 'Array.prototype.constructor = function () {}',
    'Promise.prototype.then':
      'const then = Promise.prototype.then; Promise.prototype.then = function (a, b) { return then.call(this, a, b); }',
    'Promise.resolve': 'Promise.resolve = function (v) { return new Promise((r) => r(v)); }',
    'an element on Array.prototype': 'Array.prototype[3] = 1',
    'an element on Object.prototype': 'Object.prototype[7] = 1',
    'Symbol.isConcatSpreadable on Array.prototype': 'Array.prototype[Symbol.isConcatSpreadable] = true',
    'Symbol.split on String.prototype': 'String.prototype[Symbol.split] = function () { return []; }',
    'the typed array species': 'Object.defineProperty(Object.getPrototypeOf(Int8Array), Symbol.species, { get() { return Int8Array; } })',
  };
  for (const [name, change] of Object.entries(guarded)) {
    it(`a script that changes ${name} leaves another app's next call a fresh isolate`, async () => {
      assert.equal(await isolateKeptAcross(change, `app-${name}`), false);
    });
  }

  it('a script that adds its own methods to built-ins keeps the isolate (nothing V8 guards changed)', async () => {
    const own =
      'Array.prototype.last = function () { return this[this.length - 1]; }; String.prototype.shout = function () { return this + "!"; }';
    assert.equal(await isolateKeptAcross(own, 'app-own-methods'), true);
  });
});

describe('one isolate, many tenants: memory (SSE_MEMORY_LIMIT_MB=64)', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin({ ...ONE_THREAD, SSE_SCRIPT_TIMEOUT_MS: '10000', SSE_MEMORY_LIMIT_MB: '64' })));
  after(async () => t.stop());

  /** An ordinary call of another app that holds ~20 MB at once. */
  const TWENTY_MB = '{ const a = new Array(2500000); for (let i = 0; i < a.length; i++) a[i] = i + 0.5; return a.length; }';

  const leftovers: Record<string, string> = {
    'Symbol.for keys':
      "{ const p = 'k'.repeat(2048) + args[0] + '-' + Math.random(); for (let i = 0; i < 5000; i++) Symbol.for(p + i); return 'left'; }",
    'eval and new Function sources':
      "{ const p = '/*' + 'k'.repeat(2048) + Math.random() + '*/'; for (let i = 0; i < 2500; i++) { eval(p + i); new Function(p + 'x' + i); } return 'left'; }",
  };
  for (const [name, script] of Object.entries(leftovers)) {
    it(`${name} another app left in the isolate do not fail a 20 MB call`, async () => {
      for (let i = 0; i < 5; i++) assert.equal(await textAs(t.client, script, 'hoarder'), 'left');
      assert.equal(await textAs(t.client, TWENTY_MB, 'ordinary'), '2500000');
    });
  }

  it('Symbol.for and Symbol.keyFor keep their meaning within a call', async () => {
    const script =
      "[Symbol.for('a') === Symbol.for('a'), Symbol.for('a') !== Symbol('a'), Symbol.keyFor(Symbol.for('a')), Symbol.keyFor(Symbol('b')), Symbol.for(1).description, (() => { try { Symbol.keyFor('x'); } catch (e) { return e.name; } })()].join()";
    assert.equal(await textAs(t.client, script, 'symbols'), 'true,true,a,,1,TypeError');
  });
});
