/**
 * Native work that cannot be stopped (compiling a huge eval) holds a sandbox process's main thread
 * when it runs on the fast path (workers/fast-path.ts), and every task sent to that process waits
 * behind it, unread. What that costs others must stay bounded however the script is sent:
 * - the watcher tells the front soon after the budget (HELD): a spare takes the slot and the tasks
 *   waiting behind the hold run there, not once the work ends or its process is retired;
 * - the process that held it is replaced (stuck past its time limit, or V8 giving up on memory), and
 *   the replacement knows nothing of the hold: the front's memory keeps that script, and one made
 *   unique each call, off every main thread for a while (src/sandboxes/fast-path-gate.ts).
 * Real plugin, real sandbox processes; a short time limit so the hold ends its process in ~1.5 s.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { createLogger } from '../../src/ops/log';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import type { CallResult } from '../helpers/qlik-client';
import { evalText, readySandboxes, textOf, waitFor } from '../helpers/sandbox-calls';

/** Seconds of native compiling (past the time limit + 1 s grace, or the memory limit first); `tag` makes the text unique. */
const hold = (tag: string): string => `/*${tag}*/ eval('['+'[1],'.repeat(3e6)+'1]').length`;
/**
 * One slot of two threads and a spare, as the default plugin on two cores; the hold outlives the time
 * limit. A budget the script's first step (building its 12 MB text) always fits in: at 10 ms a busy
 * machine sometimes stopped it there, before the compile, and it only moved to a pool thread.
 */
const ENV = {
  SSE_WORKERS: '2',
  SSE_SANDBOX_PROCESSES: '1',
  SSE_SPARE_SANDBOXES: '1',
  SSE_SCRIPT_TIMEOUT_MS: '500',
  SSE_FAST_PATH_MS: '200',
};
const HELD_LOG = /native work holds a sandbox process's main thread/;
const MAIN_THREAD_RETIRED = /main thread stopped responding/;

/** The hold fails its own call on its time or its memory limit, whichever the machine meets first. */
function assertFailedOnALimit(result: CallResult): void {
  assert.ok(
    result.code === status.DEADLINE_EXCEEDED || result.code === status.RESOURCE_EXHAUSTED,
    `the hold answered ${result.code}: ${result.details}`,
  );
}

/** CPU time the main thread has used (Linux): it runs nothing else that long while idle. */
function mainThreadCpuMs(pid: number): number {
  // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th, in clock ticks.
  const fields = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'latin1').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) * TICK_MS;
}

/** Linux's USER_HZ is 100 everywhere Node runs. */
const TICK_MS = 10;
/** Main-thread CPU that only the hold's compile uses: a one-row task takes well under a tick. */
const HOLDING_CPU_MS = 50;

interface Logged {
  readonly msg: string;
  readonly detail?: string;
}

async function startLogged(lines: Logged[]): Promise<TestPlugin> {
  const logger = createLogger('info', { write: (line: string) => void lines.push(JSON.parse(line) as Logged) });
  const t = await startTestPlugin(ENV, logger);
  await readySandboxes(t, 1, 30_000);
  await waitFor('the spare ready', () => t.plugin.pool.spareProcesses().some((p) => p.ready), 30_000);
  return t;
}

/** Where main threads were held or retired, as the front logged it. */
function mainThreadHolds(lines: readonly Logged[]): number {
  return lines.filter((line) => HELD_LOG.test(line.msg) || MAIN_THREAD_RETIRED.test(line.detail ?? '')).length;
}

describe('calls sent while native work holds the main thread', () => {
  const lines: Logged[] = [];
  let t: TestPlugin;
  before(async () => (t = await startLogged(lines)));
  after(async () => t.stop());

  it('run on the spare that takes the slot, answered before the hold ends', async () => {
    const { pool } = t.plugin;
    const retirements = pool.retirements;
    const order: string[] = [];
    const [slot] = pool.processes();
    const pid = slot?.pid as number;
    const cpuBeforeMs = mainThreadCpuMs(pid);
    const culprit = evalText(t.client, hold('held')).then((result) => {
      order.push('hold');
      return result;
    });
    // Sent only once the hold has the main thread: sent with the hold, in one read, it would take the fast path itself.
    await waitFor('the main thread compiling', () => mainThreadCpuMs(pid) - cpuBeforeMs >= HOLDING_CPU_MS, 10_000);
    // Sent to the held process (unread behind the hold) or, once the spare took the slot, to the spare.
    assert.equal(await textOf(t.client, '"behind"'), 'behind');
    order.push('behind');
    await waitFor('the held process giving its slot to the spare', () => pool.retirements === retirements + 1, 10_000);
    assert.equal(await textOf(t.client, '"after"'), 'after');
    order.push('after');
    assertFailedOnALimit(await culprit);
    assert.deepEqual(order, ['behind', 'after', 'hold']);
    assert.equal(lines.filter((line) => HELD_LOG.test(line.msg)).length, 1);
  });
});

describe('a script whose hold got its process replaced, called again', () => {
  const lines: Logged[] = [];
  let t: TestPlugin;
  before(async () => (t = await startLogged(lines)));
  after(async () => t.stop());

  it('takes no main thread of the new processes: neither the same text nor one made unique', async () => {
    const { pool } = t.plugin;
    assertFailedOnALimit(await evalText(t.client, hold('first')));
    assert.ok(pool.restarts >= 1, 'the process that held the main thread was not replaced');
    assert.ok(mainThreadHolds(lines) >= 1, 'the first call did not run on the main thread');
    const holdsBefore = mainThreadHolds(lines);
    await readySandboxes(t, 1, 30_000);
    for (const tag of ['first', 'unique']) {
      const before = pool.restarts;
      const again = evalText(t.client, hold(tag));
      await waitFor('the hold sent', () => pool.busyWorkers > 0, 10_000);
      assert.equal(await textOf(t.client, `"beside ${tag}"`), `beside ${tag}`);
      assertFailedOnALimit(await again);
      assert.ok(pool.restarts > before, `${tag}: its process was not replaced`);
      assert.equal(mainThreadHolds(lines), holdsBefore, `${tag}: ran on a main thread of a new process`);
      await readySandboxes(t, 1, 30_000);
    }
  });
});
