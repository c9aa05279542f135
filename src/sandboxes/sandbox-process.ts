/**
 * The front's handle on one sandbox process (workers/sandbox-main.ts): starts it with nothing of the
 * front's (an empty environment, no TLS files, no descriptor but its sockets on fds 3 and 4 and stderr),
 * writes frames to it, reads frames back, samples its resident memory, and ends it. What to do with
 * its tasks when it dies is the pool's business (src/sandboxes/pool.ts); this file only reports.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { type Duplex, PassThrough } from 'node:stream';

import {
  type CallSpec,
  CHANNEL_FD,
  Frame,
  FrameReader,
  frameHeader,
  openCallFrame,
  parseJson,
  RESULTS_FD,
  type ReceivedFrame,
  type Retirement,
  type SandboxSettings,
  taskFrameHead,
} from '../contract/channel';
import { decodeResult } from '../contract/result-frame';
import type { TaskResult } from '../contract/task';

const SANDBOX_MAIN = path.join(__dirname, '..', '..', 'workers', 'sandbox-main.js');
/** isolated-vm needs --no-node-snapshot on Node 20+; the other flag is what `npm start` has always used. */
const SANDBOX_NODE_FLAGS = ['--no-node-snapshot', '--no-concurrent-recompilation'];
const STDERR_TAIL_CHARS = 4_096;
const CLOSE_FLUSH_MS = 20;
/**
 * What V8 prints on stderr when it gives up on an isolate's heap ("<--- Last few GCs --->", "Fatal
 * JavaScript out of memory", "FATAL ERROR: … Allocation failed"). With onCatastrophicError the thread
 * then hangs; seeing this, the front ends the process at once instead of waiting for the watchdog.
 */
export const V8_OUT_OF_MEMORY = /Last few GCs|heap out of memory|Fatal JavaScript|FATAL ERROR|Allocation failed/i;
const PAGE_BYTES = 4_096;
/** statm is seven numbers on one line. */
const STATM_BUFFER = Buffer.alloc(256);

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
}

export interface SandboxEvents {
  ready(sandbox: SandboxProcess): void;
  result(sandbox: SandboxProcess, taskId: number, result: TaskResult): void;
  retire(sandbox: SandboxProcess, retirement: Retirement): void;
  /** V8 said on stderr that it gave up on an isolate of this process (V8_OUT_OF_MEMORY). */
  outOfMemory(sandbox: SandboxProcess): void;
  exit(sandbox: SandboxProcess, exit: SandboxExit): void;
}

export interface TaskFrameFields {
  readonly callId: number;
  readonly call: CallSpec;
  readonly rows: number;
  readonly firstRow: number;
  readonly spentMs: number;
  /** Row bytes in pieces (views of gRPC's messages), written one after another. */
  readonly chunks: readonly Uint8Array[];
}

export class SandboxProcess {
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
  private killedFor: KillReason | undefined;
  private retirement: Retirement | undefined;
  ready = false;
  exited = false;
  /** Task ids sent and not answered yet (the pool keeps the tasks themselves). */
  readonly inFlight = new Set<number>();
  /** Held free (no new tasks) for a task sent again after a sandbox died, and running it alone (see the pool). */
  heldForRetry = false;
  quarantined = false;

  constructor(
    readonly index: number,
    readonly settings: SandboxSettings,
    private readonly events: SandboxEvents,
  ) {
    this.child = spawn(process.execPath, [...SANDBOX_NODE_FLAGS, SANDBOX_MAIN, JSON.stringify(settings)], {
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
    this.read(this.channel, (frame) => this.onFrame(frame));
    this.read(this.results, (frame) => {
      if (frame.kind !== Frame.RESULT) throw new Error(`frame kind ${frame.kind} on the results socket`);
      this.onFrame(frame);
    });
    this.child.stderr?.on('error', () => undefined); // the exit event says what happened
    this.child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      this.stderrTail = (this.stderrTail + text).slice(-STDERR_TAIL_CHARS);
      if (!this.ending && V8_OUT_OF_MEMORY.test(this.stderrTail)) this.events.outOfMemory(this);
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

  private onExit(code: number | null, signal: NodeJS.Signals | null, spawnError: string | undefined): void {
    if (this.exited) return;
    this.exited = true;
    clearTimeout(this.closeTimer);
    if (this.statm !== undefined) closeSync(this.statm);
    this.channel.destroy();
    this.results.destroy();
    this.events.exit(this, {
      code,
      signal,
      killedFor: this.killedFor,
      retirement: this.retirement,
      stderrTail: this.stderrTail.trim(),
      wasReady: this.ready,
      spawnError,
    });
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
      } catch {
        this.kill('protocol');
      }
    });
    socket.on('error', () => undefined); // the exit event says what happened
  }

  /** Retiring or being ended: takes no new tasks. */
  get ending(): boolean {
    return this.killedFor !== undefined || this.retirement !== undefined;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Sends one task, with its call's spec first if this process has not seen the call: one writev. */
  send(taskId: number, task: TaskFrameFields): void {
    this.inFlight.add(taskId);
    this.channel.cork();
    this.writeCloses();
    if (!this.knownCalls.has(task.callId)) {
      this.knownCalls.add(task.callId);
      for (const piece of openCallFrame(task.callId, task.call)) this.channel.write(piece);
    }
    this.channel.write(
      taskFrameHead(
        taskId,
        task,
        task.chunks.reduce((n, chunk) => n + chunk.byteLength, 0),
      ),
    );
    for (const chunk of task.chunks) this.channel.write(chunk);
    this.channel.uncork();
  }

  /**
   * The call ended: the process may drop its spec. Not written at once: a one-row call then costs
   * one write to the sandbox (its spec and task), not two.
   */
  closeCall(callId: number): void {
    if (!this.knownCalls.delete(callId) || this.exited) return;
    this.pendingCloses.push(frameHeader(Frame.CLOSE_CALL, callId, 0));
    this.closeTimer ??= setTimeout(() => this.writeCloses(), CLOSE_FLUSH_MS);
  }

  private writeCloses(): void {
    clearTimeout(this.closeTimer);
    this.closeTimer = undefined;
    if (this.pendingCloses.length === 0 || this.exited) return;
    const frames = this.pendingCloses.length === 1 ? (this.pendingCloses[0] as Buffer) : Buffer.concat(this.pendingCloses);
    this.pendingCloses = [];
    this.channel.write(frames);
  }

  /** Resident memory in bytes, from /proc (Linux); undefined elsewhere or once it is gone. */
  residentBytes(): number | undefined {
    if (this.exited || this.child.pid === undefined) return undefined;
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

  kill(reason: KillReason): void {
    this.killedFor ??= reason;
    if (!this.exited) this.child.kill('SIGKILL');
  }

  /** Closes the channel: the process ends itself (workers/sandbox-main.ts). */
  end(): void {
    this.killedFor ??= 'stop';
    this.channel.end();
  }

  private onFrame(frame: ReceivedFrame): void {
    switch (frame.kind) {
      case Frame.READY:
        this.ready = true;
        this.events.ready(this);
        return;
      case Frame.RESULT:
        if (!this.inFlight.delete(frame.id)) return;
        this.events.result(this, frame.id, decodeResult(frame.payload));
        return;
      case Frame.RETIRE:
        this.retirement = parseJson<Retirement>(frame.payload);
        this.events.retire(this, this.retirement);
        return;
      default:
        throw new Error(`unknown channel frame kind ${frame.kind}`);
    }
  }
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
