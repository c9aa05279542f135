/**
 * The supervisor of the sandbox processes, and the one queue of tasks in the front. A task is sent
 * to a process only when one of its threads is free, so the least busy process gets it and a dead
 * process takes few tasks with it; until its result arrives the front keeps the task's row bytes.
 *
 * When a sandbox process ends on its own (a crash, an abort, an OOM kill) or is ended by the front
 * (past its memory fence, or retiring after V8 gave up on a thread), its tasks are not lost:
 * - a task the process itself named as the culprit (src/sandbox-process.ts, Retirement) fails its
 *   call with the reason (memory, or a thread stuck past the time limit);
 * - a task that merely ran beside a named culprit is sent again, as if it had never run;
 * - with no culprit named, every task it ran is suspect: sent again once, alone on a process, and
 *   failed if that process dies too. So the call whose script kills sandboxes fails, and the calls
 *   of everyone else answer right, only later.
 * The dead process is replaced at once, or after a growing delay when they keep dying (a crash loop).
 */
import { PluginError } from './shared/errors';
import type { Logger } from './log';
import type { Retirement } from './shared/channel';
import type { TaskResult } from './shared/task';
import { SandboxProcess, type SandboxExit, type SandboxSettings } from './sandbox-process';
import { culpritError, describeExit, lastLine, restartReason, suspectError, type RestartReason } from './sandbox-recovery';
import { TaskQueue } from './task-queue';
import type { TaskRequest, TaskRunner } from './task-runner';

export interface PoolSettings {
  readonly workers: number;
  readonly sandboxProcesses: number;
  readonly memoryLimitMb: number;
  readonly scriptTimeoutMs: number;
  readonly maxQueue: number;
  /** Resident memory past which a sandbox process is ended, in MB; undefined: defaultSandboxMemoryMb. */
  readonly sandboxMemoryMb: number | undefined;
}

export interface QueuedTask {
  readonly id: number;
  readonly request: TaskRequest;
  readonly resolve: (result: TaskResult) => void;
  readonly reject: (error: PluginError) => void;
  /** Sent again after a sandbox died with no culprit named: at most once. */
  retried: boolean;
  sentAt: number;
  settled: boolean;
  /** Removed from the call's signal when the task settles: a listener left behind keeps the task's rows alive until the call ends. */
  onAbort?: () => void;
}

export type { RestartReason };

export interface PoolEvents {
  restarted?(reason: RestartReason): void;
  availability?(available: boolean): void;
}

const FENCE_INTERVAL_MS = 200;
/** Past a task's time limit, how long the front waits for any answer before it ends the sandbox process. */
const UNANSWERED_GRACE_MS = 5_000;
const START_TIMEOUT_MS = 30_000;
/** A process that lived this long ends a crash loop: the next replacement starts at once. */
const STABLE_AFTER_MS = 10_000;
const MAX_RESTART_DELAY_MS = 5_000;

/** The front's default memory fence per sandbox process, in MB: see README "Memory". */
export function defaultSandboxMemoryMb(threads: number, memoryLimitMb: number): number {
  return 160 + threads * (2 * memoryLimitMb + 96);
}

/** Threads of each sandbox process: `workers` split as evenly as they go. */
export function threadSplit(workers: number, processes: number): number[] {
  return Array.from({ length: processes }, (_, i) => Math.floor(workers / processes) + (i < workers % processes ? 1 : 0));
}

export class SandboxPool implements TaskRunner {
  private readonly sandboxes: (SandboxProcess | undefined)[];
  private readonly tasks = new Map<number, QueuedTask>();
  private readonly queue = new TaskQueue();
  private readonly retries = new TaskQueue();
  private nextTaskId = 1;
  private closing = false;
  private readonly fence: NodeJS.Timeout;
  private readonly crashes: number[] = [];
  private readonly startTimers = new Set<NodeJS.Timeout>();
  private readonly threadCounts: number[];
  private wasAvailable = false;
  private readonly restartCounts = new Map<RestartReason, number>();
  restarts = 0;

  constructor(
    readonly settings: PoolSettings,
    private readonly logger: Logger,
    private readonly events: PoolEvents = {},
  ) {
    this.threadCounts = threadSplit(settings.workers, settings.sandboxProcesses);
    this.sandboxes = this.threadCounts.map(() => undefined);
    this.fence = setInterval(() => this.checkSandboxes(), FENCE_INTERVAL_MS).unref();
  }

