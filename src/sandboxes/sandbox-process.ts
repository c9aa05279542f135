/**
 * The transport of a sandbox process handle (src/sandboxes/sandbox-handle.ts keeps its state and its
 * tasks): starts the process (workers/sandbox-main.ts) with nothing of the front's (an empty
 * environment, no TLS files, no descriptor but its sockets on fds 3 and 4 and stderr), writes frames
 * to it, reads frames back, watches its stderr for V8's out-of-memory report, samples its resident
 * memory, and ends it. What its tasks become when it dies is the pool's business (src/sandboxes/pool.ts).
 */
import type { ChildProcess } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { type Duplex, PassThrough } from 'node:stream';

import {
  CHANNEL_FD,
  Frame,
  FrameReader,
  frameHeader,
  openCallFrame,
  RESULTS_FD,
  type ReceivedFrame,
  type SandboxSettings,
  taskFrameHead,
} from '../contract/channel';
import type { Logger } from '../ops/log';
import { type Confinement, NO_CONFINEMENT, spawnConfined } from './sandbox-confinement';
import { SandboxHandle, type SandboxListener } from './sandbox-handle';
import type { QueuedTask } from './task-queue';

const SANDBOX_MAIN = path.join(__dirname, '..', '..', 'workers', 'sandbox-main.js');
/** isolated-vm needs --no-node-snapshot on Node 20+; the other flag is what `npm start` has always used. */
const SANDBOX_NODE_FLAGS = ['--no-node-snapshot', '--no-concurrent-recompilation'];
const STDERR_TAIL_CHARS = 4_096;
const CLOSE_FLUSH_MS = 20;
/** A task's frames up to this size are written as one copied buffer (see write). */
const COPIED_WRITE_BYTES = 16 * 1024;
/** How long an ending process may take to exit on its own before it is killed. */
const STOP_GRACE_MS = 2_000;
/**
 * What V8 prints on stderr when it gives up on an isolate's heap ("<--- Last few GCs --->", "Fatal
 * JavaScript out of memory", "FATAL ERROR: … Allocation failed"). With onCatastrophicError the thread
 * then hangs; seeing this, the front ends the process at once instead of waiting for the watchdog.
 */
export const V8_OUT_OF_MEMORY = /Last few GCs|heap out of memory|Fatal JavaScript|FATAL ERROR|Allocation failed/i;
const PAGE_BYTES = 4_096;
/** statm is seven numbers on one line. */
const STATM_BUFFER = Buffer.alloc(256);

export class SandboxProcess extends SandboxHandle {
  readonly child: ChildProcess;
  private readonly channel: Duplex;
  private readonly results: Duplex;
  /** /proc/<pid>/statm, open while the process lives (Linux). */
  private statm: number | undefined;
  private readonly knownCalls = new Set<number>();
  /** CLOSE_CALL frames not written yet: they ride along with the next task, or go after CLOSE_FLUSH_MS. */
  private pendingCloses: Buffer[] = [];
  private closeTimer: NodeJS.Timeout | undefined;
  private stderrTail = '';

