/**
 * A sandbox thread that V8 gives up on. Some allocations make V8 fail fatally inside an isolate
 * (isolated-vm #107, #527): without isolated-vm's onCatastrophicError that aborts the whole plugin;
 * with it the worker thread hangs for ever. The pool's watchdog then fails only the call it ran,
 * piscina replaces the thread, and the plugin keeps serving; once as many threads are stuck as the
 * pool allows, the plugin stops and ends itself so its service manager restarts it.
 *
 * Runs the real entry point as a child process: a stuck thread keeps its process from exiting, so it
 * must not be the test runner's process.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { STUCK_GRACE_MS } from '../../src/pool';
import { QlikClient, num, numbers } from '../helpers/qlik-client';
import { evalRows, evalText, textOf, timed } from '../helpers/sandbox-calls';
import { startMain, type PluginProcess } from '../ops/process';

const TIMEOUT_MS = 1_000;
/** V8 gives up on a 1e8-element array in a 32 MB sandbox; measured in every run on Node 20. */
const FATAL = 'new Array(1e8).fill(0).length';

describe('a sandbox thread stuck after a fatal V8 error', () => {
  let plugin: PluginProcess;
  let client: QlikClient;
  before(async () => {
    plugin = await startMain({ SSE_WORKERS: '2', SSE_MEMORY_LIMIT_MB: '32', SSE_SCRIPT_TIMEOUT_MS: String(TIMEOUT_MS), SSE_LOG_LEVEL: 'info' });
    client = new QlikClient(`127.0.0.1:${plugin.port}`);
  });
  after(async () => {
    client.close();
    await plugin.kill();
  });

  it('fails only its own call (RESOURCE_EXHAUSTED); a call on the other worker succeeds', async () => {
    const doomed = timed(() => evalText(client, FATAL));
    const bystander = evalRows(client, 'const end = Date.now() + 300; while (Date.now() < end); return args[0] * 2;', [[num(21)]]);
    const { value: failed, ms } = await doomed;
    assert.equal(failed.code, 8, `${failed.code} ${failed.details}`);
    assert.match(failed.details, /32 MB \(SSE_MEMORY_LIMIT_MB\).*stopped responding/);
    assert.ok(ms < TIMEOUT_MS + STUCK_GRACE_MS + 2_000, `${Math.round(ms)} ms`);
    assert.deepEqual(numbers(await bystander), [42]);
  });

  it('the thread is replaced: both workers serve again', async () => {
    const results = await Promise.all([1, 2, 3, 4].map((n) => textOf(client, `{ const end = Date.now() + 100; while (Date.now() < end); return args[0] + ${n}; }`)));
    assert.deepEqual(results, ['2', '3', '4', '5']);
  });

  it('at the second stuck thread (SSE_WORKERS=2) the plugin logs why and ends itself for a restart', async () => {
    const failed = await evalText(client, FATAL);
    assert.equal(failed.code, 8, failed.details);
    const line = await plugin.waitForLine((l) => typeof l.msg === 'string' && l.msg.includes('must restart'), 5_000);
    assert.equal(line['lostWorkers'], 2);
    const exit = await plugin.exited;
    // Node cannot exit while a thread is stuck in native code: the plugin ends itself with SIGKILL.
    assert.deepEqual(exit, { code: null, signal: 'SIGKILL' });
  });
});
