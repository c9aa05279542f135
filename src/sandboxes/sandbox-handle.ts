/**
 * The front's record of one sandbox process, apart from how it talks to it: the real one
 * (src/sandboxes/sandbox-process.ts) is a child process and its sockets, the unit tests' one a fake.
 * Like piscina's WorkerInfo, the handle owns the tasks it was sent: it keeps each with when it was
 * sent, a result settles exactly the task it answers (the listener hears of it once and the handle
 * forgets it), and when the process ends the handle hands back every task it still held. The
 * process's lifecycle is one state field, written here only, through the methods below:
 *
 *   starting ─READY─► ready ─hold─► held ─release─► ready      held: takes nothing new, to fall idle
 *   ready or held, idle ─sendAlone─► retrying ─its result─► ready       retrying: runs one retry alone
 *   any state but exited ─end─► ending ─exit─► exited                       (any state ─exit─► exited)
 *   any state but exited ─kill or RETIRE─► exited: SIGKILL leaves nothing to wait for
 *
 * A killed process is done with at once: from SIGKILL on nothing it does is read, so its tasks go back
 * to the pool then, not when the kernel has reaped it (a few hundred ms for a large process on a busy
 * machine), and a spare can take its place at once.
 * A process whose main thread is held (HELD) may be asked for the tasks sent after the held one, which
 * wait unread: the handle forgets them and hands them back (takeBackAfter).
 * Everything a process sends is checked before use (a script that escaped V8 would own the process):
 * a frame that does not decode is a protocol error that ends that process, never the front.
 */
import { Frame, type ReceivedFrame, type SandboxSettings } from '../contract/channel';
import { parseReady, parseRetirement, type Retirement } from '../contract/control-frames';
import { decodeResult } from '../contract/result-frame';
import type { TaskResult } from '../contract/task';
import type { Logger } from '../ops/log';
import type { QueuedTask } from './task-queue';

export type SandboxState = 'starting' | 'ready' | 'held' | 'retrying' | 'ending' | 'exited';

/** Why the front ended a sandbox process itself (the pool's restart reasons add crash and exit). */
export type KillReason = 'memory-fence' | 'stuck' | 'fatal' | 'unanswered' | 'protocol' | 'stop';

export interface SandboxExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly killedFor: KillReason | undefined;
  readonly retirement: Retirement | undefined;
  readonly stderrTail: string;
  readonly wasReady: boolean;
  /** Why the process could not be started at all ("spawn /usr/bin/node EMFILE"); it never ran. */
  readonly spawnError?: string | undefined;
  /** When the front knew it was gone (killed, or its exit seen), performance.now() ms. */
  readonly endedAtMs: number;
}

/** How the process ended, as its transport saw it; the handle adds what it knows. */
export type ProcessEnd = Pick<SandboxExit, 'code' | 'signal' | 'stderrTail' | 'spawnError'>;

/** A task in flight, and when it was sent (performance.now() ms). */
export interface SentTask {
  readonly task: QueuedTask;
  readonly sentAtMs: number;
}

/** What the handle tells its owners; each event comes once per process, or once per task. */
export interface SandboxListener {
  ready(sandbox: SandboxHandle): void;
  /** A task's result: the handle has forgotten the task already. */
  result(sandbox: SandboxHandle, task: QueuedTask, result: TaskResult): void;
  /** The process ended; `tasks` is everything it held, handed back to be settled or sent again. */
  exit(sandbox: SandboxHandle, exit: SandboxExit, tasks: readonly SentTask[]): void;
  /** Native work of this task holds the process's main thread (HELD), heldMs after it was sent. */
  held?(sandbox: SandboxHandle, task: QueuedTask, heldMs: number): void;
}

export abstract class SandboxHandle {
  private current: SandboxState = 'starting';
  private readonly inFlight = new Map<number, SentTask>();
  private killedFor: KillReason | undefined;
  private retirement: Retirement | undefined;
  /** History, not state: whether READY ever came (an ending process may or may not have started). */
  private readySeen = false;

