/**
 * Small tasks run on the sandbox process's main thread (workers/fast-path.ts) with the same limits,
 * runtime and context rules as a pool thread; one that outgrows the fast path's budget is run again
 * from the start on a pool thread. These guard what a user sees of that: a LOAD's row-by-row calls
 * answer right, a task moved to a pool thread answers once and right, apps do not see each other's
 * globals, and the time and memory limits end a script there with their own status. The limits run
 * with a fast-path budget (SSE_FAST_PATH_MS) longer than the time limit, so the main thread is where
 * they fire. A task on the main thread has the libraries and the console a pool thread's has.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import type { TaskRoute } from '../../src/contract/task';
import { createLogger } from '../../src/ops/log';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, FunctionType, num, numbers, type QlikClient, strings } from '../helpers/qlik-client';
import { evalRows, evalText, textOf, waitFor } from '../helpers/sandbox-calls';

/** One SCALAR call over one numeric row, as app/user. */
function rowAs(client: QlikClient, script: string, value: number, appId = 'app', returnType: DataType = DataType.NUMERIC) {
  return client.evaluate({
    script,
    functionType: FunctionType.SCALAR,
    returnType,
    params: [{ dataType: DataType.NUMERIC }],
    bundles: [[[num(value)]]],
    common: { appId, userId: 'user', cardinality: 1 },
  });
}

/** Tasks answered by route since `before` (the front's count, from what each result says). */
function routesSince(t: TestPlugin, before: Readonly<Record<TaskRoute, number>>): Record<TaskRoute, number> {
  const now = t.plugin.pool.tasksByRoute;
  return { main: now.main - before.main, pool: now.pool - before.pool, moved: now.moved - before.moved };
}

/** Busy for about busyMs of script time per row, then answers args[0] * 3 (longer than the default budget of 10 ms). */
function busyScript(busyMs: number): string {
  return `{ const end = Date.now() + ${busyMs}; let spins = 0; while (Date.now() < end) spins++; return args[0] * 3; }`;
}

describe('the fast path with the default budget', () => {
  let t: TestPlugin;
  // One sandbox thread and one process: every small call is the main thread's or that thread's.
  before(async () => (t = await startTestPlugin({ SSE_WORKERS: '1' })));
  after(async () => t.stop());

  it('a LOAD of 400 sequential one-row calls of one script answers every row right, counted where it ran', async () => {
    const before = { ...t.plugin.pool.tasksByRoute };
    for (let row = 0; row < 400; row++) {
      const result = await rowAs(t.client, 'args[0] * 2 + 1', row);
      assert.equal(result.code, status.OK, result.details);
      assert.deepEqual(numbers(result), [row * 2 + 1], `row ${row}`);
    }
    const ran = routesSince(t, before);
    assert.equal(ran.main + ran.pool + ran.moved, 400, `routes ${JSON.stringify(ran)}`);
    assert.ok(ran.main > 0, `no row ran on the main thread: ${JSON.stringify(ran)}`);
  });

  it('a task that outgrows the fast path is answered once, right, by a pool thread (each row of a LOAD and a multi-row call)', async () => {
    const before = { ...t.plugin.pool.tasksByRoute };
    const script = busyScript(40);
    for (let row = 1; row <= 4; row++) {
      const result = await rowAs(t.client, script, row, 'slow-app');
      assert.equal(result.code, status.OK, result.details);
      assert.deepEqual(numbers(result), [row * 3], `row ${row}`);
    }
    // Another script, so its first task tries the fast path again: three rows, three answers, in order.
    const rows = await evalRows(t.client, busyScript(20), [[num(1)], [num(2)], [num(5)]]);
    assert.equal(rows.code, status.OK, rows.details);
    assert.deepEqual(numbers(rows), [3, 6, 15]);
    const ran = routesSince(t, before);
    assert.equal(ran.main + ran.pool + ran.moved, 5, `one answer a task: ${JSON.stringify(ran)}`);
    assert.ok(ran.moved >= 1, `no task counted as moved: ${JSON.stringify(ran)}`);
  });

  it('a fast script after a moved one still answers, and from a clean global object', async () => {
    assert.equal((await rowAs(t.client, busyScript(40), 7, 'mixed-app')).code, status.OK);
    const result = await evalText(t.client, 'typeof globalThis.spins');
    assert.equal(result.code, status.OK, result.details);
    assert.deepEqual(strings(result), ['undefined']);
  });

  it('a global one app sets is not seen by another app, one call after the other', async () => {
    const setter = '{ const seen = typeof globalThis.secret; globalThis.secret = "a"; return seen; }';
    const first = await rowAs(t.client, setter, 1, 'app-A', DataType.STRING);
    const second = await rowAs(t.client, setter, 1, 'app-B', DataType.STRING);
    const again = await rowAs(t.client, setter, 1, 'app-A', DataType.STRING);
    assert.deepEqual(strings(first), ['undefined']);
    assert.deepEqual(strings(second), ['undefined'], 'app B saw what app A left');
    assert.deepEqual(strings(again), ['undefined'], 'globals are reset between calls of one key');
  });
});

