/**
 * The piscina pool of one sandbox process: a thread per isolate. Tasks go in as EvaluateTask and
 * come back as TaskResult; a thread that dies fails only its task, as data.
 *
 * A watchdog covers what isolated-vm cannot. Some allocations make V8 give up on an isolate
 * (isolated-vm #107, #527): its thread hangs for ever, and onCatastrophicError marks the task
 * (TASK_FATAL) when it gets to run (measured: it did not before the front, reading V8's report on
 * stderr, ended the process). Some native work cannot be interrupted (a regular expression with millions of
 * alternatives compiles for seconds): the task runs on well past its time limit. A thread also enters
 * its isolate between tasks (workers/thread-activity.ts), watched the same way for a while after the
 * last task. Either way the thread is lost, and with it the memory it holds: the pool reports the task to blame through
 * onRetire, takes no more work, and the front ends the whole process (src/sandboxes/sandbox-process.ts).
 */
import path from 'node:path';

import Piscina from 'piscina';
import type { Retirement } from '../src/contract/control-frames';
import { PluginError } from '../src/contract/errors';
import { memoryLimitError } from '../src/contract/limit-errors';
import type { TaskResult } from '../src/contract/task';
import { newResultLock } from './result-writer';
import type { SandboxLimits } from './thread/sandbox';
import { ActivityWatch, newActivityCells } from './thread-activity';
import { newStopCells, TaskStops } from './thread-stop';
import {
  CONTROL_STATE,
  CONTROL_STOP,
  CONTROL_TIMEOUT_MS,
  type EvaluateTask,
  newControl,
  STOP_CALL_ENDED,
  STOP_YIELD,
  TASK_FATAL,
  TASK_RUNNING,
} from './thread-task';

const THREAD_FILE = path.join(__dirname, 'thread', 'evaluate.js');
/** How long past its time limit a running task may go before its thread is presumed stuck. */
export const STUCK_GRACE_MS = 1_000;
const WATCH_INTERVAL_MS = 50;
/** The watchdog keeps looking this long after the last task: a thread prepares its next context ~2 ms after one. */
const WATCH_LINGER_MS = 1_000;

/** Host-side heap of a thread (decoding, encoding, result copies), apart from the isolate's own heap. */
export function threadHeapMb(memoryLimitMb: number): number {
  return Math.max(256, memoryLimitMb * 4);
}

/** What each thread starts with: the limits, and the lock its results socket is written under. */
export interface ThreadData extends SandboxLimits {
  readonly resultLock: SharedArrayBuffer;
  /** Where each thread says which task it runs, and is told to stop it (workers/thread-stop.ts). */
  readonly stopCells: SharedArrayBuffer;
  /** Where each thread reports its between-task work (workers/thread-activity.ts). */
  readonly activity: SharedArrayBuffer;
}

interface Watched {
  readonly taskId: number;
  readonly callId: number;
  readonly control: Int32Array;
  startedAt: number;
}

export class ThreadPool {
  private readonly piscina: Piscina<EvaluateTask | null, TaskResult | null>;
  private readonly watched = new Set<Watched>();
  private readonly activity: ActivityWatch;
  private readonly stops: TaskStops;
  private lastTaskEndMs = 0;
  /** Runs only while tasks do: an idle sandbox process wakes for nothing. */
  private watchdog: NodeJS.Timeout | undefined;
  private retired = false;
  /** The lock every writer of the results socket takes, the main thread's fast path included. */
  readonly resultLock = newResultLock();

  constructor(
    private readonly threads: number,
    private readonly limits: SandboxLimits,
    private readonly onRetire: (retirement: Retirement) => void,
  ) {
    const activity = newActivityCells();
    this.activity = new ActivityWatch(activity);
    const stopCells = newStopCells();
    this.stops = new TaskStops(stopCells);
    this.piscina = new Piscina<EvaluateTask | null, TaskResult | null>({
      filename: THREAD_FILE,
      minThreads: threads,
      maxThreads: threads,
      idleTimeout: Number.POSITIVE_INFINITY,
      // async: a thread's event loop keeps running between tasks, so it can prepare the next context.
      atomics: 'async',
      // Timing histograms are piscina's; the plugin measures its own (sse_call_duration_seconds).
      recordTiming: false,
      workerData: { ...limits, resultLock: this.resultLock, stopCells, activity } satisfies ThreadData,
      resourceLimits: { maxOldGenerationSizeMb: threadHeapMb(limits.memoryLimitMb) },
    });
  }

