/**
 * The scheduler of the sandbox processes: the one queue of tasks in the front. A task is sent
 * to a process only when one of its threads is free, so the least busy process gets it and a dead
 * process takes few tasks with it; until its result arrives the front keeps the task's row bytes.
 * Starting, replacing and ending the processes is the supervisor's (src/sandboxes/supervisor.ts).
 *
 * When a sandbox process ends on its own (a crash, an abort, an OOM kill) or is ended by the front
 * (past its memory fence, or retiring after V8 gave up on a thread), its tasks are not lost:
 * - a task the process itself named as the culprit (src/sandboxes/sandbox-process.ts, Retirement) fails its
 *   call with the reason (memory, or a thread stuck past the time limit);
 * - a task that merely ran beside a named culprit is sent again, as if it had never run;
 * - with no culprit named, every task it ran is suspect: sent again once, alone on a process, and
 *   failed if that process dies too. So the call whose script kills sandboxes fails, and the calls
 *   of everyone else answer right, only later.
 * The supervisor replaces the dead process at once, or after a growing delay when they keep dying.
 */
import { MAX_OPEN_CALLS } from '../contract/channel';
import { PluginError } from '../contract/errors';
import type { TaskResult } from '../contract/task';
import type { Logger } from '../ops/log';
import { culpritError, type RestartReason, restartReason, suspectError } from './recovery';
import type { SandboxExit, SandboxProcess } from './sandbox-process';
import { type PoolEvents, type PoolSettings, SandboxSupervisor } from './supervisor';
import { type QueuedTask, TaskQueue } from './task-queue';
import type { TaskRequest, TaskRunner } from './task-runner';

export type { PoolEvents, PoolSettings, RestartReason };

export class SandboxPool implements TaskRunner {
  private readonly supervisor: SandboxSupervisor;
  private readonly tasks = new Map<number, QueuedTask>();
  private readonly queue = new TaskQueue();
  private readonly retries = new TaskQueue();
  /**
   * Calls with a task admitted and not closed yet (closeCall): a sandbox process keeps the spec of
   * each it saw, so no process can be asked to keep more than this many (MAX_OPEN_CALLS).
   */
  private readonly openCalls = new Set<number>();
  private nextTaskId = 1;
  private closing = false;

  constructor(
    readonly settings: PoolSettings,
    logger: Logger,
    events: PoolEvents = {},
  ) {
    this.supervisor = new SandboxSupervisor(settings, logger, events, {
      ready: () => this.pump(),
      result: (sandbox, taskId, result) => this.onResult(sandbox, taskId, result),
      ended: (sandbox, exit) => this.onExit(sandbox, exit),
      task: (taskId) => this.tasks.get(taskId),
    });
  }

  /** Starts every sandbox process; rejects with the last thing one said on stderr if one cannot start. */
  start(): Promise<void> {
    return this.supervisor.start();
  }

  private get sandboxes(): readonly (SandboxProcess | undefined)[] {
    return this.supervisor.sandboxes;
  }

  get restarts(): number {
    return this.supervisor.restarts;
  }

  get threads(): number {
    return this.sandboxes.reduce((n, s) => n + (s?.ready ? s.settings.threads : 0), 0);
  }

  get queueSize(): number {
    return this.queue.length + this.retries.length;
  }

  get busyWorkers(): number {
    return this.sandboxes.reduce((n, s) => n + (s?.inFlight.size ?? 0), 0);
  }

  get saturated(): boolean {
    return this.queueSize >= this.settings.maxQueue;
  }

  restartsFor(reason: RestartReason): number {
    return this.supervisor.restartsFor(reason);
  }

  /** The live sandbox processes, for tests and diagnostics. */
  processes(): { index: number; pid: number | undefined; threads: number; busy: number; ready: boolean }[] {
    return this.sandboxes
      .filter((s): s is SandboxProcess => s !== undefined && !s.exited)
      .map((s) => ({ index: s.index, pid: s.pid, threads: s.settings.threads, busy: s.inFlight.size, ready: s.ready }));
  }