  constructor(
    index: number,
    settings: SandboxSettings,
    listener: SandboxListener,
    logger: Logger,
    confinement: Confinement = NO_CONFINEMENT,
  ) {
    super(index, settings, listener, logger);
    // Its own user and layers (src/sandboxes/sandbox-confinement.ts): the same pid, pipes and signals.
    this.child = spawnConfined(confinement, process.execPath, [...SANDBOX_NODE_FLAGS, SANDBOX_MAIN, JSON.stringify(settings)], {
      env: minimalEnv(),
      // fd 3: the channel; fd 4: results, written by the sandbox's threads (src/contract/channel.ts).
      stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
      windowsHide: true,
    });
    // A spawn that fails (EMFILE, EAGAIN, ENOMEM…) has no pid and says why in an 'error' event: an
    // exit like any other start failure, which the supervisor retries. Without a listener it would
    // end the front. With EMFILE Node sets up no pipes at all: the process gets closed stand-ins.
    this.child.on('error', (error) => this.onChildError(error));
    const stdio = (this.child.stdio ?? []) as (Duplex | null | undefined)[];
    this.channel = stdio[CHANNEL_FD] ?? closedStream();
    this.results = stdio[RESULTS_FD] ?? closedStream();
    this.read(this.channel, (frame) => this.received(frame));
    this.read(this.results, (frame) => {
      if (frame.kind !== Frame.RESULT) throw new Error(`frame kind ${frame.kind} on the results socket`);
      this.received(frame);
    });
    this.child.stderr?.on('error', () => undefined); // the exit event says what happened
    this.child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      this.stderrTail = (this.stderrTail + text).slice(-STDERR_TAIL_CHARS);
      if (!this.ending && V8_OUT_OF_MEMORY.test(this.stderrTail)) this.outOfMemory();
    });
    this.child.once('exit', (code, signal) => this.onExit(code, signal, undefined));
  }

  /**
   * Before a pid, an error is the spawn failing; after it, one from kill() (the process is gone
   * already, ESRCH aside), and the exit event tells the rest.
   */
  private onChildError(error: Error): void {
    if (this.child.pid === undefined) this.onExit(null, null, error.message);
  }

  /** V8 said on stderr that it gave up on an isolate: its thread hangs, so the process goes at once. */
  private outOfMemory(): void {
    this.logger.warn(
      { sandbox: this.index, pid: this.pid },
      'V8 gave up on a sandbox heap (out of memory): ending its process, sending its tasks elsewhere',
    );
    this.kill('fatal');
  }

  /** Also after a kill, which has handed the tasks back already (exited() acts once): the sockets still close here. */
  private onExit(code: number | null, signal: NodeJS.Signals | null, spawnError: string | undefined): void {
    clearTimeout(this.closeTimer);
    if (this.statm !== undefined) closeSync(this.statm);
    this.statm = undefined;
    this.channel.destroy();
    this.results.destroy();
    this.exited({ code, signal, stderrTail: this.stderrTail.trim(), spawnError });
  }

  /**
   * What a sandbox process sends is not trusted (a script that escaped V8 would own it): a frame the
   * front cannot read ends that process, never the front.
   */
  private read(socket: Duplex, onFrame: (frame: ReceivedFrame) => void): void {
    const reader = new FrameReader(onFrame);
    socket.on('data', (chunk: Buffer) => {
      try {
        if (!this.ending) reader.push(chunk);
      } catch (error) {
        this.protocolError(error instanceof Error ? error.message : String(error));
      }
    });
    socket.on('error', () => undefined); // the exit event says what happened
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  override sendLibraries(frame: Buffer): void {
    if (this.state !== 'exited') this.channel.write(frame);
  }

  /**
   * One task, with the closes waiting and its call's spec first if this process has not seen the
   * call: one write. A small task's frames are copied into one buffer (a LOAD's row: ~600 bytes),
   * cheaper than corking the socket for a writev of five; a large one's rows go as they are.
   */
  protected write(task: QueuedTask, poolOnly: boolean): void {
    const { request } = task;
    const pieces: Uint8Array[] = [];
    if (this.pendingCloses.length > 0) {
      pieces.push(...this.pendingCloses);
      this.pendingCloses = [];
    }
    if (!this.knownCalls.has(request.callId)) {
      this.knownCalls.add(request.callId);
      pieces.push(...openCallFrame(request.callId, request.call));
    }
    const frame = { callId: request.callId, rows: request.rows, firstRow: request.firstRow, spentMs: request.budget.spentMs, poolOnly };
    pieces.push(taskFrameHead(task.id, frame, byteLength(request.chunks)), ...request.chunks);
    const bytes = byteLength(pieces);
    if (bytes <= COPIED_WRITE_BYTES) return void this.channel.write(Buffer.concat(pieces, bytes));
    this.channel.cork();
    for (const piece of pieces) this.channel.write(piece);
    this.channel.uncork();
  }

  /**
   * The call ended: the process may drop its spec. Not written at once: a one-row call then costs
   * one write to the sandbox (its spec and task), not two. A call that ended with a task still
   * running here ended early: the process stops that task on this frame, so it goes at once.
   */
  closeCall(callId: number): void {
    if (!this.knownCalls.delete(callId) || this.state === 'exited') return;
    this.pendingCloses.push(frameHeader(Frame.CLOSE_CALL, callId, 0));
    if (this.holdsTaskOf(callId)) return this.writeCloses();
    // Left armed when the closes ride along with a task: a LOAD's calls then share one timer every
    // CLOSE_FLUSH_MS instead of setting and clearing one each.
    this.closeTimer ??= setTimeout(() => {
      this.closeTimer = undefined;
      this.writeCloses();
    }, CLOSE_FLUSH_MS);
  }

  yieldTask(taskId: number): void {
    if (this.state === 'exited') return;
    this.writeCloses();
    this.channel.write(frameHeader(Frame.YIELD, taskId, 0));
  }

  private writeCloses(): void {
    if (this.pendingCloses.length === 0 || this.state === 'exited') return;
    const frames = this.pendingCloses.length === 1 ? (this.pendingCloses[0] as Buffer) : Buffer.concat(this.pendingCloses);
    this.pendingCloses = [];
    this.channel.write(frames);
  }

  /** Resident memory in bytes, from /proc (Linux); undefined elsewhere or once it is gone. */
  residentBytes(): number | undefined {
    if (this.state === 'exited' || this.child.pid === undefined) return undefined;
    try {
      // Opened once and read again from its start: one pread per sample instead of open, read and close
      // (five samples a second per process, busy or idle).
      this.statm ??= openSync(`/proc/${this.child.pid}/statm`, 'r');
      const bytes = readSync(this.statm, STATM_BUFFER, 0, STATM_BUFFER.byteLength, 0);
      return Number(STATM_BUFFER.toString('latin1', 0, bytes).split(' ')[1]) * PAGE_BYTES;
    } catch {
      return undefined;
    }
  }

  protected terminate(): void {
    this.child.kill('SIGKILL');
  }

  protected override stderrSoFar(): string {
    return this.stderrTail.trim();
  }

  protected closeChannel(): void {
    this.channel.end();
  }

  /** Closes the channel and waits for the exit; a process that does not end promptly is killed. */
  stop(): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.state === 'exited') return resolve();
      this.child.once('exit', () => resolve());
      this.end();
      setTimeout(() => this.kill('stop'), STOP_GRACE_MS).unref();
    });
  }
}

function byteLength(chunks: readonly Uint8Array[]): number {
  return chunks.reduce((n, chunk) => n + chunk.byteLength, 0);
}

/** The channel of a process that never started: closed, so writes and reads end at once. */
function closedStream(): Duplex {
  return new PassThrough().destroy();
}

/** Nothing of the front's environment (no SSE_* settings, no paths to certificates); Windows needs SystemRoot to start. */
function minimalEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  if (process.platform === 'win32' && process.env['SystemRoot'] !== undefined) env['SystemRoot'] = process.env['SystemRoot'];
  return env;
}
