/**
 * What every hostile-client test asserts besides its own attack: while the attack runs, normal calls
 * from another client (its own channel) keep being answered right, and answered before the attack
 * ends (an order, not a time: a front blocked by the attack, or a call queued behind it, answers only
 * after). The front's event loop (this process: startTestPlugin runs the front here) is watched too.
 */
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';

import { status } from '@grpc/grpc-js';

import { num, numbers, QlikClient } from './qlik-client';
import { evalRows } from './sandbox-calls';

export interface BystanderReport {
  readonly calls: number;
  /** Calls answered right (or refused as allowed) while the attack was still running. */
  readonly answeredDuringAttack: number;
  readonly slowestMs: number;
  /** Longest event-loop delay seen while the attack ran. */
  readonly maxLoopDelayMs: number;
  /** What went wrong with normal calls: answers that were wrong or came later than maxCallMs. */
  readonly failures: readonly string[];
}

/**
 * A hang detector, not a speed test: a normal call takes 10 to 50 ms here, and 5 s is 100 times that,
 * so only a front that stopped answering (or a machine far too loaded to test on) passes it. That the
 * front keeps answering is asserted as answeredDuringAttack.
 */
const MAX_CALL_MS = 5_000;

const ROWS = Array.from({ length: 20 }, (_, i) => [num(i)]);
const EXPECTED = ROWS.map((_, i) => i * 2 + 1);

/**
 * Runs attack() while another client makes a normal call every 100 ms, noting each that did not answer
 * right within maxCallMs (a call refused as busy counts as an answer only when allowBusy): assertServed.
 */
export async function withBystander<T>(
  address: string,
  /** answered: the bystander's calls answered so far while the attack runs (to wait for one while its state holds). */
  attack: (bystander: { answered(): number }) => Promise<T>,
  options: { maxCallMs?: number; allowBusy?: RegExp } = {},
): Promise<{ value: T; report: BystanderReport }> {
  const maxCallMs = options.maxCallMs ?? MAX_CALL_MS;
  const client = new QlikClient(address);
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let running = true;
  let calls = 0;
  let answeredDuringAttack = 0;
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
      const right = result.code === status.OK && numbers(result).join() === EXPECTED.join();
      // A refusal as busy, where allowed, is an answer too: the front was not blocked.
      if ((right || busy) && running) answeredDuringAttack++;
      if (!busy && !right) failures.push(`${result.code} ${result.details}`);
      if (ms > maxCallMs) failures.push(`a normal call took ${Math.round(ms)} ms`);
      // Paces the calls (about ten a second), so the bystander does not load the machine itself.
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  try {
    const value = await attack({ answered: () => answeredDuringAttack });
    running = false;
    await bystander;
    assert.ok(calls > 0, 'the bystander made no call');
    return { value, report: { calls, answeredDuringAttack, slowestMs, maxLoopDelayMs: loop.max / 1e6, failures } };
  } finally {
    running = false;
    loop.disable();
    client.close();
  }
}

/** Asserts (after the test has said its figures) that normal calls answered right, and some while the attack ran. */
export function assertServed(report: BystanderReport): void {
  assert.deepEqual(report.failures, [], 'normal calls from another client failed or hung during the attack');
  assert.ok(report.answeredDuringAttack > 0, 'no normal call from another client was answered while the attack ran');
}

export function describeReport(report: BystanderReport): string {
  return `bystander: ${report.calls} calls (${report.answeredDuringAttack} answered during the attack), slowest ${Math.round(report.slowestMs)} ms; event loop delay max ${Math.round(report.maxLoopDelayMs)} ms`;
}
