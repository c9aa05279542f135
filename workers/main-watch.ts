/**
 * What watches the sandbox process's main thread while it runs scripts itself (workers/fast-path.ts).
 * isolated-vm enforces a time limit from a thread of its own, but native work that ignores
 * termination (a regular expression with millions of alternatives compiles for seconds) or an isolate
 * V8 gave up on keeps the main thread for ever: it would read no more frames and run no watchdog.
 * So a small thread of its own (main-watcher-thread.ts) looks at a shared cell the main thread
 * writes when it enters its isolate and when it leaves, every WATCH_INTERVAL_MS, and when the main
 * thread stays in past its time limit + STUCK_GRACE_MS it writes RETIRE naming the task to blame on
 * the channel itself (the main thread cannot) and ends the process if that fails. The front then
 * ends the process and fails the task as it would for a stuck pool thread. Long before that, once a
 * task has held the main thread heldNoticeMs (past the fast path's budget: native work), it writes
 * HELD naming the task, so that the front stops sending here and sends the tasks that wait unread
 * behind it elsewhere (src/sandboxes/supervisor.ts).
 *
 * The cell: a busy-period number (0 when out of the isolate), the task's id (+1; 0 between tasks),
 * the period's time limit, whether V8 gave up on the isolate (onCatastrophicError), and the period's
 * own notice time when it is not the watcher's.
 */
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import { CHANNEL_FD } from '../src/contract/channel';
import type { ThreadActivity } from './thread/sandbox';

export const WATCH_PERIOD = 0;
export const WATCH_TASK = 1;
export const WATCH_TIMEOUT_MS = 2;
export const WATCH_FATAL = 3;
/** This period's own heldNoticeMs (a task with a longer time on the fast path); 0: the watcher's. */
export const WATCH_NOTICE_MS = 4;
const CELLS = 5;

/** What the watcher thread starts with. */
export interface WatcherData {
  readonly cells: SharedArrayBuffer;
  readonly graceMs: number;
  readonly intervalMs: number;
  /** Where RETIRE goes: the channel (tests pass a file). */
  readonly channelFd: number;
  /** After RETIRE, how long the front has to end the process before it ends itself; 0: never (tests). */
  readonly killAfterMs: number;
  /** How long a task may hold the main thread before the front is told (HELD), unless its period says; 0: never, whatever a period says. */
  readonly heldNoticeMs: number;
}

export interface WatchOptions {
  readonly graceMs: number;
  readonly intervalMs: number;
  readonly heldNoticeMs?: number;
  readonly channelFd?: number;
  readonly killAfterMs?: number;
}

/** The front ends a retiring process at once; this is only the backstop if it does not. */
const KILL_AFTER_MS = 10_000;

export class MainThreadWatch implements ThreadActivity {
  private readonly view: Int32Array;
  private period = 0;
  private readonly watcher: Worker;

  constructor({ graceMs, intervalMs, channelFd = CHANNEL_FD, killAfterMs = KILL_AFTER_MS, heldNoticeMs = 0 }: WatchOptions) {
    const cells = new SharedArrayBuffer(CELLS * Int32Array.BYTES_PER_ELEMENT);
    this.view = new Int32Array(cells);
    const watcher = new Worker(path.join(__dirname, 'main-watcher-thread.js'), {
      workerData: { cells, graceMs, intervalMs, channelFd, killAfterMs, heldNoticeMs } satisfies WatcherData,
      // It only reads four cells and writes one small frame.
      resourceLimits: { maxOldGenerationSizeMb: 8, maxYoungGenerationSizeMb: 2 },
      stdout: false,
      stderr: false,
    });
    // A watcher that failed to start leaves the front's backstop (a task unanswered past its limit + 5 s).
    watcher.on('error', (error) => process.stderr.write(`sandbox main-thread watcher failed: ${error.message}\n`));
    watcher.unref();
    this.watcher = watcher;
  }

  /** Ends the watcher thread (tests; a sandbox process keeps its watcher until it ends). */
  stop(): Promise<number> {
    return this.watcher.terminate();
  }

  /**
   * The main thread enters its isolate for a task (taskId) or between tasks (no id), for at most
   * timeoutMs: for a task, what its call has left, not the fast path's budget, since native work may
   * run past the budget and the task is then only moved (workers/fast-path.ts). heldNoticeMs: this
   * task's own time before the front is told it holds the thread, when not the watcher's.
   */
  enter(timeoutMs: number, taskId?: number, heldNoticeMs = 0): void {
    this.period = (this.period % 0x7fff_fffe) + 1;
    Atomics.store(this.view, WATCH_TIMEOUT_MS, timeoutMs);
    Atomics.store(this.view, WATCH_NOTICE_MS, heldNoticeMs);
    Atomics.store(this.view, WATCH_TASK, taskId === undefined ? 0 : (taskId + 1) | 0);
    Atomics.store(this.view, WATCH_PERIOD, this.period);
  }

  leave(): void {
    Atomics.store(this.view, WATCH_PERIOD, 0);
  }

  /** isolated-vm's word that V8 gave up on the main thread's isolate: the watcher names the task as fatal. */
  fatal(): void {
    Atomics.store(this.view, WATCH_FATAL, 1);
  }
}
