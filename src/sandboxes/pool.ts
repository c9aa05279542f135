/**
 * The scheduler of the sandbox processes: the one queue of tasks in the front. A task is sent
 * to a process only when one of its threads is free, so the least busy process gets it and a dead
 * process takes few tasks with it; until its result arrives the front keeps the task's row bytes.
 * Starting, replacing and ending the processes is the supervisor's (src/sandboxes/supervisor.ts).
 *
 * Each process's handle (src/sandboxes/sandbox-handle.ts) holds the tasks sent to it and tells the
 * pool of each result once, straight from the process; the pool settles the task's promise.
 *
 * When a sandbox process ends on its own (a crash, an abort, an OOM kill) or is ended by the front
 * (past its memory fence, or retiring after V8 gave up on a thread), its handle hands its tasks back:
 * - a task the process itself named as the culprit (a RETIRE frame, src/contract/control-frames.ts)
 *   fails its call with the reason (memory, or a thread stuck past the time limit);
 * - a task that merely ran beside a named culprit is sent again, as if it had never run;
 * - with no culprit named, every task it ran is suspect: sent again once, alone on a process, and
 *   failed if that process dies too. So the call whose script kills sandboxes fails, and the calls
 *   of everyone else answer right, only later. A suspect that had run LONG_SUSPECT_MS or more (most
 *   likely the script that killed the process) runs alone on a spare, the quarantine, so it holds up
 *   no slot; a short one (a LOAD's row) runs alone on a slot at once;
 * - a task that had run past its call's time limit when its process met a memory bound (the fence,
 *   V8 giving up) fails naming the time limit, the one it passed first (a regular expression compiling
 *   past the limit in native code can reach the fence before the watchdog notices it).
 * Tasks sent back go first, in the order they were sent. A process whose main thread native work
 * holds (HELD) gives its slot to a spare, and the tasks sent after the held one, which wait unread
 * behind it, go first too. After a hold or a death the fast path pauses for every process, a memory
 * kept here (src/sandboxes/fast-path-gate.ts). A spare takes the dead process's slot at once
 * (src/sandboxes/supervisor.ts); its own replacement starts at once, or after a growing delay when
 * processes keep dying.
 */

import { shareOf } from '../calls/host-shares';
import { MAX_OPEN_CALLS } from '../contract/channel';
import { PluginError } from '../contract/errors';
import type { TaskResult, TaskRoute } from '../contract/task';
import { priorityCheck } from '../grpc/client-hosts';
import type { Logger } from '../ops/log';
import { FastPathGate } from './fast-path-gate';
import { blamesMemory, culpritError, pastTimeLimitError, type RestartReason, restartReason, suspectError } from './recovery';
import type { SandboxExit, SandboxHandle, SandboxState, SentTask } from './sandbox-handle';
import { type PoolEvents, type PoolSettings, SandboxSupervisor, type SpawnSandbox, spawnSandboxProcess } from './supervisor';
import { type QueuedTask, TaskQueue } from './task-queue';
import type { TaskRequest, TaskRunner } from './task-runner';

export type { PoolEvents, PoolSettings, RestartReason };

/**
 * A suspect that had run this long when its process died waits for a spare to run alone: a one-row
 * task takes a few ms even on a loaded machine, the scripts that kill a process run for longer.
 */
const LONG_SUSPECT_MS = 100;
/**
 * How often, while tasks wait, the pool looks again at what runs: a running task may have run long
 * enough to be asked back (YIELD_MIN_MS), or a thread kept for a lane (KEEP_FOR_SHORT_MS) may be free again.
 */
const QUEUE_LOOK_MS = 50;

/** A live process as tests, diagnostics and metrics see it. */
export interface ProcessView {
  readonly index: number;
  readonly pid: number | undefined;
  readonly threads: number;
  readonly busy: number;
  readonly ready: boolean;
  readonly state: SandboxState;
}

