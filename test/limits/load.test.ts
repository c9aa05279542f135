/**
 * Load: a bounded queue (SSE_MAX_QUEUE) refuses new work fast as "busy"; endless loops on every
 * worker end in timeouts and leave the plugin serving; a cancelled call stops its work promptly and
 * leaks nothing; over-large messages (SSE_MAX_MESSAGE_BYTES) and scripts (SSE_MAX_SCRIPT_BYTES) are
 * refused.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { type CallResult, num, numbers, str } from '../helpers/qlik-client';
import { assertServing, bigRow, DataType, evalRows, evalText, FunctionType, textOf, timed, waitFor } from '../helpers/sandbox-calls';

/** A call of `chunks` chunks (rows over 256 KiB each), each spinning for `spinMs` (or for ever when negative). */
function spinningCall(t: TestPlugin, chunks: number, spinMs: number, extra: { cancelAfterMs?: number } = {}): Promise<CallResult> {
  const body = spinMs < 0 ? 'for (;;) {}' : `const end = Date.now() + ${spinMs}; while (Date.now() < end); return 1;`;
  return evalRows(
    t.client,
    body,
    Array.from({ length: chunks }, () => bigRow(300_000)),
    { paramType: DataType.STRING, ...extra },
  );
}

describe('a full queue refuses new calls as busy', () => {
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_MAX_QUEUE: '2', SSE_SCRIPT_TIMEOUT_MS: '1000' });
  });
  after(async () => t.stop());

  it('with both workers looping and two chunks waiting, a new call fails at once with RESOURCE_EXHAUSTED busy', async () => {
    const loops = Array.from({ length: 4 }, () => evalText(t.client, 'for (;;) {}'));
    await waitFor('two waiting chunks', () => t.plugin.pool.queueSize === 2, 2_000);
    const { value: refused, ms } = await timed(() => evalText(t.client, 'args[0]'));
    assert.equal(refused.code, status.RESOURCE_EXHAUSTED, refused.details);
    assert.match(refused.details, /busy/);
    assert.match(refused.details, /SSE_MAX_QUEUE/);
    assert.ok(ms < 300, `the refusal took ${Math.round(ms)} ms`);
    for (const loop of await Promise.all(loops)) assert.equal(loop.code, status.DEADLINE_EXCEEDED, loop.details);
    assert.equal(t.plugin.pool.queueSize, 0);
    await assertServing(t.client);
  });

  it('a call with more chunks than the queue holds does not pile them up: its reads pause instead', async () => {
    let deepest = 0;
    const sampler = setInterval(() => (deepest = Math.max(deepest, t.plugin.pool.queueSize)), 5);
    try {
      const result = await spinningCall(t, 8, 50);
      assert.equal(result.code, status.OK, result.details);
      assert.equal(result.rows.length, 8);
    } finally {
      clearInterval(sampler);
    }
    assert.ok(deepest <= 2, `the queue held ${deepest} chunks`);
    await assertServing(t.client);
  });
});

describe('eight endless loops on two workers', () => {
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_SCRIPT_TIMEOUT_MS: '1000' });
  });
  after(async () => t.stop());

  it('all end in DEADLINE_EXCEEDED (queue time not counted) and a normal call right after succeeds promptly', async () => {
    const { value: loops, ms } = await timed(() => Promise.all(Array.from({ length: 8 }, () => evalText(t.client, 'while (true) {}'))));
    for (const loop of loops) {
      assert.equal(loop.code, status.DEADLINE_EXCEEDED, loop.details);
      assert.match(loop.details, /1000 ms \(SSE_SCRIPT_TIMEOUT_MS\)/);
    }
    // Four rounds of one second on each worker, plus the kill grace at worst.
    assert.ok(ms < 4 * 1_500, `eight loops took ${Math.round(ms)} ms`);
    const { value: normal, ms: normalMs } = await timed(() => textOf(t.client, 'args[0] * 7'));
    assert.equal(normal, '7');
    assert.ok(normalMs < 300, `the next call took ${Math.round(normalMs)} ms`);
    await assertServing(t.client);
  });
});