  /** Starts every sandbox process; rejects with the last thing one said on stderr if one cannot start. */
  async start(): Promise<void> {
    const started = this.threadCounts.map((_, i) => this.startOne(i));
    await Promise.all(started);
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
    return this.restartCounts.get(reason) ?? 0;
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
    return new Promise<TaskResult>((resolve, reject) => {
      const task: QueuedTask = { id: this.nextTaskId++, request, resolve, reject, retried: false, sentAt: 0, settled: false };
      this.tasks.set(task.id, task);
      this.queue.push(task);
      task.onAbort = () => this.dropQueued(task);
      request.signal?.addEventListener('abort', task.onAbort, { once: true });
      this.pump();
    });
  }

  /** The call ended: sandbox processes that saw it may forget it. */
  closeCall(callId: number): void {
    for (const sandbox of this.sandboxes) sandbox?.closeCall(callId);
  }

  /** Fails what is queued and ends every sandbox process (the app lets calls in flight end first). */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.fence);
    for (const timer of this.startTimers) clearTimeout(timer);
    for (const task of [...this.queue.drain(), ...this.retries.drain()]) this.settle(task, new PluginError('UNAVAILABLE', 'the plugin is shutting down'));
    const live = this.sandboxes.filter((s): s is SandboxProcess => s !== undefined && !s.exited);
    await Promise.all(live.map((sandbox) => endProcess(sandbox)));
  }

  private startOne(index: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const settings: SandboxSettings = { threads: this.threadCounts[index] as number, memoryLimitMb: this.settings.memoryLimitMb, scriptTimeoutMs: this.settings.scriptTimeoutMs };
      const timer = setTimeout(() => sandbox.kill('stuck'), START_TIMEOUT_MS);
      const sandbox = new SandboxProcess(index, settings, {
        ready: () => {
          clearTimeout(timer);
          this.logger.debug({ sandbox: index, pid: sandbox.pid, threads: settings.threads }, 'sandbox process ready');
          resolve();
          this.pump();
        },
        result: (_, taskId, result) => this.onResult(sandbox, taskId, result),
        retire: (_, retirement) => this.onRetire(sandbox, retirement),
        outOfMemory: () => {
          this.logger.warn({ sandbox: index, pid: sandbox.pid }, 'V8 gave up on a sandbox heap (out of memory): ending its process, sending its tasks elsewhere');
          sandbox.kill('fatal');
        },
        exit: (_, exit) => {
          clearTimeout(timer);
          if (!exit.wasReady) reject(new Error(`a sandbox process could not start: ${lastLine(exit.stderrTail) || describeExit(exit)}`));
          this.onExit(sandbox, exit);
        },
      });
      this.sandboxes[index] = sandbox;
    });
  }

  private onResult(sandbox: SandboxProcess, taskId: number, result: TaskResult): void {
    const task = this.tasks.get(taskId);
    if (sandbox.quarantined && sandbox.inFlight.size === 0) sandbox.quarantined = sandbox.heldForRetry = false;
    if (task) this.settle(task, result);
    this.pump();
  }

  private onRetire(sandbox: SandboxProcess, retirement: Retirement): void {
    this.logger.warn({ sandbox: sandbox.index, pid: sandbox.pid, reason: retirement.reason, detail: retirement.detail }, 'sandbox process retiring: a thread was lost; ending it and sending its other tasks elsewhere');
    sandbox.kill(retirement.reason);
  }

  private onExit(sandbox: SandboxProcess, exit: SandboxExit): void {
    this.sandboxes[sandbox.index] = undefined;
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
    if (this.closing) return;
    this.restarts++;
    this.restartCounts.set(reason, this.restartsFor(reason) + 1);
    this.events.restarted?.(reason);
    const delayMs = this.restartDelay();
    this.logger.warn(
      { sandbox: sandbox.index, pid: sandbox.pid, reason, code: exit.code, signal: exit.signal, restartInMs: delayMs, stderr: exit.stderrTail.slice(-1500) || undefined },
      'sandbox process ended; starting a new one',
    );
    const timer = setTimeout(() => {
      this.startTimers.delete(timer);
      this.startOne(sandbox.index).catch((error: unknown) => this.logger.error({ sandbox: sandbox.index, err: error }, 'a new sandbox process could not start'));
    }, delayMs);
    this.startTimers.add(timer);
    this.updateAvailability();
    this.pump();
  }

  /** What happens to one task of a process that died (see the top of this file). */
  private recover(task: QueuedTask, exit: SandboxExit, culprits: Set<number>, reason: RestartReason): void {
    if (culprits.has(task.id)) return this.settle(task, culpritError(exit, this.settings));
    if (culprits.size > 0) return this.requeue(task, this.queue);
    if (task.retried) return this.settle(task, suspectError(exit, reason, this.settings));
    task.retried = true;
    // The attempt's time counts: a script that kills sandboxes slowly still meets its time limit. Not
    // so when the process stopped answering: its main thread runs no script, so that is not the script.
    if (reason !== 'unanswered') task.request.budget.spentMs += performance.now() - task.sentAt;
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
    this.updateAvailability();
  }

  /**
   * A retried task runs alone: the least busy process is held (no new tasks) until it is idle, then
   * the retry is sent there and nothing else until its result is back.
   */
  private pumpRetries(): void {
    while (this.retries.length > 0) {
      const usable = this.sandboxes.filter((s): s is SandboxProcess => s !== undefined && s.ready && !s.exited && !s.ending && !s.quarantined);
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
      if (!sandbox || !sandbox.ready || sandbox.exited || sandbox.ending || sandbox.heldForRetry || sandbox.quarantined) continue;
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
    sandbox.send(task.id, { callId: request.callId, call: request.call, rows: request.rows, firstRow: request.firstRow, spentMs: request.budget.spentMs, bytes: request.bytes });
  }

  private settle(task: QueuedTask, outcome: TaskResult | PluginError): void {
    if (task.settled) return;
    task.settled = true;
    this.tasks.delete(task.id);
    if (task.onAbort) task.request.signal?.removeEventListener('abort', task.onAbort);
    if (outcome instanceof PluginError) task.reject(outcome);
    else task.resolve(outcome);
  }

  private dropQueued(task: QueuedTask): void {
    if (task.settled || task.sentAt !== 0) return;
    this.queue.remove(task);
    this.settle(task, new PluginError('CANCELLED', 'the call ended before this chunk ran'));
  }

  /** The memory fence of a sandbox process with this many threads, in MB. */
  fenceMb(threads: number): number {
    return this.settings.sandboxMemoryMb ?? defaultSandboxMemoryMb(threads, this.settings.memoryLimitMb);
  }

  /**
   * The memory fence, and a backstop for a sandbox process that stopped answering altogether (its
   * own watchdog answers for a stuck thread within its time limit + 1 s): a task sent
   * UNANSWERED_GRACE_MS past its time limit ends its process, and is handled as for a crash.
   */
  private checkSandboxes(): void {
    const now = performance.now();
    for (const sandbox of this.sandboxes) {
      if (!sandbox || sandbox.exited || sandbox.ending) continue;
      const overdue = [...sandbox.inFlight].some((taskId) => {
        const task = this.tasks.get(taskId);
        return task !== undefined && now - task.sentAt > task.request.call.callTimeoutMs + UNANSWERED_GRACE_MS;
      });
      if (overdue) {
        this.logger.warn({ sandbox: sandbox.index, pid: sandbox.pid }, 'sandbox process stopped answering: ending it');
        sandbox.kill('unanswered');
        continue;
      }
      this.checkMemory(sandbox);
    }
  }

  private checkMemory(sandbox: SandboxProcess): void {
    const fenceMb = this.fenceMb(sandbox.settings.threads);
    const bytes = sandbox.residentBytes();
    if (bytes === undefined || bytes <= fenceMb * 1024 * 1024) return;
    this.logger.warn({ sandbox: sandbox.index, pid: sandbox.pid, residentMb: Math.round(bytes / 1048576), fenceMb }, 'sandbox process past its memory fence (SSE_SANDBOX_MEMORY_MB): ending it');
    sandbox.kill('memory-fence');
  }

  private restartDelay(): number {
    const now = performance.now();
    while (this.crashes.length > 0 && now - (this.crashes[0] as number) > STABLE_AFTER_MS) this.crashes.shift();
    this.crashes.push(now);
    const recent = this.crashes.length;
    return recent <= this.sandboxes.length ? 0 : Math.min(MAX_RESTART_DELAY_MS, 100 * 2 ** (recent - this.sandboxes.length - 1));
  }

  private updateAvailability(): void {
    const available = this.sandboxes.some((s) => s !== undefined && s.ready && !s.exited);
    if (available === this.wasAvailable) return;
    this.wasAvailable = available;
    this.events.availability?.(available);
  }
}

export function busyError(maxQueue: number): PluginError {
  return new PluginError('RESOURCE_EXHAUSTED', `the plugin is busy: ${maxQueue} chunks are already waiting for a sandbox (SSE_MAX_QUEUE); try again shortly`);
}

/** Closes the channel and waits for the exit; a process that does not end promptly is killed. */
function endProcess(sandbox: SandboxProcess): Promise<void> {
  return new Promise<void>((resolve) => {
    if (sandbox.exited) return resolve();
    sandbox.child.once('exit', () => resolve());
    sandbox.end();
    setTimeout(() => sandbox.kill('stop'), 2_000).unref();
  });
}