export class SandboxPool implements TaskRunner {
  private readonly supervisor: SandboxSupervisor;
  private readonly queue: TaskQueue;
  /**
   * Suspects that ran short: each runs again alone on a held process. Like the quarantine, served in
   * the fair queue's order, earliest first among equals: while scripts kill a process a second, a
   * bystander's suspect served last-in-first-out waited behind every later death's (41-59 s, the whole
   * attack, for a 300 ms chart beside two clients running out of memory in a loop).
   */
  private readonly retries: TaskQueue;
  /** Suspects that ran long: each runs again alone on a spare (retries when there is no spare). */
  private readonly quarantine: TaskQueue;
  /**
   * Calls with a task admitted and not closed yet (closeCall): a sandbox process keeps the spec of
   * each it saw, so no process can be asked to keep more than this many (MAX_OPEN_CALLS).
   */
  private readonly openCalls = new Set<number>();
  /** The fast-path pause every process obeys, kept here: a process's own dies with it. */
  private readonly fastPath = new FastPathGate();
  /** Tasks a process said hold its main thread, until their answer or its end: when each was sent (performance.now() ms). */
  private readonly heldSinceMs = new Map<number, number>();
  private nextTaskId = 1;
  private stopped = 0;
  private yieldedCount = 0;
  /** Tasks answered, by where their sandbox ran them (the result says). */
  private readonly routes: Record<TaskRoute, number> = { main: 0, pool: 0, moved: 0 };
  /** Set while tasks wait (QUEUE_LOOK_MS). */
  private queueLook: NodeJS.Timeout | undefined;
  private closing = false;
  private readonly refusedBusy: () => void;

  constructor(
    readonly settings: PoolSettings,
    logger: Logger,
    events: PoolEvents = {},
    /** Makes each process's handle: unit tests pass fakes (test/unit/pool.test.ts). */
    spawn: SpawnSandbox = spawnSandboxProcess,
  ) {
    const isPriority = priorityCheck(settings.priorityHosts ?? []);
    this.queue = new TaskQueue(undefined, settings.usageHalfLifeMs, isPriority);
    this.retries = new TaskQueue(undefined, settings.usageHalfLifeMs, isPriority);
    this.quarantine = new TaskQueue(undefined, settings.usageHalfLifeMs, isPriority);
    this.refusedBusy = events.refusedBusy ?? (() => undefined);
    // Arrow functions: the supervisor hands `result` to each handle as it is, unbound.
    const listener = {
      ready: () => {
        this.supervisor.fillEmptySlots();
        this.pump();
      },
      result: (_: SandboxHandle, task: QueuedTask, result: TaskResult) => this.onResult(task, result),
      exit: (_: SandboxHandle, exit: SandboxExit, tasks: readonly SentTask[]) => this.onExit(exit, tasks),
      held: (sandbox: SandboxHandle, task: QueuedTask, heldMs: number) => this.onHeld(sandbox, task, heldMs),
    };
    this.supervisor = new SandboxSupervisor(settings, logger, events, listener, spawn);
  }

  /** Starts every sandbox process; rejects with the last thing one said on stderr if one cannot start. */
  start(): Promise<void> {
    return this.supervisor.start();
  }

  private get sandboxes(): readonly (SandboxHandle | undefined)[] {
    return this.supervisor.sandboxes;
  }

  get restarts(): number {
    return this.supervisor.restarts;
  }

  get threads(): number {
    return this.sandboxes.reduce((n, s) => n + (s?.wasReady ? s.settings.threads : 0), 0);
  }

  get queueSize(): number {
    return this.queue.length + this.retries.length + this.quarantine.length;
  }

  get busyWorkers(): number {
    return this.supervisor.all().reduce((n, s) => n + s.busy, 0);
  }

  /**
   * Tasks one client host may have waiting: its share of SSE_MAX_QUEUE, and never fewer than one call
   * keeps in flight (the threads and one more, src/calls/evaluate-script.ts), so a call alone is never
   * refused for its host's share.
   */
  private get maxHostQueue(): number {
    const { maxQueue, hostSharePercent = 100, workers } = this.settings;
    return Math.min(maxQueue, Math.max(shareOf(maxQueue, hostSharePercent), workers + 1));
  }

