/**
 * Which calls may share a sandbox context (src/calls/context-key.ts): only calls of the same script by the
 * same user in the same app, one after another, and then with the global object reset. Another app,
 * another user and another script never see what a call left behind; the same key sees no globals.
 * Also the LOAD pattern itself: thousands of sequential one-row SCALAR calls, every answer right.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, FunctionType, num, numbers, type QlikClient, strings } from '../helpers/qlik-client';

/** One SCALAR call over one numeric row, as app/user, answering text. */
async function textAs(client: QlikClient, script: string, appId: string, userId: string, value = 1): Promise<string> {
  const result = await client.evaluate({
    script,
    functionType: FunctionType.SCALAR,
    returnType: DataType.STRING,
    params: [{ dataType: DataType.NUMERIC }],
    bundles: [[[num(value)]]],
    common: { appId, userId, cardinality: 1 },
  });
  assert.equal(result.code, status.OK, result.details);
  return strings(result)[0] as string;
}

/** Leaves a global, a replaced global and a prototype change behind, and reports what it found. */
const LEAVER =
  '{ const seen = [typeof globalThis.left, typeof JSON.parse, typeof [].polluted].join(); globalThis.left = 1; JSON = { parse: 1 }; Array.prototype.polluted = 1; return seen; }';
const FRESH = 'undefined,function,undefined';

describe('context reuse between calls', () => {
  let t: TestPlugin;
  // One sandbox thread: every call lands where the previous one ran, so reuse would show.
  before(async () => (t = await startTestPlugin({ SSE_WORKERS: '1' })));
  after(async () => t.stop());

  it('another app, another user and another script start from a fresh context', async () => {
    assert.equal(await textAs(t.client, LEAVER, 'app-1', 'user-1'), FRESH);
    assert.equal(await textAs(t.client, LEAVER, 'app-2', 'user-1'), FRESH, 'another app');
    assert.equal(await textAs(t.client, LEAVER, 'app-1', 'user-2'), FRESH, 'another user');
    assert.equal(await textAs(t.client, `${LEAVER} `, 'app-1', 'user-1'), FRESH, 'another script');
    const probe = '[typeof globalThis.left, typeof JSON.parse, typeof [].polluted].join()';
    assert.equal(await textAs(t.client, probe, 'app-1', 'user-1'), FRESH, 'another script, reading only');
  });

  it('the same script, user and app: globals are reset between calls (only its own prototype changes may remain)', async () => {
    const first = await textAs(t.client, LEAVER, 'app-3', 'user-3');
    const second = await textAs(t.client, LEAVER, 'app-3', 'user-3');
    assert.equal(first, FRESH);
    // globalThis.left and the replaced JSON are gone; a change to Array.prototype is the script's own.
    assert.match(second, /^undefined,function,(undefined|number)$/);
  });

  it('every call of the same key that reads the clock or Math.random answers qlik-cache: no-store, also after a reset', async () => {
    const scripts = [
      'new Date().getFullYear() > 2000 ? 1 : 0',
      'Date().length > 0 ? 1 : 0',
      'Date.now() > 0 ? 1 : 0',
      'Math.random() < 1 ? 1 : 0',
      // Replacing a guarded source in call 1 must not make call 2 read a stale, unflagged value.
      '{ const r = Math.random() + Date.now(); Math.random = () => 0.5; Date.now = () => 1; Date = function () { return 1; }; return r > 0 ? 1 : 0; }',
      '{ const r = new Date().getTime(); Math = { random: () => 0.5 }; Date.prototype.constructor = function () {}; return r > 0 ? 1 : 0; }',
    ];
    for (const script of scripts) {
      for (let call = 1; call <= 3; call++) {
        const result = await t.client.evaluate({
          script,
          functionType: FunctionType.SCALAR,
          returnType: DataType.NUMERIC,
          params: [{ dataType: DataType.NUMERIC }],
          bundles: [[[num(1)]]],
          common: { appId: 'clock-app', userId: 'clock-user', cardinality: 1 },
        });
        assert.equal(result.code, status.OK, result.details);
        assert.deepEqual(numbers(result), [1]);
        const cache = [...(result.initialMetadata?.get('qlik-cache') ?? []), ...(result.trailers?.get('qlik-cache') ?? [])];
        assert.ok(cache.includes('no-store'), `call ${call} of ${script} answered without qlik-cache: no-store`);
      }
    }
  });

  it('a global the script makes permanent does not survive: the next call gets a fresh context', async () => {
    const script =
      '{ const had = typeof globalThis.stuck; Object.defineProperty(globalThis, "stuck", { value: 1, configurable: false }); return had; }';
    assert.equal(await textAs(t.client, script, 'app-4', 'user-4'), 'undefined');
    assert.equal(await textAs(t.client, script, 'app-4', 'user-4'), 'undefined');
  });

  it('a LOAD: 5,000 sequential one-row SCALAR calls of one user and app, every answer right', async () => {
    for (let i = 0; i < 5_000; i++) {
      const result = await t.client.evaluate({
        script: 'globalThis.calls = (globalThis.calls ?? 0) + 1; return args[0] * 2 + globalThis.calls',
        functionType: FunctionType.SCALAR,
        returnType: DataType.NUMERIC,
        params: [{ dataType: DataType.NUMERIC }],
        bundles: [[[num(i)]]],
        common: { appId: 'load-app', userId: 'load-user', cardinality: 1 },
      });
      assert.equal(result.code, status.OK, result.details);
      // calls is 1 in every call: nothing of the previous row's call is left.
      assert.deepEqual(numbers(result), [i * 2 + 1], `row ${i}`);
    }
  });
});

describe('context keys', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin({ SSE_WORKERS: '1' })));
  after(async () => t.stop());

  it('ids that join to the same text (a NUL inside) are still different apps and users', async () => {
    assert.equal(await textAs(t.client, LEAVER, 'a\u0000b', 'c'), FRESH);
    assert.equal(await textAs(t.client, LEAVER, 'a', 'b\u0000c'), FRESH);
    assert.equal(await textAs(t.client, LEAVER, 'a\u0000', 'b'), FRESH);
    assert.equal(await textAs(t.client, LEAVER, 'a', '\u0000b'), FRESH);
  });
});

describe('kept contexts and the heap every context of a thread shares', () => {
  let t: TestPlugin;
  // One thread, a small heap: what one app's kept context held would fail the next app's call.
  before(async () => (t = await startTestPlugin({ SSE_WORKERS: '1', SSE_MEMORY_LIMIT_MB: '32' })));
  after(async () => t.stop());

  it('a call that leaves a large heap behind does not keep its context: the next app gets the whole limit', async () => {
    for (let round = 0; round < 3; round++) {
      assert.equal(
        await textAs(t.client, '{ globalThis.big = new Array(3.5e6).fill(0.5); return "held"; }', 'app-big', 'user-big'),
        'held',
      );
      assert.equal(await textAs(t.client, 'new Array(2e6).fill(0.5).length', 'app-other', 'user-other'), '2000000');
    }
  });
});