  constructor(
    readonly index: number,
    readonly settings: SandboxSettings,
    private readonly listener: SandboxListener,
    protected readonly logger: Logger,
  ) {}

  get state(): SandboxState {
    return this.current;
  }

  /** Tasks sent and not answered. */
  get busy(): number {
    return this.inFlight.size;
  }

  get wasReady(): boolean {
    return this.readySeen;
  }

  /** Killed, retiring, closed or gone: nothing it sends is read any more. */
  get ending(): boolean {
    return this.current === 'ending' || this.current === 'exited';
  }

  abstract get pid(): number | undefined;
  /** Resident memory in bytes; undefined where it cannot be read, or once the process is gone. */
  abstract residentBytes(): number | undefined;
  /** The call ended: the process may forget its spec. */
  abstract closeCall(callId: number): void;
  /** Asks a task sent here back (a YIELD frame): it answers ABORTED unless it ends first (src/sandboxes/task-queue.ts). */
  abstract yieldTask(taskId: number): void;
  /** Ends the process as the plugin closes: resolves once it has exited. */
  abstract stop(): Promise<void>;
  /** Writes a task (and its call's spec, the first time) to the process; poolOnly: never on its main thread. */
  protected abstract write(task: QueuedTask, poolOnly: boolean): void;
  /** Ends the process at once (SIGKILL). */
  protected abstract terminate(): void;
  /** Closes the channel: the process ends itself. */
  protected abstract closeChannel(): void;
  /** What the process said on stderr so far (its last few KiB), for the exit of a killed process. */
  protected stderrSoFar(): string {
    return '';
  }

  /** Sends the library set (a LIBRARIES frame) to the process; a stand-in without scripts ignores it. */
  sendLibraries(_frame: Buffer): void {}

  /** Sends a task to a ready process (the pool picks one with a free thread); poolOnly: the front's fast-path pause. */
  send(task: QueuedTask, poolOnly = false): void {
    if (this.current !== 'ready') throw new Error(`a task sent to a sandbox process that is ${this.current}`);
    this.dispatch(task, poolOnly);
  }

  /** Sends a task sent back after a death: alone, so nothing else is sent here until its result. */
  sendAlone(task: QueuedTask, poolOnly = false): void {
    if ((this.current !== 'ready' && this.current !== 'held') || this.busy > 0)
      throw new Error(`a retry sent to a sandbox process that is ${this.current} with ${this.busy} tasks`);
    this.current = 'retrying';
    this.dispatch(task, poolOnly);
  }

  /** Takes no new tasks until released or sent a retry: it falls idle for the retry. */
  hold(): void {
    if (this.current === 'ready') this.current = 'held';
  }

  release(): void {
    if (this.current === 'held') this.current = 'ready';
  }

  /** True when this task was sent here and is not answered. */
  holds(taskId: number): boolean {
    return this.inFlight.has(taskId);
  }

  /** True when a task of this call was sent here and is not answered. */
  protected holdsTaskOf(callId: number): boolean {
    for (const { task } of this.inFlight.values()) if (task.request.callId === callId) return true;
    return false;
  }

  /** True when a task was sent more than its call's time limit + graceMs ago and is not answered. */
  overdue(nowMs: number, graceMs: number): boolean {
    for (const { task, sentAtMs } of this.inFlight.values()) if (nowMs - sentAtMs > task.request.call.callTimeoutMs + graceMs) return true;
    return false;
  }

  kill(reason: KillReason): void {
    this.killedFor ??= reason;
    if (this.current === 'exited') return;
    this.current = 'ending';
    this.terminate();
    this.exited({ code: null, signal: 'SIGKILL', stderrTail: this.stderrSoFar() });
  }

  /** Closes the channel: the process ends itself (workers/sandbox-main.ts). */
  end(): void {
    this.killedFor ??= 'stop';
    if (this.current === 'exited') return;
    this.current = 'ending';
    this.closeChannel();
  }

