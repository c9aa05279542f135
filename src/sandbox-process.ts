/**
 * One sandbox worker as an OS process (not a thread). isolated-vm cannot contain every out-of-memory
 * condition: some allocations (a Map or an object with millions of keys, `new Array(1e8).fill(0)`)
 * make V8 abort the whole process (isolated-vm issues #107, #527), and with `onCatastrophicError` the
 * thread hangs for ever instead. In a child process such a crash costs one worker, which the pool
 * replaces; only the task it was running fails. The parent also enforces a hard deadline (the
 * isolate's own timeout plus a grace) and a hard RSS cap, killing a worker that passes either.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { PluginError, oneLine } from './errors';
import { memoryLimitError, timeLimitError } from './limit-errors';
import type { EvaluateTask, TaskFailure, TaskResult } from './task';
import type { SandboxLimits } from '../workers/sandbox';

const WORKER_FILE = path.join(__dirname, '..', 'workers', 'process-entry.js');
/** How long past its time budget a task may run before its process is killed. */
export const KILL_GRACE_MS = 500;
/**
 * How long a task of a call that ended (cancelled by Qlik, or failed elsewhere) may still run before
 * its process is killed and replaced: short tasks finish, an endless loop does not hold the worker.
 */
export const CANCEL_GRACE_MS = 250;
const RSS_POLL_MS = 50;
const STDERR_TAIL_CHARS = 4_096;
/** Only what Node and the sandbox need: no credentials or paths of the host reach a worker. */
const INHERITED_ENV = ['PATH', 'SystemRoot', 'TZ', 'LANG', 'LC_ALL', 'NODE_ENV'];

type KillReason = 'deadline' | 'memory' | 'cancel';

export type ChildMessage = { readonly kind: 'ready' } | { readonly kind: 'result'; readonly result: TaskResult };

/** Host heap of a worker process (decoding, encoding, result copies), apart from the isolate's heap. */
export function hostHeapMb(memoryLimitMb: number): number {
  return Math.max(256, memoryLimitMb * 4);
}

/**
 * The RSS past which a worker process is killed. isolated-vm's limit is soft: it lends V8 up to 1 GB
 * more before it terminates a script, so without this fence one worker could reach limit + 1 GB.
 * Room: the isolate (limit), results copied out and encoded (about twice the limit), Node (~50 MB).
 */
export function rssCapMb(memoryLimitMb: number): number {
  return memoryLimitMb * 3 + 256;
}

interface Running {
  readonly settle: (result: TaskResult) => void;
  readonly fail: (error: PluginError) => void;
  readonly started: number;
  readonly timer: NodeJS.Timeout;
}

export class SandboxProcess {
  private readonly child: ChildProcess;
  private running: Running | null = null;
  private stderrTail = '';
  private killedFor: KillReason | null = null;
  private readonly rssTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private markExited!: () => void;
  /** Settles when the process has exited, for whatever reason. */
  readonly exit = new Promise<void>((resolve) => (this.markExited = resolve));
  private markStarted!: (started: boolean) => void;
  /** Resolves once the sandbox is built and the process takes tasks; rejects if it died before that. */
  readonly started = new Promise<void>((resolve, reject) => {
    this.markStarted = (ok) => (ok ? resolve() : reject(new Error(`a sandbox worker process could not start: ${lastLine(this.stderrTail)}`)));
  });
  ready = false;
  exited = false;

  constructor(
    private readonly limits: SandboxLimits,
    private readonly onExit: (worker: SandboxProcess) => void,
    private readonly onIdle: () => void,
  ) {
    this.child = fork(WORKER_FILE, [JSON.stringify(limits)], {
      execArgv: ['--no-node-snapshot', '--no-concurrent-recompilation', `--max-old-space-size=${hostHeapMb(limits.memoryLimitMb)}`],
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: inheritedEnv(),
    });
    this.child.stderr?.setEncoding('utf8');
    this.child.stderr?.on('data', (text: string) => (this.stderrTail = (this.stderrTail + text).slice(-STDERR_TAIL_CHARS)));
    this.child.on('message', (message: ChildMessage) => this.onMessage(message));
    this.child.on('exit', (code, signal) => this.onChildExit(code, signal));
    this.child.on('error', () => this.kill());
    // Only the pool's start-up awaits this; a replacement that dies early is handled by onExit.
    this.started.catch(() => undefined);
    this.rssTimer = process.platform === 'linux' ? setInterval(() => this.checkRss(), RSS_POLL_MS).unref() : undefined;
  }

