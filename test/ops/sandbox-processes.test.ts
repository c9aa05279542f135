/**
 * Sandbox processes as an operator sees them, with the real entry point as a child process: they
 * hold nothing of the front's environment, a graceful stop ends them after the calls in flight, and
 * a front that is SIGKILLed leaves none behind (they notice their channel closed).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { getPriority } from 'node:os';
import { describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';
import { num, numbers, QlikClient } from '../helpers/qlik-client';
import { evalRows, evalText, waitFor } from '../helpers/sandbox-calls';
import { metricsText, sampleValue, startMain, until } from './process';

/** Pids of a process's children (Linux). */
function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * Descriptors through which a process could reach anything outside itself: sockets, files other
 * than /dev/null, and any it was handed without close-on-exec (inherited). Node's own event-loop
 * pipes and eventfds are not listed. A sandbox process should hold its stderr and its channel only.
 */
/** The niceness of each thread of a process (field 19 of /proc/<pid>/task/<tid>/stat). */
function threadNiceness(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });
}

function inheritedDescriptors(pid: number): string[] {
  const held: string[] = [];
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = readlinkSync(`/proc/${pid}/fd/${name}`);
      const flags = parseInt(/flags:\s*([0-7]+)/.exec(readFileSync(`/proc/${pid}/fdinfo/${name}`, 'latin1'))?.[1] ?? '0', 8);
      const inherited = (flags & 0o2000000) === 0;
      const outward = target.startsWith('socket:') || (target.startsWith('/') && target !== '/dev/null');
      if (outward || (inherited && target !== '/dev/null')) held.push(`${name} ${target.replace(/:\[\d+\]$/, '')}`);
    } catch {
      // closed meanwhile
    }
  }
  return held.sort();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

describe('sandbox processes', { skip: process.platform !== 'linux' && 'reads /proc' }, () => {
  it('hold isolated-vm (the front does not), start with an empty environment and only its two sockets and stderr open', async () => {
    const plugin = await startMain({ SSE_WORKERS: '2', SSE_SANDBOX_PROCESSES: '2', SSE_LOG_LEVEL: 'info', SECRET_TOKEN: 'hunter2' });
    try {
      const pids = childPids(plugin.child.pid as number);
      assert.equal(pids.length, 3, 'two processes and the spare');
      for (const pid of pids) {
        assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /sandbox-main\.js/);
        assert.equal(readFileSync(`/proc/${pid}/environ`, 'utf8'), '', 'environment');
        assert.deepEqual(inheritedDescriptors(pid), ['2 socket', '3 socket', '4 socket']);
        // Every thread of a sandbox process (its main thread, piscina's, V8's) yields the CPU to the front.
        assert.deepEqual([...new Set(threadNiceness(pid))], [Math.max(10, getPriority())]);
      }
      // isolated-vm's native module is mapped in the sandbox processes only, never in the front.
      assert.doesNotMatch(readFileSync(`/proc/${plugin.child.pid as number}/maps`, 'utf8'), /isolated[-_]vm[^/\n]*\.node/);
      assert.deepEqual([...new Set(threadNiceness(plugin.child.pid as number))], [getPriority()], 'the front keeps its own priority');
      for (const pid of pids) assert.match(readFileSync(`/proc/${pid}/maps`, 'utf8'), /isolated[-_]vm[^/\n]*\.node/);
      const client = new QlikClient(`127.0.0.1:${plugin.port}`);
      const result = await evalText(client, 'typeof process + "," + typeof require');
      client.close();
      assert.equal(result.code, status.OK, result.details);
    } finally {
      await plugin.kill();
    }
  });

  it('a graceful stop finishes the call in flight, then ends every sandbox process, the spare too', async () => {
    const plugin = await startMain({ SSE_WORKERS: '2', SSE_SANDBOX_PROCESSES: '2', SSE_LOG_LEVEL: 'info', SSE_METRICS_PORT: '0' });
    const pids = childPids(plugin.child.pid as number);
    assert.equal(pids.length, 3, 'two processes and the spare');
    const client = new QlikClient(`127.0.0.1:${plugin.port}`);
    const rows = Array.from({ length: 50 }, (_, i) => [num(i)]);
    const call = evalRows(client, '{ const end = Date.now() + 10; while (Date.now() < end); return args[0] + 1; }', rows);
    // In flight for sure (a sandbox runs it) before the signal, whatever the machine's speed.
    await until(
      async () => sampleValue(await metricsText(plugin.metricsPort ?? 0), 'sse_busy_workers'),
      (busy) => busy >= 1,
      30_000,
    );
    plugin.child.kill('SIGTERM');
    const result = await call;
    client.close();
    assert.equal(result.code, status.OK, result.details);
    assert.deepEqual(
      numbers(result),
      rows.map((_, i) => i + 1),
    );
    assert.deepEqual(await plugin.exited, { code: 0, signal: null });
    await waitFor('no sandbox process left', () => pids.every((pid) => !alive(pid)), 15_000);
  });

  it('a front killed with SIGKILL leaves no sandbox process behind', async () => {
    const plugin = await startMain({ SSE_WORKERS: '2', SSE_SANDBOX_PROCESSES: '2', SSE_LOG_LEVEL: 'info' });
    const pids = childPids(plugin.child.pid as number);
    assert.equal(pids.length, 3, 'two processes and the spare');
    await plugin.kill();
    await waitFor('no sandbox process left', () => pids.every((pid) => !alive(pid)), 15_000);
  });
});