  /** The queue is full and no task waiting could make room for a task of this client host. */
  saturatedFor(host: string): boolean {
    return this.queueSize >= this.settings.maxQueue && this.queue.displaceableFor(host) === undefined;
  }

  /**
   * A full queue makes room for a host's task by refusing the newest task of the host with the most
   * waiting (busy, as if it had come now), when that host has at least two more than this one: many
   * networks each keeping a share of chunks waiting refused every newcomer (8 /24s, 14 of 15 refused).
   */
  private makeRoomFor(host: string): boolean {
    const victim = this.queue.displaceableFor(host);
    if (victim === undefined || !this.queue.remove(victim)) return false;
    this.refusedBusy();
    this.settle(victim, busyError(this.settings.maxQueue));
    return true;
  }

  restartsFor(reason: RestartReason): number {
    return this.supervisor.restartsFor(reason);
  }

  /** Running tasks a sandbox stopped because their call had ended (workers/thread-stop.ts). */
  get stoppedTasks(): number {
    return this.stopped;
  }

  /** Tasks answered by a sandbox thread, by route: its main thread, a pool thread, a pool thread after the main thread's budget. */
  get tasksByRoute(): Readonly<Record<TaskRoute, number>> {
    return this.routes;
  }

  /** Running tasks asked back for another host and sent again (src/sandboxes/task-queue.ts, YIELD_MIN_MS). */
  get yieldedTasks(): number {
    return this.yieldedCount;
  }

  /** Processes retired near their memory fence to a ready spare (src/sandboxes/supervisor.ts). */
  get retirements(): number {
    return this.supervisor.retirements;
  }

  /** The live sandbox processes of the slots (those the pool sends tasks to), for tests and diagnostics. */
  processes(): ProcessView[] {
    return viewOf(this.sandboxes, 0);
  }

  /** The live spare processes. */
  spareProcesses(): ProcessView[] {
    return viewOf(this.supervisor.spares, this.sandboxes.length);
  }

  /**
   * Resident memory of every live sandbox process, for metrics: a slot's by its number, a spare's
   * numbered after the slots (the label stays put when a spare takes over a slot).
   */
  residentBytes(): { index: number; bytes: number }[] {
    const sizes: { index: number; bytes: number }[] = [];
    const places = [...this.sandboxes, ...this.supervisor.spares];
    places.forEach((sandbox, index) => {
      const bytes = sandbox?.residentBytes();
      if (bytes !== undefined) sizes.push({ index, bytes });
    });
    return sizes;
  }

  run(request: TaskRequest): Promise<TaskResult> {
    if (this.closing) return Promise.reject(new PluginError('UNAVAILABLE', 'the plugin is shutting down'));
    if (this.queueSize >= this.settings.maxQueue && !this.makeRoomFor(request.owner.host))
      return this.refuse(busyError(this.settings.maxQueue));
    if (this.queue.queuedOf(request.owner.host) >= this.maxHostQueue)
      return this.refuse(hostQueueError(this.settings.maxQueue, this.settings.hostSharePercent ?? 100, request.owner.host));
    if (!this.openCalls.has(request.callId)) {
      // A newcomer is refused, never an open call: its later tasks must find their spec in any process.
      // The front admits no more calls than this (src/calls/open-calls.ts); this guards the sandboxes' bound.
      if (this.openCalls.size >= this.maxOpenCalls) return this.refuse(openCallsError(this.maxOpenCalls));
      this.openCalls.add(request.callId);
    }
    return new Promise<TaskResult>((resolve, reject) => {
      // onAbort in the literal, not added after: a function-valued property added to each task kept
      // every call's objects alive through V8's young-generation collections (src/grpc/incoming.ts).
      const onAbort = (): void => this.dropQueued(task);
      const task: QueuedTask = {
        id: this.nextTaskId++,
        request,
        resolve,
        reject,
        retried: false,
        askedBack: false,
        settled: false,
        onAbort,
      };
      request.signal?.add(onAbort);
      if (!this.sendAtOnce(task)) {
        this.queue.push(task);
        this.pump();
      }
    });
  }

