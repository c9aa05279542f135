/**
 * The front's view of one call's time budget (SSE_SCRIPT_TIMEOUT_MS, shared by all the call's tasks).
 * The script time each task's result reports spends it. An attempt lost with its sandbox process is
 * not charged (src/sandboxes/pool.ts): most such tasks are bystanders of another call's script, and a
 * script that kills sandboxes itself fails on its one retry. The sum is sent with every task
 * (spentMs); inside a sandbox process the call's tasks also add to a shared cell
 * (workers/thread/evaluate.ts), and the larger figure wins there. Everything the front writes about
 * a call's time goes through here: the pipeline stops starting tasks once the budget is spent, and
 * the call's log line reports the results' script time and whether the limit stopped it.
 *
 * It reads no clock: callers pass the milliseconds they measured, so test/unit/call-budget.test.ts
 * drives it with plain numbers.
 */
import type { PluginError } from '../contract/errors';
import { timeLimitError } from '../contract/limit-errors';

export class CallBudget {
  private resultsMs = 0;
  private stopped = false;

  constructor(readonly timeoutMs: number) {}

  /** What the call has used: its results' script time (sent with each task). */
  get spentMs(): number {
    return this.resultsMs;
  }

  get remainingMs(): number {
    return Math.max(0, this.timeoutMs - this.spentMs);
  }

  /** Script time its results reported (the call's log line). */
  get scriptMs(): number {
    return this.resultsMs;
  }

  /** The time limit stopped the call: a task ran out of it, or none could start. */
  get timedOut(): boolean {
    return this.stopped;
  }

  /** A task's result came back (`timedOut`: its sandbox stopped it at the call's limit). */
  addResult(scriptMs: number, timedOut: boolean): void {
    this.resultsMs += scriptMs;
    if (timedOut) this.stopped = true;
  }

  /** The error to fail the call with before starting another task, or null while time is left. */
  checkBeforeTask(): PluginError | null {
    if (this.remainingMs > 0) return null;
    this.stopped = true;
    return timeLimitError(this.timeoutMs);
  }
}
