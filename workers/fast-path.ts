/**
 * Small tasks run on the sandbox process's main thread, in an isolate of its own, instead of being
 * handed to a piscina thread: for a one-row call that hand-off (a thread wake-up, and the result's
 * way back) cost more than running the script (bench/RESULTS.md). The isolate has the same memory
 * and time limits, the same runtime and the same context-sharing rules as a pool thread's (one
 * TaskEvaluator each: workers/thread/task-evaluator.ts), and the result goes to the front the same
 * way, on fd 4 under the threads' lock.
 *
 * The main thread also reads the channel and runs the pool's watchdog, so it runs a task only for
 * a short budget (SSE_FAST_PATH_MS). A task still running at the budget is stopped by isolated-vm
 * like any timed-out script (its isolate is rebuilt), its partial output is discarded, and it is
 * handed to a pool thread to run again from the start with the call's full time: a script has no
 * effect outside its call, so running it again is safe (security.md). A context key whose tasks
 * outgrow it twice is then kept off the fast path for a while, so a slow LOAD pays that only twice;
 * a task that spent its budget mostly waiting for a busy CPU does not count. While the main thread is in
 * its isolate a watcher thread watches it (workers/main-watch.ts).
 *
 * V8 itself pauses some tasks: the runtime's own functions are compiled by TurboFan on the thread that
 * runs them (the sandbox processes run without concurrent recompilation), once in each new context at
 * about its 34th task, and that took 7-22 ms of a 1-row task's time on a slow 2-core VM, as a major
 * collection can. Stopped at the budget, such a row was moved, its isolate rebuilt (so the next context
 * compiled again), and after two of them the LOAD's rows went through the pool for 10 s: ~900 of 3,000
 * rows in one bench run (bench/RESULTS.md). So a key whose last PROVEN_AFTER_TASKS tasks all ended
 * within the budget has PROVEN_BUDGETS times the budget before its task is stopped; a task that uses
 * any of that allowance uses it up until PROVEN_AFTER_TASKS more end within the budget, so a script that
 * runs long after proving itself holds the main thread that much longer once, then takes its strikes as
 * any other. Strikes are per key, and a script made unique each call has a new key each time: the
 * tasks of keys not proven share UNPROVEN_SHARE_BUDGETS budgets of the main thread's recent time, and
 * past that only proven keys (a LOAD's rows) take the fast path.
 *
 * Some native work cannot be stopped at the budget (compiling a huge eval, replaceAll on a long string):
 * the attempt holds the main thread until that work ends, and the process reads no task meanwhile. Such
 * an attempt is still only moved, never blamed: the watcher measures it against the call's time left,
 * not the budget, so the process is retired only for a task stuck past its call's own limit, as a pool
 * thread's would be (and one that used more CPU than its call had left fails on that limit). Its key is kept off at once, and the whole fast path pauses for a while in
 * proportion to how long the main thread was held, so no script, repeated or made unique each call,
 * holds the main thread for more than a small share of the time. Work that holds it HELD_NOTICE_MS past
 * its time here is also told to the front by the watcher (HELD): the front gives this process's slot to a
 * spare, sends the tasks waiting unread behind it there, and pauses every process's fast path, a
 * memory that outlives this process (src/sandboxes/fast-path-gate.ts).
 */
import { fastPathPauseMs } from '../src/contract/channel';
import { timeLimitError } from '../src/contract/limit-errors';
import type { TaskResult } from '../src/contract/task';
import { MainThreadWatch } from './main-watch';
import { ResultWriter } from './result-writer';
import type { SandboxLimits } from './thread/sandbox';
import { TaskEvaluator, type TaskInput } from './thread/task-evaluator';
import { STUCK_GRACE_MS } from './thread-pool';
import { BUDGET_SPENT_MS } from './thread-task';