  /**
   * Nothing waits in any queue and a thread is free: the task goes there now, as queuing it and
   * pumping would send it, without the queue's bookkeeping (~10 µs of a one-row call).
   */
  private sendAtOnce(task: QueuedTask): boolean {
    if (this.queueSize > 0) return false;
    // What pump does with an empty retry queue: a process held back for a retry takes work again.
    for (const sandbox of this.sandboxes) sandbox?.release();
    const sandbox = this.freest();
    if (sandbox === undefined || !this.queue.mayStartNow(task.request, this.threads)) return false;
    this.queue.startNow(task);
    sandbox.send(task, this.poolOnly());
    this.supervisor.updateAvailability();
    return true;
  }

  /** The call ended: sandbox processes that saw it may forget it. */
  closeCall(callId: number): void {
    this.openCalls.delete(callId);
    for (const sandbox of this.sandboxes) sandbox?.closeCall(callId);
  }

  /** Calls open at once, front and sandboxes alike (src/calls/open-calls.ts bounds the front's by it). */
  get maxOpenCalls(): number {
    return this.settings.maxOpenCalls ?? MAX_OPEN_CALLS;
  }

  private refuse(error: PluginError): Promise<never> {
    this.refusedBusy();
    return Promise.reject(error);
  }

  /** The libraries scripts may require (a LIBRARIES frame): every sandbox process gets it once. */
  setLibraries(frame: Buffer): void {
    this.supervisor.setLibraries(frame);
  }