describe('a client that cancels', () => {
  const LIMIT_MS = 2_000;
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_SCRIPT_TIMEOUT_MS: String(LIMIT_MS) });
  });
  after(async () => t.stop());

  it('drops its queued chunks at once; its running chunks end at their time limit; nothing leaks', async () => {
    const result = await spinningCall(t, 6, -1, { cancelAfterMs: 300 });
    assert.equal(result.code, status.CANCELLED, `expected CANCELLED, got ${result.code} ${result.details}`);
    await waitFor('no queued chunk', () => t.plugin.pool.queueSize === 0, 200);
    // A running chunk is not interrupted (that would cost its thread): its time limit ends it.
    const freedMs = await waitFor('an idle pool', () => t.plugin.pool.busyWorkers === 0, LIMIT_MS + 1_000);
    assert.ok(freedMs < LIMIT_MS + 500, `the workers were busy ${Math.round(freedMs)} ms after the cancel`);
    assert.equal(t.plugin.pool.restarts, 0);
    await assertServing(t.client, 2, 3_000);
  });

  it('lets short running chunks finish and drops the queued ones', async () => {
    const result = await spinningCall(t, 12, 100, { cancelAfterMs: 150 });
    assert.equal(result.code, status.CANCELLED, result.details);
    await waitFor('an idle pool', () => t.plugin.pool.queueSize === 0 && t.plugin.pool.busyWorkers === 0, 1_000);
    assert.equal(t.plugin.pool.restarts, 0);
    assert.equal(t.plugin.pool.threads, 2);
    await assertServing(t.client);
  });

  it('many cancelled calls in a row leave nothing behind', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => spinningCall(t, 3, 20, { cancelAfterMs: 10 + i * 5 })));
    for (const result of results)
      assert.ok(result.code === status.CANCELLED || result.code === status.OK, `${result.code} ${result.details}`);
    await waitFor('an idle pool', () => t.plugin.pool.queueSize === 0 && t.plugin.pool.busyWorkers === 0, 2_000);
    await assertServing(t.client);
  });
});

describe('size limits of the wire', () => {
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_MAX_MESSAGE_BYTES: '65536', SSE_MAX_SCRIPT_BYTES: '100' });
  });
  after(async () => t.stop());

  it('refuses a request message larger than SSE_MAX_MESSAGE_BYTES with RESOURCE_EXHAUSTED', async () => {
    const result = await evalRows(t.client, 'args[0].length', [[str('x'.repeat(100_000))]], { paramType: DataType.STRING });
    assert.equal(result.code, status.RESOURCE_EXHAUSTED, result.details);
    assert.match(result.details, /larger than max/i);
  });

  it('accepts the same rows in messages under the limit', async () => {
    const result = await t.client.evaluate({
      script: 'args[0].length',
      functionType: FunctionType.SCALAR,
      returnType: DataType.NUMERIC,
      params: [{ dataType: DataType.STRING }],
      bundles: [[[str('x'.repeat(50_000))]], [[str('y'.repeat(50_000))]]], // two messages
    });
    assert.equal(result.code, status.OK, result.details);
    assert.deepEqual(numbers(result), [50_000, 50_000]);
  });

  it('refuses a script longer than SSE_MAX_SCRIPT_BYTES with INVALID_ARGUMENT naming its size and the limit', async () => {
    const script = `args[0] + ${'1'.repeat(150)}`;
    const result = await evalText(t.client, script);
    assert.equal(result.code, status.INVALID_ARGUMENT, result.details);
    assert.match(result.details, new RegExp(`${Buffer.byteLength(script)} bytes`));
    assert.match(result.details, /100 bytes \(SSE_MAX_SCRIPT_BYTES\)/);
    assert.deepEqual(numbers(await evalRows(t.client, 'args[0] + 1', [[num(1)]])), [2]);
  });
});