/** Larger tasks go to the pool: they are bulk calls' chunks, which the pool's threads run side by side. */
export const FAST_PATH_MAX_BYTES = 32 * 1024;
/** How long a context key whose tasks outgrew the budget stays off the fast path. */
const SLOW_KEY_MS = 10_000;
/**
 * Tasks of a key that must outgrow the budget (within SLOW_KEY_MS of each other) before the key stays
 * off: a key's first task also compiles its script and fills a fresh context (35 ms of CPU measured
 * for the first task after start), which its next tasks do not pay.
 */
const SLOW_STRIKES = 2;
const MAX_SLOW_KEYS = 1_024;
/** A task moved after using at least this share of its budget in CPU time keeps its key off the fast path. */
const SLOW_CPU_SHARE = 0.5;
/** Tasks of a key that must end within the budget, one after another, before its tasks get PROVEN_BUDGETS. */
const PROVEN_AFTER_TASKS = 20;
/**
 * How many budgets a proven key's task may run before it is stopped: room for V8's compiler or collector
 * (7-22 ms measured on top of a 1-row task's 0.1-0.3 ms), and a bound on what a script that proved itself
 * and then runs long holds the main thread for, once. A bystander's LOAD beside an app whose every 21st
 * row takes 45 ms waited up to 69-95 ms with 5, 73-74 ms with 3, against 47-61 ms with no allowance
 * (bench/experiments/bystander.ts; p99 the same, 13-18 ms).
 */
export const PROVEN_BUDGETS = 3;
/**
 * Main-thread time the tasks of keys not proven (PROVEN_AFTER_TASKS) may have taken lately, in budgets,
 * decayed with a half-life of UNPROVEN_HALF_LIFE_MS; past it only proven keys take the fast path. Strikes
 * are per key, and a script made unique each call (a new app id each time) has a key of its own each
 * time: at 9 ms a call, just under the budget, one such client took the main thread from a bystander's
 * LOAD call after call (its p50 12 against 4.4 ms with the fast path off, a black-box pass). A sheet of
 * 20 new charts at 1-5 ms each, or a LOAD's first rows, stay under it.
 */
export const UNPROVEN_SHARE_BUDGETS = 10;
const UNPROVEN_HALF_LIFE_MS = 1_000;
/**
 * CPU time past the budget after which an attempt counts as one that could not be stopped: isolated-vm
 * ends an interruptible script within a millisecond of its limit, so only native work (or a collection
 * at the memory limit) goes this far past it.
 */
const UNSTOPPABLE_OVERRUN_MS = 50;
/**
 * How long past its call's time left the main thread may stay in its isolate before its process is
 * retired: a pool thread's grace. Every task sent to this process waits behind it meanwhile, but a shorter one
 * (400 ms, tried) retired a process whose isolate was still collecting garbage at its memory limit
 * when the budget ran out: V8 answers the termination only after that collection.
 */
export const MAIN_STUCK_GRACE_MS = STUCK_GRACE_MS;
/**
 * How long past its time here (the budget, or a proven key's PROVEN_BUDGETS of it) a task may hold the
 * main thread before the front is told (HELD): isolated-vm stops an interruptible script within a
 * millisecond of that time, so this is native work, and every task sent here waits behind it; the front
 * then sends the waiting tasks elsewhere (a bystander waits about this long plus the watcher's first
 * look, not until the work ends or the process is retired).
 */
const HELD_NOTICE_MS = 100;
/** How often the watcher looks at the main thread: a few wake-ups a second while the process idles. */
const WATCH_INTERVAL_MS = 100;

/** A task as the fast path takes it: its input, its call's time limit and the call's shared budget cell. */
export interface FastTask extends TaskInput {
  readonly taskId: number;
  readonly callTimeoutMs: number;
  readonly budget: SharedArrayBuffer;
}

export class FastPath {
  private readonly evaluator: TaskEvaluator;
  private readonly watch: MainThreadWatch;
  private readonly results: ResultWriter;
  /** Context keys whose tasks outgrew the budget: how many times, and until when that counts. */
  private readonly slowKeys = new Map<string, { strikes: number; untilMs: number }>();
  /** Context keys by how many of their tasks in a row ended within their time here (PROVEN_AFTER_TASKS), oldest first. */
  private readonly provenKeys = new Map<string, number>();
  /** Until when (performance.now() ms) no task takes the fast path, after an attempt that could not be stopped. */
  private pausedUntilMs = 0;
  /** Main-thread ms of unproven keys' tasks, decayed (UNPROVEN_HALF_LIFE_MS) to unprovenAtMs. */
  private unprovenMs = 0;
  private unprovenAtMs = 0;