  /** A frame from the process: checked, then acted on; one that does not decode ends the process. */
  protected received(frame: ReceivedFrame): void {
    if (this.ending) return;
    switch (frame.kind) {
      case Frame.RESULT:
        return this.onResult(frame.id, frame.payload);
      case Frame.READY:
        return this.onReady(frame.payload);
      case Frame.RETIRE:
        return this.onRetire(frame.payload);
      case Frame.HELD:
        return this.onHeld(frame.id);
      default:
        return this.protocolError(`a frame of kind ${frame.kind}, which only the front sends`);
    }
  }

  /** What the process sent cannot be read: it is ended, its tasks handed back as for a crash. */
  protected protocolError(detail: string): void {
    if (this.ending) return;
    this.logger.warn({ sandbox: this.index, pid: this.pid, detail }, 'sandbox process sent what the front cannot read: ending it');
    this.kill('protocol');
  }

  /** The process is gone: every task it held is handed back, once. endedAtMs: a unit test's clock. */
  protected exited(end: ProcessEnd, endedAtMs = performance.now()): void {
    if (this.current === 'exited') return;
    this.current = 'exited';
    const tasks = [...this.inFlight.values()];
    this.inFlight.clear();
    const exit: SandboxExit = {
      ...end,
      killedFor: this.killedFor,
      retirement: this.retirement,
      wasReady: this.readySeen,
      endedAtMs,
    };
    this.listener.exit(this, exit, tasks);
  }

  private dispatch(task: QueuedTask, poolOnly: boolean): void {
    this.inFlight.set(task.id, { task, sentAtMs: performance.now() });
    this.write(task, poolOnly);
  }

  private onResult(taskId: number, payload: Uint8Array): void {
    const sent = this.inFlight.get(taskId);
    // Answered already, or never sent here: there is nothing to settle.
    if (sent === undefined) return;
    let result: TaskResult;
    try {
      result = decodeResult(payload);
    } catch (error) {
      return this.protocolError(`RESULT: ${errorText(error)}`);
    }
    this.inFlight.delete(taskId);
    if (this.current === 'retrying' && this.inFlight.size === 0) this.current = 'ready';
    this.listener.result(this, sent.task, result);
  }

  private onReady(payload: Uint8Array): void {
    if (this.current !== 'starting') return this.protocolError('READY once more');
    try {
      parseReady(payload, this.settings.threads);
    } catch (error) {
      return this.protocolError(errorText(error));
    }
    this.current = 'ready';
    this.readySeen = true;
    this.listener.ready(this);
  }

  /**
   * Takes back the tasks sent after this one: its process's main thread is held running it, so they
   * wait unread on the channel (workers/task-dispatch.ts reads no frame meanwhile). Only for a process
   * that takes no new task (retired): they are sent elsewhere, and what it may answer for them later is
   * ignored, as for any task it no longer holds.
   */
  takeBackAfter(taskId: number): QueuedTask[] {
    if (!this.inFlight.has(taskId)) return [];
    const sent = [...this.inFlight.values()];
    const behind = sent.slice(sent.findIndex(({ task }) => task.id === taskId) + 1);
    for (const { task } of behind) this.inFlight.delete(task.id);
    return behind.map(({ task }) => task);
  }

  /** A task holds the process's main thread (its watcher's HELD); answered by now (the results socket came first): nothing to do. */
  private onHeld(taskId: number): void {
    const sent = this.inFlight.get(taskId);
    if (sent !== undefined) this.listener.held?.(this, sent.task, performance.now() - sent.sentAtMs);
  }

  /** The process lost a thread (workers/thread-pool.ts) and names the task to blame: it is ended. */
  private onRetire(payload: Uint8Array): void {
    let retirement: Retirement;
    try {
      retirement = parseRetirement(payload);
    } catch (error) {
      return this.protocolError(errorText(error));
    }
    this.retirement = retirement;
    this.logger.warn(
      { sandbox: this.index, pid: this.pid, reason: retirement.reason, detail: retirement.detail },
      'sandbox process retiring: a thread was lost; ending it and sending its other tasks elsewhere',
    );
    this.kill(retirement.reason);
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
