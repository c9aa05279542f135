/**
 * Load: a bounded queue (SSE_MAX_QUEUE) refuses new work fast as "busy"; endless loops on every
 * worker end in timeouts and leave the plugin serving; a cancelled call stops its work, queued and
 * running, promptly and leaks nothing; over-large messages (SSE_MAX_MESSAGE_BYTES) and scripts (SSE_MAX_SCRIPT_BYTES) are
 * refused.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { type CallResult, num, numbers, str } from '../helpers/qlik-client';
import { assertServing, bigRow, DataType, evalRows, evalText, FunctionType, textOf, waitFor } from '../helpers/sandbox-calls';

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
    let loopsEnded = 0;
    const loops = Array.from({ length: 4 }, () => evalText(t.client, 'for (;;) {}').then((r) => (loopsEnded++, r)));
    await waitFor('two waiting chunks', () => t.plugin.pool.queueSize === 2, 10_000);
    const refused = await evalText(t.client, 'args[0]');
    // "At once" as an order, not a time: refused while all four loops were still running or queued.
    assert.equal(loopsEnded, 0, 'the refusal came only after a loop ended');
    assert.equal(refused.code, status.RESOURCE_EXHAUSTED, refused.details);
    assert.match(refused.details, /busy/);
    assert.match(refused.details, /SSE_MAX_QUEUE/);
    for (const loop of await Promise.all(loops)) assert.equal(loop.code, status.DEADLINE_EXCEEDED, loop.details);
    assert.equal(t.plugin.pool.queueSize, 0);
    await assertServing(t.client);
  });
});

describe('a call with more chunks than the queue holds (SSE_MAX_QUEUE=2)', () => {
  let t: TestPlugin;
  // No time limit of its own: its 400 ms of script met the 1 s limit of the suite above on a busy machine.
  before(async () => {
    t = await startTestPlugin({ SSE_MAX_QUEUE: '2' });
  });
  after(async () => t.stop());

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

  it('all end in DEADLINE_EXCEEDED (queue time not counted), no sandbox is replaced, and a normal call right after succeeds', async () => {
    const loops = await Promise.all(Array.from({ length: 8 }, () => evalText(t.client, 'while (true) {}')));
    for (const loop of loops) {
      assert.equal(loop.code, status.DEADLINE_EXCEEDED, loop.details);
      // The time limit's own message: a loop that waited in the queue was not failed for its wait.
      assert.equal(loop.details, 'the script ran past its time limit of 1000 ms (SSE_SCRIPT_TIMEOUT_MS)');
    }
    // isolated-vm's timeout ended every loop: the watchdog (which replaces the process) never had to.
    assert.equal(t.plugin.pool.restarts, 0);
    assert.equal(await textOf(t.client, 'args[0] * 7'), '7');
    await assertServing(t.client);
  });
});

describe('a client that cancels', () => {
  const LIMIT_MS = 60_000;
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_SCRIPT_TIMEOUT_MS: String(LIMIT_MS) });
  });
  after(async () => t.stop());

  it('drops its queued chunks and stops its running ones at once; nothing leaks', async () => {
    const result = await spinningCall(t, 6, -1, { cancelAfterMs: 300 });
    assert.equal(result.code, status.CANCELLED, `expected CANCELLED, got ${result.code} ${result.details}`);
    // The running chunks are stopped where they run (workers/thread-stop.ts), long before their 60 s
    // time limit (several times the wait here), and not by the watchdog (which would replace the process).
    await waitFor('an idle pool', () => t.plugin.pool.queueSize === 0 && t.plugin.pool.busyWorkers === 0, LIMIT_MS / 3);
    assert.ok(t.plugin.pool.stoppedTasks > 0, 'no running chunk was stopped');
    assert.equal(t.plugin.pool.restarts, 0);
    assert.equal(t.plugin.pool.threads, 2);
    await assertServing(t.client);
  });

  it('lets short running chunks finish and drops the queued ones', async () => {
    const result = await spinningCall(t, 12, 100, { cancelAfterMs: 150 });
    assert.equal(result.code, status.CANCELLED, result.details);
    await waitFor('an idle pool', () => t.plugin.pool.queueSize === 0 && t.plugin.pool.busyWorkers === 0, 10_000);
    assert.equal(t.plugin.pool.restarts, 0);
    assert.equal(t.plugin.pool.threads, 2);
    await assertServing(t.client);
  });

  it('many cancelled calls in a row leave nothing behind', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => spinningCall(t, 3, 20, { cancelAfterMs: 10 + i * 5 })));
    for (const result of results)
      assert.ok(result.code === status.CANCELLED || result.code === status.OK, `${result.code} ${result.details}`);
    await waitFor('an idle pool', () => t.plugin.pool.queueSize === 0 && t.plugin.pool.busyWorkers === 0, 10_000);
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