  get busy(): boolean {
    return this.running !== null;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Runs one task; the promise settles with its result, or rejects when the process dies. */
  run(task: EvaluateTask, signal?: AbortSignal): Promise<TaskResult> {
    return new Promise((settle, fail) => {
      const timer = setTimeout(() => this.kill('deadline'), task.timeoutMs + KILL_GRACE_MS).unref();
      const onAbort = (): void => void setTimeout(() => this.running === running && this.kill('cancel'), CANCEL_GRACE_MS).unref();
      const done = <T>(then: (value: T) => void) => (value: T): void => {
        signal?.removeEventListener('abort', onAbort);
        then(value);
      };
      const running: Running = { settle: done(settle), fail: done(fail), started: performance.now(), timer };
      this.running = running;
      signal?.addEventListener('abort', onAbort, { once: true });
      this.child.send(task, (error) => {
        if (error) this.kill();
      });
    });
  }

  /** Lets the process finish its current task and exit; kills it if it has not within the grace. */
  stop(graceMs: number): Promise<void> {
    this.stopping = true;
    if (!this.busy && this.child.connected) this.child.disconnect();
    setTimeout(() => this.kill(), graceMs).unref();
    return this.exit;
  }

  kill(reason: KillReason | null = null): void {
    this.killedFor ??= reason;
    if (!this.exited) this.child.kill('SIGKILL');
  }

  private onMessage(message: ChildMessage): void {
    if (message.kind === 'ready') {
      this.ready = true;
      this.markStarted(true);
      this.onIdle();
      return;
    }
    const running = this.running;
    if (!running) return;
    clearTimeout(running.timer);
    this.running = null;
    running.settle(message.result);
    if (this.stopping && this.child.connected) this.child.disconnect();
    else this.onIdle();
  }

  private onChildExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.exited = true;
    clearInterval(this.rssTimer);
    const running = this.running;
    this.running = null;
    if (running) {
      clearTimeout(running.timer);
      const scriptMs = performance.now() - running.started;
      if (this.killedFor === 'deadline') running.settle(failure(timeLimitError(this.limits.scriptTimeoutMs), scriptMs, { timedOut: true }));
      else if (this.killedFor === 'memory' || /is_heap_oom|out of memory/i.test(this.stderrTail)) {
        running.settle(failure(memoryLimitError(this.limits.memoryLimitMb), scriptMs, { rebuilt: true }));
      } else if (this.killedFor === 'cancel') running.fail(new PluginError('CANCELLED', 'the call ended while this chunk ran'));
      else running.fail(crashError(code, signal));
    }
    this.markExited();
    if (!this.ready) this.markStarted(false);
    this.onExit(this);
  }

  private checkRss(): void {
    if (this.running === null || this.child.pid === undefined) return;
    const rssMb = readRssMb(this.child.pid);
    if (rssMb !== undefined && rssMb > rssCapMb(this.limits.memoryLimitMb)) this.kill('memory');
  }
}

function failure(error: PluginError, scriptMs: number, flags: { timedOut?: boolean; rebuilt?: boolean }): TaskFailure {
  return { ok: false, error: error.toData(), scriptMs, isolateRebuilt: flags.rebuilt === true, timedOut: flags.timedOut === true };
}

function crashError(code: number | null, signal: NodeJS.Signals | null): PluginError {
  const how = signal === null ? `exit code ${code ?? 'unknown'}` : `signal ${signal}`;
  return new PluginError('UNAVAILABLE', `a sandbox worker stopped unexpectedly (${how}); the call was not completed, try again`);
}

function lastLine(text: string): string {
  return oneLine(text.trim().split('\n').pop() ?? '') || 'it printed nothing';
}

function inheritedEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const name of INHERITED_ENV) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/** Resident set size from /proc (Linux); undefined where that is not available. */
export function readRssMb(pid: number): number | undefined {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match?.[1] === undefined ? undefined : Number(match[1]) / 1024;
  } catch {
    return undefined;
  }
}