  constructor(
    limits: SandboxLimits,
    private readonly budgetMs: number,
    resultLock: SharedArrayBuffer,
    /** Tests pass a watcher and a writer that write to files. */
    parts: { readonly watch?: MainThreadWatch; readonly results?: ResultWriter } = {},
  ) {
    this.watch =
      parts.watch ??
      new MainThreadWatch({
        graceMs: MAIN_STUCK_GRACE_MS,
        intervalMs: WATCH_INTERVAL_MS,
        heldNoticeMs: budgetMs + HELD_NOTICE_MS,
      });
    this.evaluator = new TaskEvaluator(limits, (message) => this.onCatastrophicError(message), this.watch);
    this.results = parts.results ?? new ResultWriter(resultLock);
  }

  get enabled(): boolean {
    return this.budgetMs > 0;
  }

  warmUp(): void {
    if (this.enabled) this.evaluator.warmUp();
  }

  /** Whether a task of this size and key may run here. */
  accepts(contextKey: string, rowBytes: number): boolean {
    const now = performance.now();
    if (!this.enabled || rowBytes > FAST_PATH_MAX_BYTES || now < this.pausedUntilMs) return false;
    if (!this.proven(contextKey) && this.unprovenLoad(now) > this.budgetMs * UNPROVEN_SHARE_BUDGETS) return false;
    const slow = this.slowKeys.get(contextKey);
    if (slow === undefined) return true;
    if (now >= slow.untilMs) this.slowKeys.delete(contextKey);
    else if (slow.strikes >= SLOW_STRIKES) return false;
    return true;
  }

  /**
   * Runs the task here. 'moved' when it outgrew the budget and must run again on a pool thread (its
   * attempt here is not charged to the call); 'sent' once its result went to the front; else the
   * result, for the channel (the results socket could not take it).
   */
  run(task: FastTask): 'moved' | 'sent' | TaskResult {
    const spent = new Int32Array(task.budget);
    const leftMs = task.callTimeoutMs - Atomics.load(spent, BUDGET_SPENT_MS);
    const proven = this.proven(task.contextKey);
    const timeoutMs = Math.min(proven ? this.budgetMs * PROVEN_BUDGETS : this.budgetMs, leftMs);
    let result: TaskResult;
    if (timeoutMs <= 0) result = timedOut(task.callTimeoutMs);
    else {
      // Stuck only past what the call has left: past the budget alone the task is moved, not blamed.
      this.watch.enter(leftMs, task.taskId, timeoutMs + HELD_NOTICE_MS);
      const startedMs = performance.now();
      try {
        result = this.evaluator.run(task, timeoutMs);
      } finally {
        this.watch.leave();
      }
      const endedMs = performance.now();
      const heldMs = endedMs - startedMs;
      if (!proven) {
        this.unprovenMs = this.unprovenLoad(endedMs) + heldMs;
        this.unprovenAtMs = endedMs;
      }
      if (!result.ok && result.timedOut && timeoutMs < leftMs) {
        const cpuMs = this.evaluator.lastCpuMs;
        this.provenKeys.delete(task.contextKey);
        this.noteOverrun(task.contextKey, timeoutMs, cpuMs, heldMs);
        // Work that could not be stopped and used more CPU than the call has: past its own limit, as on a pool thread.
        if (cpuMs < leftMs) return 'moved';
        result = { ...timedOut(task.callTimeoutMs), scriptMs: cpuMs };
      } else if (heldMs >= timeoutMs + UNSTOPPABLE_OVERRUN_MS) {
        // Native work that held the thread past the budget and then ended otherwise (the memory limit,
        // an answer): the same hold for everyone else. A black-box pass held it 3-4 s a call with work
        // that ended on the memory limit, and the fast path never paused. Judged by the CPU the isolate
        // used, not the wall time: a thread the machine did not run for 60 ms (a busy 2-core VM) paused
        // the whole fast path for 10 s, and a LOAD's rows went through the pool meanwhile.
        this.provenKeys.delete(task.contextKey);
        this.noteOverrun(task.contextKey, timeoutMs, this.evaluator.lastCpuMs, heldMs);
      } else this.noteEnded(task.contextKey, this.evaluator.lastCpuMs < this.budgetMs);
    }
    Atomics.add(spent, BUDGET_SPENT_MS, Math.ceil(result.scriptMs));
    result = { ...result, route: 'main' };
    return this.results.write(task.taskId, result) ? 'sent' : result;
  }

