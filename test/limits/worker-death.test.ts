/**
 * A sandbox worker process that dies — a native crash (SIGSEGV), the kernel's OOM killer (SIGKILL),
 * a V8 abort — fails only the call it was running, with a clear status; the pool replaces it and
 * the plugin keeps serving. And no worker outlives the plugin process.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { QlikClient, num, numbers } from '../helpers/qlik-client';
import { assertServing, evalRows, evalText, textOf, waitFor } from '../helpers/sandbox-calls';
import { startMain } from '../ops/process';

const ON_LINUX = process.platform === 'linux';

/** The pid of the worker process running the endless loop just started (the only busy one). */
async function busyWorkerPid(t: TestPlugin): Promise<number> {
  await waitFor('a busy worker', () => t.plugin.pool.busyWorkers === 1, 2_000);
  // The busy one burns CPU: find it by its CPU time rising.
  const cpu = (pid: number): number => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ')[11] ?? 0);
  const before = new Map(t.plugin.pool.pids.map((pid) => [pid, cpu(pid)]));
  await new Promise((resolve) => setTimeout(resolve, 200));
  const [busiest] = t.plugin.pool.pids.sort((a, b) => cpu(b) - (before.get(b) ?? 0) - (cpu(a) - (before.get(a) ?? 0)));
  return busiest as number;
}

function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.split(') ')[1]?.split(' ')[1]) === pid) children.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return children;
}

/** Running, not exited: an exited process stays a zombie until init reaps it, which may take a while. */
function alive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}

describe('a worker process that dies', { skip: !ON_LINUX && 'finds worker processes through /proc' }, () => {
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_SCRIPT_TIMEOUT_MS: '20000' });
  });
  after(async () => t.stop());

  for (const signal of ['SIGSEGV', 'SIGKILL'] as const) {
    it(`${signal} while running a call: only that call fails (UNAVAILABLE), the other worker's call succeeds, the worker is replaced`, async () => {
      const replacedBefore = t.plugin.pool.replacedWorkers;
      const doomed = evalText(t.client, 'for (;;) {}');
      const pid = await busyWorkerPid(t);
      const bystander = evalRows(t.client, 'const end = Date.now() + 300; while (Date.now() < end); return args[0] * 2;', [[num(21)]]);
      await new Promise((resolve) => setTimeout(resolve, 50));
      process.kill(pid, signal);
      const failed = await doomed;
      assert.equal(failed.code, 14, `expected UNAVAILABLE, got ${failed.code} ${failed.details}`);
      assert.match(failed.details, new RegExp(`sandbox worker stopped unexpectedly \\(signal ${signal}\\)`));
      const survived = await bystander;
      assert.equal(survived.code, 0, survived.details);
      assert.deepEqual(numbers(survived), [42]);
      await waitFor('a replacement worker', () => t.plugin.pool.replacedWorkers === replacedBefore + 1 && t.plugin.pool.pids.length === 2 && !t.plugin.pool.pids.includes(pid), 3_000);
      await assertServing(t.client, 2, 3_000);
    });
  }

  it('an idle worker that dies is replaced without failing anything', async () => {
    const [pid] = t.plugin.pool.pids;
    process.kill(pid as number, 'SIGKILL');
    await waitFor('a replacement worker', () => t.plugin.pool.pids.length === 2 && !t.plugin.pool.pids.includes(pid as number), 3_000);
    await assertServing(t.client, 2, 3_000);
  });

  it('calls queued behind a dying worker run on the others', async () => {
    const doomed = evalText(t.client, 'for (;;) {}');
    const pid = await busyWorkerPid(t);
    // Three short calls: at least one waits in the queue while the loop holds a worker.
    const queued = [1, 2, 3].map((n) => textOf(t.client, `{ const end = Date.now() + 100; while (Date.now() < end); return args[0] + ${n}; }`));
    process.kill(pid, 'SIGKILL');
    assert.equal((await doomed).code, 14);
    assert.deepEqual(await Promise.all(queued), ['2', '3', '4']);
  });
});

describe('no worker outlives the plugin', { skip: !ON_LINUX && 'finds worker processes through /proc' }, () => {
  it('when the plugin process is killed (SIGKILL), its worker processes exit on their own', async () => {
    const plugin = await startMain({ SSE_WORKERS: '2', SSE_SCRIPT_TIMEOUT_MS: '2000' });
    const client = new QlikClient(`127.0.0.1:${plugin.port}`);
    try {
      const workers = childrenOf(plugin.child.pid as number);
      assert.equal(workers.length, 2, `worker processes: ${workers.join()}`);
      // One worker is busy in an endless loop when its parent dies.
      void evalText(client, 'for (;;) {}');
      await new Promise((resolve) => setTimeout(resolve, 300));
      plugin.child.kill('SIGKILL');
      await plugin.exited;
      // The idle one sees its IPC channel close and exits at once; the busy one once its script's
      // time limit stops the loop (nothing else can interrupt it).
      await waitFor('the idle worker to exit', () => workers.filter(alive).length <= 1, 1_000);
      await waitFor('the busy worker to exit', () => workers.filter(alive).length === 0, 2_500);
    } finally {
      client.close();
      await plugin.kill();
    }
  });
});