  /** Resident memory of every live sandbox process, by index, for metrics. */
  residentBytes(): { index: number; bytes: number }[] {
    const sizes: { index: number; bytes: number }[] = [];
    for (const sandbox of this.sandboxes) {
      const bytes = sandbox?.residentBytes();
      if (sandbox && bytes !== undefined) sizes.push({ index: sandbox.index, bytes });
    }
    return sizes;
  }

  run(request: TaskRequest): Promise<TaskResult> {
    if (this.closing) return Promise.reject(new PluginError('UNAVAILABLE', 'the plugin is shutting down'));
    if (this.queueSize >= this.settings.maxQueue) return Promise.reject(busyError(this.settings.maxQueue));
    if (!this.openCalls.has(request.callId)) {
      // A newcomer is refused, never an open call: its later tasks must find their spec in any process.
      if (this.openCalls.size >= this.maxOpenCalls) return Promise.reject(openCallsError(this.maxOpenCalls));
      this.openCalls.add(request.callId);
    }
    return new Promise<TaskResult>((resolve, reject) => {
      const task: QueuedTask = { id: this.nextTaskId++, request, resolve, reject, retried: false, sentAt: 0, settled: false };
      this.tasks.set(task.id, task);
      this.queue.push(task);
      task.onAbort = () => this.dropQueued(task);
      request.signal?.add(task.onAbort);
      this.pump();
    });
  }

  /** The call ended: sandbox processes that saw it may forget it. */
  closeCall(callId: number): void {
    this.openCalls.delete(callId);
    for (const sandbox of this.sandboxes) sandbox?.closeCall(callId);
  }

  private get maxOpenCalls(): number {
    return this.settings.maxOpenCalls ?? MAX_OPEN_CALLS;
  }