describe('libraries and the console on the fast path', () => {
  let t: TestPlugin;
  const lines: Record<string, unknown>[] = [];
  before(async () => {
    const logger = createLogger('info', { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    t = await startTestPlugin({ SSE_WORKERS: '1', SSE_LOG_LEVEL: 'info' }, logger);
  });
  after(async () => t.stop());

  it("a LOAD of 200 sequential one-row calls that require('qlik') and console.log answers right and logs every line", async () => {
    const script = `{ const hash = require('qlik').sha256(String(args[0])); console.log('row', args[0], hash.slice(0, 12)); return hash; }`;
    const expected = (row: number): string => createHash('sha256').update(String(row)).digest('hex');
    for (let row = 0; row < 200; row++) {
      const result = await rowAs(t.client, script, row, 'library-app', DataType.STRING);
      assert.equal(result.code, status.OK, result.details);
      assert.deepEqual(strings(result), [expected(row)], `row ${row}`);
    }
    const logged = (): string[] =>
      lines.filter((line) => line['source'] === 'console' && line['appId'] === 'library-app').map((line) => String(line['msg']));
    await waitFor('the last row console line', () => logged().length >= 200, 10_000);
    assert.deepEqual(
      logged(),
      Array.from({ length: 200 }, (_, row) => `row ${row} ${expected(row).slice(0, 12)}`),
    );
  });
});

describe('limits on the fast path (SSE_FAST_PATH_MS=1000, SSE_SCRIPT_TIMEOUT_MS=300, SSE_MEMORY_LIMIT_MB=32)', () => {
  let t: TestPlugin;
  before(
    async () =>
      (t = await startTestPlugin({ SSE_WORKERS: '1', SSE_FAST_PATH_MS: '1000', SSE_SCRIPT_TIMEOUT_MS: '300', SSE_MEMORY_LIMIT_MB: '32' })),
  );
  after(async () => t.stop());

  it('an endless loop fails DEADLINE_EXCEEDED naming the time limit, and the next call answers', async () => {
    const result = await evalText(t.client, 'for (;;) {}');
    assert.equal(result.code, status.DEADLINE_EXCEEDED, result.details);
    assert.match(result.details, /time limit of 300 ms \(SSE_SCRIPT_TIMEOUT_MS\)/);
    assert.equal(await textOf(t.client, '"after"'), 'after');
  });

  it('promise jobs a timed-out script queued do not run in the next call', async () => {
    const looping = 'Promise.resolve().then(function spin() { globalThis.leak = 1; for (;;) {} }) && 1';
    const result = await evalText(t.client, looping);
    assert.equal(result.code, status.DEADLINE_EXCEEDED, result.details);
    assert.equal(await textOf(t.client, 'typeof globalThis.leak'), 'undefined');
  });

  for (const [what, script] of [
    ['a huge typed array', 'new Float64Array(1e9).length'],
    ['a 2**29-character string', "'x'.repeat(2 ** 29).length"],
  ]) {
    it(`${what} fails RESOURCE_EXHAUSTED naming the memory limit, and the next call answers`, async () => {
      const result = await evalText(t.client, script as string);
      assert.equal(result.code, status.RESOURCE_EXHAUSTED, result.details);
      assert.match(result.details, /32 MB/);
      assert.match(result.details, /SSE_MEMORY_LIMIT_MB/);
      assert.equal(await textOf(t.client, '"after"'), 'after');
    });
  }
});
