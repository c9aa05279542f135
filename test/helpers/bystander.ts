/**
 * What every hostile-client test asserts besides its own attack: while the attack runs, a normal call
 * from another client (its own channel) keeps answering right within a second, and the front's event
 * loop (this process: startTestPlugin runs the front here) is never blocked for long.
 */
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';

import { status } from '@grpc/grpc-js';

import { num, numbers, QlikClient } from './qlik-client';
import { evalRows } from './sandbox-calls';

export interface BystanderReport {
  readonly calls: number;
  readonly slowestMs: number;
  /** Longest event-loop delay seen while the attack ran. */
  readonly maxLoopDelayMs: number;
  /** What went wrong with normal calls: answers that were wrong or came later than maxCallMs. */
  readonly failures: readonly string[];
}

const ROWS = Array.from({ length: 20 }, (_, i) => [num(i)]);
const EXPECTED = ROWS.map((_, i) => i * 2 + 1);

/**
 * Runs attack() while another client makes a normal call every 100 ms, noting each that did not answer
 * right within maxCallMs (a call refused as busy counts as an answer only when allowBusy): assertServed.
 */
export async function withBystander<T>(
  address: string,
  attack: () => Promise<T>,
  options: { maxCallMs?: number; allowBusy?: RegExp } = {},
): Promise<{ value: T; report: BystanderReport }> {
  const maxCallMs = options.maxCallMs ?? 1_000;
  const client = new QlikClient(address);
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let running = true;
  let calls = 0;
  let slowestMs = 0;
  const failures: string[] = [];
  const bystander = (async () => {
    while (running) {
      const started = performance.now();
      const result = await evalRows(client, 'args[0] * 2 + 1', ROWS);
      const ms = performance.now() - started;
      calls++;
      slowestMs = Math.max(slowestMs, ms);
      const busy = options.allowBusy?.test(result.details);
      if (!busy && (result.code !== status.OK || numbers(result).join() !== EXPECTED.join()))
        failures.push(`${result.code} ${result.details}`);
      if (ms > maxCallMs) failures.push(`a normal call took ${Math.round(ms)} ms`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  try {
    const value = await attack();
    running = false;
    await bystander;
    assert.ok(calls > 0, 'the bystander made no call');
    return { value, report: { calls, slowestMs, maxLoopDelayMs: loop.max / 1e6, failures } };
  } finally {
    running = false;
    loop.disable();
    client.close();
  }
}

/** Asserts (after the test has said its figures) that normal calls answered right and in time. */
export function assertServed(report: BystanderReport): void {
  assert.deepEqual(report.failures, [], 'normal calls from another client failed or were slow during the attack');
}

export function describeReport(report: BystanderReport): string {
  return `bystander: ${report.calls} calls, slowest ${Math.round(report.slowestMs)} ms; event loop delay max ${Math.round(report.maxLoopDelayMs)} ms`;
}