  /** Fails what is queued and ends every sandbox process (the app lets calls in flight end first). */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.supervisor.stop();
    for (const task of [...this.queue.drain(), ...this.retries.drain()])
      this.settle(task, new PluginError('UNAVAILABLE', 'the plugin is shutting down'));
    await this.supervisor.endAll();
  }

  private onResult(sandbox: SandboxProcess, taskId: number, result: TaskResult): void {
    this.queue.finished(taskId);
    const task = this.tasks.get(taskId);
    if (sandbox.quarantined && sandbox.inFlight.size === 0) sandbox.quarantined = sandbox.heldForRetry = false;
    if (task) this.settle(task, result);
    this.pump();
  }

  /** A process ended (the supervisor replaces it): its tasks in flight are settled or sent again. */
  private onExit(sandbox: SandboxProcess, exit: SandboxExit): void {
    for (const taskId of sandbox.inFlight) this.queue.finished(taskId);
    if (this.closing) {
      for (const taskId of sandbox.inFlight) {
        const task = this.tasks.get(taskId);
        if (task) this.settle(task, new PluginError('UNAVAILABLE', 'the plugin is shutting down'));
      }
      return;
    }
    const reason = restartReason(exit);
    const culprits = new Set(exit.retirement?.taskIds ?? []);
    for (const taskId of sandbox.inFlight) {
      const task = this.tasks.get(taskId);
      if (task) this.recover(task, exit, culprits, reason);
    }
    sandbox.inFlight.clear();
  }

  /** What happens to one task of a process that died (see the top of this file). */
  private recover(task: QueuedTask, exit: SandboxExit, culprits: Set<number>, reason: RestartReason): void {
    if (culprits.has(task.id)) return this.settle(task, culpritError(exit, this.settings));
    if (culprits.size > 0) return this.requeue(task, this.queue);
    if (task.retried) return this.settle(task, suspectError(exit, reason, this.settings));
    task.retried = true;
    // The attempt's time counts: a script that kills sandboxes slowly still meets its time limit. Not
    // so when the process stopped answering: its main thread runs no script, so that is not the script.
    if (reason !== 'unanswered') task.request.budget.addLostAttempt(performance.now() - task.sentAt);
    this.requeue(task, this.retries);
  }

  private requeue(task: QueuedTask, queue: TaskQueue): void {
    if (task.request.signal?.aborted) return this.settle(task, new PluginError('CANCELLED', 'the call ended before this chunk ran'));
    queue.unshift(task);
  }

  private pump(): void {
    if (this.closing) return;
    this.pumpRetries();
    while (this.queue.length > 0) {
      const sandbox = this.freest();
      if (!sandbox) break;
      this.send(sandbox, this.queue.shift() as QueuedTask);
    }
    this.supervisor.updateAvailability();
  }

  /**
   * A retried task runs alone: the least busy process is held (no new tasks) until it is idle, then
   * the retry is sent there and nothing else until its result is back.
   */
  private pumpRetries(): void {
    while (this.retries.length > 0) {
      const usable = this.sandboxes.filter((s): s is SandboxProcess => s?.ready === true && !s.exited && !s.ending && !s.quarantined);
      const idle = usable.find((s) => s.inFlight.size === 0);
      if (!idle) {
        const least = usable.sort((a, b) => a.inFlight.size - b.inFlight.size)[0];
        if (least && !usable.some((s) => s.heldForRetry)) least.heldForRetry = true;
        return;
      }
      idle.heldForRetry = true;
      idle.quarantined = true;
      this.send(idle, this.retries.shift() as QueuedTask);
    }
    for (const sandbox of this.sandboxes) if (sandbox && !sandbox.quarantined) sandbox.heldForRetry = false;
  }

  /** The ready process with the most free threads, or none when every thread is busy. */
  private freest(): SandboxProcess | undefined {
    let best: SandboxProcess | undefined;
    let bestFree = 0;
    for (const sandbox of this.sandboxes) {
      if (!sandbox?.ready || sandbox.exited || sandbox.ending || sandbox.heldForRetry || sandbox.quarantined) continue;
      const free = sandbox.settings.threads - sandbox.inFlight.size;
      if (free > bestFree) {
        best = sandbox;
        bestFree = free;
      }
    }
    return best;
  }

  private send(sandbox: SandboxProcess, task: QueuedTask): void {
    const { request } = task;
    task.sentAt = performance.now();
    // Counted running for its app, user and call, however it was queued: the fair queue's turns see it.
    this.queue.started(task);
    sandbox.send(task.id, {
      callId: request.callId,
      call: request.call,
      rows: request.rows,
      firstRow: request.firstRow,
      spentMs: request.budget.spentMs,
      chunks: request.chunks,
    });
  }

  private settle(task: QueuedTask, outcome: TaskResult | PluginError): void {
    if (task.settled) return;
    task.settled = true;
    this.tasks.delete(task.id);
    if (task.onAbort) task.request.signal?.remove(task.onAbort);
    if (outcome instanceof PluginError) task.reject(outcome);
    else task.resolve(outcome);
  }

  /**
   * The call ended: its task is dropped if it waits in either queue, whether it never ran or waits to
   * run again after its sandbox process died (a task running now ends on its own; its result is ignored).
   */
  private dropQueued(task: QueuedTask): void {
    if (task.settled) return;
    const wasRetry = this.retries.remove(task);
    if (!wasRetry && !this.queue.remove(task)) return;
    this.settle(task, new PluginError('CANCELLED', 'the call ended before this chunk ran'));
    // A process held back for that retry may take work again.
    if (wasRetry) this.pump();
  }

  /** The memory fence of a sandbox process with this many threads, in MB. */
  fenceMb(threads: number): number {
    return this.supervisor.fenceMb(threads);
  }
}

export function busyError(maxQueue: number): PluginError {
  return new PluginError(
    'RESOURCE_EXHAUSTED',
    `the plugin is busy: ${maxQueue} chunks are already waiting for a sandbox (SSE_MAX_QUEUE); try again shortly`,
  );
}

export function openCallsError(maxOpenCalls: number): PluginError {
  return new PluginError(
    'RESOURCE_EXHAUSTED',
    `the plugin is busy: ${maxOpenCalls} calls are open at once, the most it keeps (calls whose client has not sent its last rows count too); try again shortly`,
  );
}