  /** Resolves once every thread has built its isolate, so the first calls do not pay for it. */
  async ready(): Promise<void> {
    await Promise.all(Array.from({ length: this.threads }, () => this.piscina.run(null, { name: 'warmUp' })));
  }

  /**
   * Runs one task; never rejects: a thread that dies becomes a TaskFailure. Resolves with null when
   * the thread wrote the result to the front itself, else with the result for the caller to send.
   */
  async run(task: Omit<EvaluateTask, 'control'>, transferList: ArrayBuffer[]): Promise<TaskResult | null> {
    const { taskId, callId } = task;
    const control = newControl();
    const entry: Watched = { taskId, callId, control: new Int32Array(control), startedAt: 0 };
    this.watched.add(entry);
    if (!this.retired) this.watchdog ??= setInterval(() => this.check(), WATCH_INTERVAL_MS).unref();
    try {
      return await this.piscina.run({ ...task, control }, { transferList });
    } catch (error) {
      return threadFailure(error, this.limits.memoryLimitMb);
    } finally {
      this.watched.delete(entry);
      this.lastTaskEndMs = performance.now();
    }
  }

  /**
   * The call ended (the front closed it): its tasks here stop, the one a thread runs at once, those
   * still waiting for a thread when they reach one. Nobody reads their results but the front's count
   * of what each thread was busy with, which so charges the call's client until its task stopped.
   */
  stopCall(callId: number): void {
    for (const entry of this.watched) {
      if (entry.callId !== callId) continue;
      Atomics.store(entry.control, CONTROL_STOP, STOP_CALL_ENDED);
      this.stops.stop(entry.taskId);
    }
  }

  /**
   * The front asks a task back (YIELD): it stops where it runs, or before it starts, and answers
   * ABORTED with no script time spent; the front sends it again later. Unknown (answered) ids are ignored.
   */
  yieldTask(taskId: number): void {
    for (const entry of this.watched) {
      if (entry.taskId !== taskId) continue;
      // A call that ended meanwhile keeps its stop.
      if (Atomics.compareExchange(entry.control, CONTROL_STOP, 0, STOP_YIELD) === 0) this.stops.stop(taskId);
      return;
    }
  }

  private check(): void {
    if (this.retired) return;
    const now = performance.now();
    const between = this.activity.check(now, STUCK_GRACE_MS);
    if (between === 'stuck') return this.retire('stuck', null, 'a sandbox thread stopped responding between tasks, past its time limit');
    if (this.watched.size === 0 && between === 'idle' && now - this.lastTaskEndMs > WATCH_LINGER_MS) return this.stopWatching();
    for (const entry of this.watched) {
      const state = Atomics.load(entry.control, CONTROL_STATE);
      if (state === TASK_FATAL) return this.retire('fatal', entry, 'V8 gave up on the sandbox (a fatal out-of-memory error)');
      if (state !== TASK_RUNNING) continue;
      if (entry.startedAt === 0) entry.startedAt = now;
      else if (now - entry.startedAt > Atomics.load(entry.control, CONTROL_TIMEOUT_MS) + STUCK_GRACE_MS) {
        return this.retire('stuck', entry, 'a sandbox thread stopped responding past its time limit');
      }
    }
  }

  private stopWatching(): void {
    clearInterval(this.watchdog);
    this.watchdog = undefined;
  }

  /** entry: the task to blame, or null when the thread was stuck between tasks (no call's fault). */
  private retire(reason: Retirement['reason'], entry: Watched | null, detail: string): void {
    this.retired = true;
    this.stopWatching();
    this.onRetire({ reason, taskIds: entry === null ? [] : [entry.taskId], detail });
  }
}

function threadFailure(error: unknown, memoryLimitMb: number): TaskResult {
  const message = error instanceof Error ? error.message : String(error);
  // Node: "Worker terminated due to reaching memory limit: JS heap out of memory".
  const failure = /memory limit|out of memory/i.test(message)
    ? memoryLimitError(memoryLimitMb, 'its sandbox thread ran out of memory and was replaced')
    : new PluginError('UNAVAILABLE', `a sandbox thread stopped unexpectedly (${message}); the call was not completed, try again`);
  return { ok: false, error: failure.toData(), scriptMs: 0, isolateRebuilt: false, timedOut: false };
}