  /** Fails what is queued and ends every sandbox process (the app lets calls in flight end first). */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.queueLook);
    this.supervisor.stop();
    for (const task of [...this.queue.drain(), ...this.retries.drain(), ...this.quarantine.drain()])
      this.settle(task, new PluginError('UNAVAILABLE', 'the plugin is shutting down'));
    await this.supervisor.endAll();
  }

  private onResult(task: QueuedTask, result: TaskResult): void {
    if (!result.ok && result.error.code === 'ABORTED') return this.onYielded(task);
    if (result.route !== undefined) this.routes[result.route]++;
    // Until this result the stopped task counted as running for its client's host in the fair queue.
    if (!result.ok && result.error.code === 'CANCELLED') this.stopped++;
    // A failure's script time is not the thread's (a stopped task says 0): it is charged the time since it was sent.
    this.queue.finished(task.id, result.ok ? result.scriptMs : undefined);
    this.endHold(task.id, performance.now());
    this.settle(task, result);
    // A spare that ran a quarantined retry is idle again: it may take an empty slot.
    this.supervisor.fillEmptySlots();
    this.pump();
  }

  /**
   * A task asked back answered ABORTED, having spent none of its call's time: it waits again, first of
   * its call's tasks, and runs from the start when its turn comes (src/sandboxes/task-queue.ts).
   */
  private onYielded(task: QueuedTask): void {
    this.endHold(task.id, performance.now());
    if (task.request.signal?.aborted) {
      this.queue.finished(task.id);
      this.settle(task, new PluginError('CANCELLED', 'the call ended before this chunk ran'));
    } else if (this.queue.yielded(task)) this.yieldedCount++;
    else {
      // A sandbox process is not trusted: an answer nobody asked for fails the task rather than loop it.
      this.queue.finished(task.id);
      this.settle(task, new PluginError('INTERNAL', 'internal error: a sandbox stopped a task the front had not asked back'));
    }
    this.pump();
  }

  /** A process ended (the supervisor replaces it): the tasks its handle held are settled or sent again. */
  private onExit(exit: SandboxExit, sent: readonly SentTask[]): void {
    for (const { task } of sent) {
      this.queue.finished(task.id);
      this.heldSinceMs.delete(task.id);
    }
    if (this.closing) {
      for (const { task } of sent) this.settle(task, new PluginError('UNAVAILABLE', 'the plugin is shutting down'));
      return;
    }
    this.pauseFastPath(exit, sent);
    const reason = restartReason(exit);
    const culprits = new Set(exit.retirement?.taskIds ?? []);
    // Bystanders of a named culprit go back at the head, last one first, so they are sent again in the
    // order they were sent; suspects join their queues in that order.
    const bystanders: QueuedTask[] = [];
    for (const one of sent) this.recover(one, exit, culprits, reason, bystanders);
    for (const task of bystanders.reverse()) this.requeue(task, this.queue);
    this.pump();
  }

  /**
   * Native work of `task` holds a process's main thread: every process's fast path pauses, and once
   * the process has left its slot to a spare (the supervisor's), the tasks waiting unread behind it
   * go first to the slots, in the order they were sent. Not charged: they never ran.
   */
  private onHeld(sandbox: SandboxHandle, task: QueuedTask, heldMs: number): void {
    this.fastPath.pause(heldMs, performance.now());
    this.heldSinceMs.set(task.id, performance.now() - heldMs);
    if (this.closing || this.sandboxes.includes(sandbox)) return;
    const behind = sandbox.takeBackAfter(task.id);
    for (const waiting of behind) this.queue.finished(waiting.id);
    for (const waiting of behind.reverse()) this.requeue(waiting, this.queue);
    this.pump();
  }

  /**
   * A held task answered: the pause grows to what the whole hold calls for (HELD came early in it). Its
   * answer may include a run on a pool thread after the hold: a longer pause costs speed only.
   */
  private endHold(taskId: number, nowMs: number): void {
    const sinceMs = this.heldSinceMs.get(taskId);
    if (sinceMs === undefined) return;
    this.heldSinceMs.delete(taskId);
    this.fastPath.pause(nowMs - sinceMs, nowMs);
  }

  /**
   * A process that died holding tasks may have died of one on its main thread (the front cannot tell
   * a crash's thread): the fast path pauses everywhere as long as it would have after that hold.
   */
  private pauseFastPath(exit: SandboxExit, sent: readonly SentTask[]): void {
    if (sent.length === 0) return;
    const heldMs = Math.max(...sent.map(({ sentAtMs }) => exit.endedAtMs - sentAtMs));
    this.fastPath.pause(heldMs, exit.endedAtMs);
  }

  /** Whether a task sent now must stay off the sandboxes' main threads (src/sandboxes/fast-path-gate.ts). */
  private poolOnly(): boolean {
    return !this.fastPath.allows(performance.now());
  }

  /** What happens to one task of a process that died (see the top of this file). */
  private recover(
    { task, sentAtMs }: SentTask,
    exit: SandboxExit,
    culprits: Set<number>,
    reason: RestartReason,
    bystanders: QueuedTask[],
  ): void {
    if (task.settled) return;
    const ranMs = exit.endedAtMs - sentAtMs;
    if (ranMs > task.request.call.callTimeoutMs && blamesMemory(exit, reason)) return this.settle(task, pastTimeLimitError(this.settings));
    if (culprits.has(task.id)) return this.settle(task, culpritError(exit, this.settings));
    if (culprits.size > 0) return void bystanders.push(task);
    if (task.retried) return this.settle(task, suspectError(exit, reason, this.settings));
    task.retried = true;
    // The dead attempt's time is not charged: most suspects are bystanders of another call's script
    // (charged, a 3 s script beside a sandbox killer failed its 5 s limit on the retry). A script that
    // kills sandboxes itself dies again on its retry and fails then, after at most twice its time limit.
    const long = ranMs >= LONG_SUSPECT_MS && this.supervisor.spares.length > 0;
    this.requeue(task, long ? this.quarantine : this.retries, 'in turn');
  }

  /** Sends a task back: first of all (the main queue's head), or `in turn` (the suspects' queues). */
  private requeue(task: QueuedTask, queue: TaskQueue, order: 'first' | 'in turn' = 'first'): void {
    if (task.request.signal?.aborted) return this.settle(task, new PluginError('CANCELLED', 'the call ended before this chunk ran'));
    if (order === 'first') queue.unshift(task);
    else queue.push(task);
  }

  private pump(): void {
    if (this.closing) return;
    this.pumpQuarantine();
    this.pumpRetries();
    while (this.queue.length > 0) {
      const sandbox = this.freest();
      if (!sandbox) break;
      const next = this.queue.shift(this.threads);
      if (next === undefined) break;
      this.send(sandbox, next);
    }
    this.askBack();
    this.lookAgainWhileQueued();
    this.supervisor.updateAvailability();
  }

  /** Asks a running task back when the queue says one ran long while another host waits (YIELD_MIN_MS). */
  private askBack(): void {
    const task = this.queue.taskToYield();
    if (task === undefined) return;
    for (const sandbox of this.supervisor.all()) if (sandbox.holds(task.id)) return sandbox.yieldTask(task.id);
  }

  private lookAgainWhileQueued(): void {
    if (this.queue.length === 0) {
      clearInterval(this.queueLook);
      this.queueLook = undefined;
    } else this.queueLook ??= setInterval(() => this.pump(), QUEUE_LOOK_MS).unref();
  }

  /**
   * A retried task runs alone: the least busy process is held (no new tasks) until it is idle, then
   * the retry is sent there and nothing else until its result is back.
   */
  private pumpRetries(): void {
    while (this.retries.length > 0) {
      const usable = this.sandboxes.filter((s): s is SandboxHandle => s?.state === 'ready' || s?.state === 'held');
      const idle = usable.find((s) => s.busy === 0);
      if (!idle) {
        const least = usable.sort((a, b) => a.busy - b.busy)[0];
        if (!usable.some((s) => s.state === 'held')) least?.hold();
        return;
      }
      const next = this.retries.shift();
      if (next === undefined) return;
      this.send(idle, next, 'alone');
    }
    for (const sandbox of this.sandboxes) sandbox?.release();
  }

  /** A long suspect runs again alone on an idle spare, one at a time, while the slots serve everyone else. */
  private pumpQuarantine(): void {
    while (this.quarantine.length > 0) {
      const spare = this.supervisor.idleSpare();
      const next = spare === undefined ? undefined : this.quarantine.shift();
      if (spare === undefined || next === undefined) return;
      this.send(spare, next, 'alone');
    }
  }

  /** The ready process with the most free threads, or none when every thread is busy. */
  private freest(): SandboxHandle | undefined {
    let best: SandboxHandle | undefined;
    let bestFree = 0;
    for (const sandbox of this.sandboxes) {
      if (sandbox?.state !== 'ready') continue;
      const free = sandbox.settings.threads - sandbox.busy;
      if (free > bestFree) {
        best = sandbox;
        bestFree = free;
      }
    }
    return best;
  }

  private send(sandbox: SandboxHandle, task: QueuedTask, alone?: 'alone'): void {
    // Counted running for its app, user and call, however it was queued: the fair queue's turns see it.
    this.queue.started(task);
    if (alone) sandbox.sendAlone(task, this.poolOnly());
    else sandbox.send(task, this.poolOnly());
  }

  private settle(task: QueuedTask, outcome: TaskResult | PluginError): void {
    if (task.settled) return;
    task.settled = true;
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
    const wasRetry = this.retries.remove(task) || this.quarantine.remove(task);
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

function viewOf(places: readonly (SandboxHandle | undefined)[], firstIndex: number): ProcessView[] {
  const views: ProcessView[] = [];
  places.forEach((s, i) => {
    if (s === undefined || s.state === 'exited') return;
    views.push({ index: firstIndex + i, pid: s.pid, threads: s.settings.threads, busy: s.busy, ready: s.wasReady, state: s.state });
  });
  return views;
}

/**
 * One client host's tasks filled the queue's share it may use: 530 one-row `while(1){}` calls from one
 * address, each sent again as it ended, kept every other host's calls refused busy for as long as it
 * liked (the fair queue orders what waits; it cannot make room in a full queue).
 */
export function hostQueueError(maxQueue: number, sharePercent: number, host: string): PluginError {
  return new PluginError(
    'RESOURCE_EXHAUSTED',
    `the plugin is busy: chunks of calls from ${host} already fill their host's share of the queue, ${sharePercent}% of ${maxQueue} (SSE_HOST_SHARE_PERCENT of SSE_MAX_QUEUE); try again shortly`,
  );
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