  /**
   * An attempt that outgrew the budget: its key gets a strike, or all of them with a pause of the whole
   * fast path when it could not be stopped. The budget is wall time: a script that was mostly waiting
   * for a busy CPU is not a slow one, so CPU time decides.
   */
  private noteOverrun(contextKey: string, timeoutMs: number, cpuMs: number, heldMs: number): void {
    if (cpuMs >= timeoutMs + UNSTOPPABLE_OVERRUN_MS) {
      this.markSlow(contextKey, SLOW_STRIKES);
      // The front pauses every process so too when it hears of the hold or of a process that died
      // holding tasks (src/sandboxes/fast-path-gate.ts): a replacement starts without this memory.
      this.pausedUntilMs = Math.max(this.pausedUntilMs, performance.now() + fastPathPauseMs(heldMs));
    } else if (cpuMs >= timeoutMs * SLOW_CPU_SHARE) this.markSlow(contextKey, 1);
  }

  private proven(contextKey: string): boolean {
    return (this.provenKeys.get(contextKey) ?? 0) >= PROVEN_AFTER_TASKS;
  }

  /** Main-thread ms unproven keys' tasks have taken lately (UNPROVEN_SHARE_BUDGETS). */
  private unprovenLoad(nowMs: number): number {
    return this.unprovenMs * 2 ** (-(nowMs - this.unprovenAtMs) / UNPROVEN_HALF_LIFE_MS);
  }

  /**
   * A task of the key ended within its time here: within the budget, one more towards (or kept at)
   * PROVEN_AFTER_TASKS; past it (the allowance used), back to none, so a script that is slow every
   * time gets the allowance once and then the budget alone (moved, strikes), and one that is slow
   * every so often at most once every PROVEN_AFTER_TASKS + 1 tasks.
   */
  private noteEnded(contextKey: string, withinBudget: boolean): void {
    const ended = withinBudget ? Math.min(PROVEN_AFTER_TASKS, (this.provenKeys.get(contextKey) ?? 0) + 1) : 0;
    this.provenKeys.delete(contextKey);
    this.provenKeys.set(contextKey, ended);
    for (const [oldest] of this.provenKeys) {
      if (this.provenKeys.size <= MAX_SLOW_KEYS) break;
      this.provenKeys.delete(oldest);
    }
  }

  private markSlow(contextKey: string, addStrikes: number): void {
    const strikes = (this.slowKeys.get(contextKey)?.strikes ?? 0) + addStrikes;
    this.slowKeys.delete(contextKey);
    this.slowKeys.set(contextKey, { strikes, untilMs: performance.now() + SLOW_KEY_MS });
    for (const [oldest] of this.slowKeys) {
      if (this.slowKeys.size <= MAX_SLOW_KEYS) break;
      this.slowKeys.delete(oldest);
    }
  }

  /** As on a pool thread (workers/thread/evaluate.ts): native work past the limit is stuck, not fatal. */
  private onCatastrophicError(message: string): void {
    if (!/failed to terminate/i.test(message)) this.watch.fatal();
  }
}

function timedOut(callTimeoutMs: number): TaskResult {
  return { ok: false, error: timeLimitError(callTimeoutMs).toData(), scriptMs: 0, isolateRebuilt: false, timedOut: true };
}
