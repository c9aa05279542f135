/**
 * A sandbox process handle with no process behind it, for the scheduler's unit tests
 * (test/unit/pool.test.ts): the real handle's state and in-flight bookkeeping
 * (src/sandboxes/sandbox-handle.ts) around a recorder. It keeps what it was sent, and the test
 * delivers READY, RESULT and RETIRE frames (encoded as a sandbox encodes them) and exits, in any
 * order it likes; no clock, no child process.
 */
import pino from 'pino';

import { type FrameKind, FrameReader, frameHeader, type SandboxSettings } from '../../src/contract/channel';
import { heldFrame, type Retirement, readyFrame, retireFrame } from '../../src/contract/control-frames';
import { resultFrame } from '../../src/contract/result-frame';
import type { TaskResult } from '../../src/contract/task';
import type { Logger } from '../../src/ops/log';
import { type ProcessEnd, SandboxHandle, type SandboxListener } from '../../src/sandboxes/sandbox-handle';
import type { SpawnSandbox } from '../../src/sandboxes/supervisor';
import type { QueuedTask } from '../../src/sandboxes/task-queue';

export const silentLogger: Logger = pino({ level: 'silent' });

export class FakeSandbox extends SandboxHandle {
  /** Every task written to this process, in order. */
  readonly sent: QueuedTask[] = [];
  /** Whether each was written pool-only (the front's fast-path pause), in the same order. */
  readonly poolOnly: boolean[] = [];
  /** How many times the front sent it SIGKILL. */
  terminated = 0;
  /** Ids of the tasks the front asked back (YIELD), in order. */
  readonly yielded: number[] = [];

  get pid(): number {
    return 1_000 + this.index;
  }

  /** Ids of the tasks written to this process, in order. */
  sentIds(): number[] {
    return this.sent.map((task) => task.id);
  }

  residentBytes(): undefined {
    return undefined;
  }

  closeCall(): void {}

  yieldTask(taskId: number): void {
    this.yielded.push(taskId);
  }

  stop(): Promise<void> {
    this.end();
    this.die({ code: 0, signal: null });
    return Promise.resolve();
  }

  protected write(task: QueuedTask, poolOnly: boolean): void {
    this.sent.push(task);
    this.poolOnly.push(poolOnly);
  }

  protected terminate(): void {
    this.terminated++;
  }

  protected closeChannel(): void {}

  becomeReady(threads = this.settings.threads): void {
    this.deliver(readyFrame(threads));
  }

  answer(taskId: number, result: TaskResult): void {
    this.deliver(Buffer.concat(resultFrame(taskId, result)));
  }

  retire(retirement: Retirement): void {
    this.deliver(retireFrame(retirement));
  }

  /** Its main-thread watcher says this task holds the main thread. */
  held(taskId: number): void {
    this.deliver(heldFrame(taskId));
  }

  /** A frame of this kind with this payload, however malformed the payload. */
  deliverRaw(kind: FrameKind, id: number, payload: Buffer): void {
    this.deliver(Buffer.concat([frameHeader(kind, id, payload.length), payload]));
  }

  /** The process ends; a crash (SIGKILL) unless told otherwise; laterMs: as if that much later than now. */
  die(end: Partial<ProcessEnd> = {}, laterMs = 0): void {
    this.exited({ code: null, signal: 'SIGKILL', stderrTail: '', ...end }, performance.now() + laterMs);
  }

  private deliver(bytes: Buffer): void {
    new FrameReader((frame) => this.received(frame)).push(bytes);
  }
}

/** Makes FakeSandboxes for a pool and lets a test wait for the next one of a slot (a replacement). */
export class FakeSpawner {
  readonly all: FakeSandbox[] = [];
  private readonly waiting = new Map<number, (sandbox: FakeSandbox) => void>();

  readonly spawn: SpawnSandbox = (index: number, settings: SandboxSettings, listener: SandboxListener, logger: Logger) => {
    const sandbox = new FakeSandbox(index, settings, listener, logger);
    this.all.push(sandbox);
    this.waiting.get(index)?.(sandbox);
    this.waiting.delete(index);
    return sandbox;
  };

  /** The newest process of a slot. */
  slot(index: number): FakeSandbox {
    const sandbox = this.all.filter((s) => s.index === index).pop();
    if (!sandbox) throw new Error(`no sandbox in slot ${index}`);
    return sandbox;
  }

  /** The next process started in a slot (the supervisor replaces a dead one on a timer of its own). */
  next(index: number): Promise<FakeSandbox> {
    return new Promise((resolve) => this.waiting.set(index, resolve));
  }
}
