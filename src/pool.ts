/**
 * The pool of sandbox worker processes (see sandbox-process.ts for why processes, not threads).
 * Tasks wait in one bounded FIFO queue (SSE_MAX_QUEUE) and run one at a time per worker. A task's
 * time budget is taken when it starts, not when it was queued, so a call's tasks never get more
 * time together than the call has left. A worker that dies fails only its own task and is replaced.
 */
import { setMaxListeners } from 'node:events';

import type { Config } from './config';
import { PluginError } from './errors';
import { timeLimitError } from './limit-errors';
import { KILL_GRACE_MS, SandboxProcess } from './sandbox-process';
import type { EvaluateTask, TaskResult } from './task';
import type { SandboxLimits } from '../workers/sandbox';

/** A worker that dies before it is ready is replaced only after this pause, so a broken install cannot fork-bomb. */
const RESPAWN_DELAY_MS = 1_000;

export type PoolConfig = Pick<Config, 'workers' | 'maxQueue' | 'memoryLimitMb' | 'scriptTimeoutMs'>;

export interface RunOptions {
  /** Aborted when the call ends early (cancelled, failed): its queued tasks are dropped. */
  readonly signal?: AbortSignal;
  /** The call's script time left, read when the task starts; defaults to task.timeoutMs. */
  readonly remainingMs?: () => number;
}

interface Queued {
  readonly task: EvaluateTask;
  readonly options: RunOptions;
  readonly resolve: (result: TaskResult) => void;
  readonly reject: (error: PluginError) => void;
}

export class WorkerPool {
  private readonly workers: SandboxProcess[] = [];
  private readonly queue: Queued[] = [];
  private readonly limits: SandboxLimits;
  private closing: Promise<void> | undefined;
  /** Workers that died and were replaced, for tests and logs. */
  replacedWorkers = 0;

  constructor(readonly config: PoolConfig) {
    this.limits = { memoryLimitMb: config.memoryLimitMb, scriptTimeoutMs: config.scriptTimeoutMs };
    for (let i = 0; i < config.workers; i++) this.workers.push(this.spawn());
  }

  /** Resolves when every worker process has built its sandbox; rejects if one could not start. */
  async ready(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.started));
  }

  get threads(): number {
    return this.workers.length;
  }

  get queueSize(): number {
    return this.queue.length;
  }

  get busyWorkers(): number {
    return this.workers.filter((w) => w.busy).length;
  }

  /** Process ids of the workers, for tests that measure or kill them. */
  get pids(): number[] {
    return this.workers.map((w) => w.pid).filter((pid) => pid !== undefined);
  }

  /** True when the queue is full and new calls should be refused as busy. */
  get saturated(): boolean {
    return this.queue.length >= this.config.maxQueue;
  }

  run(task: EvaluateTask, options: RunOptions = {}): Promise<TaskResult> {
    if (this.closing) return Promise.reject(new PluginError('UNAVAILABLE', 'the plugin is shutting down'));
    if (options.signal?.aborted) return Promise.reject(cancelled());
    if (this.saturated) return Promise.reject(busyError(this.config.maxQueue));
    // One listener per task of the call (a 16 MiB message is up to 64 tasks): not a leak.
    if (options.signal) setMaxListeners(0, options.signal);
    return new Promise((resolve, reject) => {
      const onAbort = (): void => this.drop(entry);
      const done = <T>(then: (value: T) => void) => (value: T): void => {
        options.signal?.removeEventListener('abort', onAbort);
        then(value);
      };
      const entry: Queued = { task, options, resolve: done(resolve), reject: done(reject) };
      this.queue.push(entry);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.dispatch();
    });
  }

  /** Drops queued tasks, lets running ones finish, then stops the workers. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const entry of this.queue.splice(0)) entry.reject(new PluginError('UNAVAILABLE', 'the plugin is shutting down'));
      await Promise.all(this.workers.map((w) => w.stop(this.config.scriptTimeoutMs + KILL_GRACE_MS)));
    })();
    return this.closing;
  }

  private dispatch(): void {
    for (const worker of this.workers) {
      if (this.queue.length === 0) return;
      if (worker.ready && !worker.busy && !worker.exited) this.start(worker, this.queue.shift() as Queued);
    }
  }

  private start(worker: SandboxProcess, { task, options, resolve, reject }: Queued): void {
    const timeoutMs = Math.ceil(Math.min(task.timeoutMs, options.remainingMs?.() ?? task.timeoutMs));
    if (timeoutMs <= 0) {
      resolve({ ok: false, error: timeLimitError(this.config.scriptTimeoutMs).toData(), scriptMs: 0, isolateRebuilt: false, timedOut: true });
      return this.dispatch();
    }
    worker.run({ ...task, timeoutMs }, options.signal).then(resolve, reject);
  }

  private drop(entry: Queued): void {
    const at = this.queue.indexOf(entry);
    if (at < 0) return;
    this.queue.splice(at, 1);
    entry.reject(cancelled());
  }

  private spawn(): SandboxProcess {
    // A freed worker takes its next task after the finished task's result has been counted by its
    // call (promise callbacks run first), so the next chunk of that call sees the budget left.
    return new SandboxProcess(this.limits, (dead) => this.replace(dead), () => setImmediate(() => this.dispatch()));
  }

  private replace(dead: SandboxProcess): void {
    if (this.closing) return;
    const at = this.workers.indexOf(dead);
    if (at < 0) return;
    this.replacedWorkers++;
    const respawn = (): void => {
      if (this.closing || this.workers[at] !== dead) return;
      this.workers[at] = this.spawn();
    };
    if (dead.ready) respawn();
    else setTimeout(respawn, RESPAWN_DELAY_MS).unref();
  }
}

export function busyError(maxQueue: number): PluginError {
  return new PluginError('RESOURCE_EXHAUSTED', `the plugin is busy: ${maxQueue} chunks are already waiting for a sandbox (SSE_MAX_QUEUE); try again shortly`);
}

function cancelled(): PluginError {
  return new PluginError('CANCELLED', 'the call ended before this chunk ran');
}
