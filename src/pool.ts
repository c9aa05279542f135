/**
 * Owns the piscina pool of sandbox worker threads. Tasks go in as EvaluateTask and come back as
 * TaskResult; pool-level failures (queue full, a worker that died) become PluginErrors here.
 *
 * A watchdog covers what isolated-vm cannot: some allocations make V8 fail fatally inside an
 * isolate (isolated-vm #107, #527). With onCatastrophicError set (workers/sandbox.ts) that no
 * longer aborts the process, but the worker thread hangs for ever. Each task reports through a
 * shared control cell when it starts and with what time limit; a task still running well past that
 * limit is aborted, which makes piscina replace its thread. The stuck native thread cannot be
 * reclaimed: it is counted in lostWorkers, and past maxLostWorkers the plugin asks to be restarted.
 */
import path from 'node:path';

import Piscina from 'piscina';

import type { Config } from './config';
import { PluginError } from './shared/errors';
import { memoryLimitError } from './shared/limit-errors';
import { CONTROL_STATE, CONTROL_TIMEOUT_MS, TASK_QUEUED, TASK_RUNNING, newControl, type EvaluateTask, type TaskResult } from './shared/task';
import type { SandboxLimits } from '../workers/sandbox';

const WORKER_FILE = path.join(__dirname, '..', 'workers', 'evaluate.js');
/** How long past its time limit a running task may go before its worker is presumed stuck. */
export const STUCK_GRACE_MS = 1_000;
const WATCH_INTERVAL_MS = 100;

/** Host-side heap of a worker (decoding, encoding, result copies), apart from the isolate's own heap. */
export function workerHeapMb(memoryLimitMb: number): number {
  return Math.max(256, memoryLimitMb * 4);
}

export type PoolConfig = Pick<Config, 'workers' | 'maxQueue' | 'memoryLimitMb' | 'scriptTimeoutMs'>;

export interface RunOptions {
  /** Aborted when the call ends early (cancelled, failed): its tasks that have not started are dropped. */
  readonly signal?: AbortSignal;
  /** Buffers that move to the worker instead of being copied. */
  readonly transferList?: ArrayBuffer[];
}

interface Watched {
  readonly control: Int32Array;
  readonly abort: AbortController;
  startedAt: number;
  stuck: boolean;
}

export class WorkerPool {
  private readonly piscina: Piscina<EvaluateTask, TaskResult>;
  private readonly watched = new Set<Watched>();
  private watchdog: NodeJS.Timeout | undefined;
  private closing: Promise<void> | undefined;
  /** Worker threads abandoned in native code (see above); they hold memory until the process ends. */
  lostWorkers = 0;
  /** Called once when lostWorkers reaches maxLostWorkers: the process should be restarted. */
  onDegraded: (() => void) | undefined;

  constructor(readonly config: PoolConfig) {
    const workerData: SandboxLimits = { memoryLimitMb: config.memoryLimitMb, scriptTimeoutMs: config.scriptTimeoutMs };
    this.piscina = new Piscina<EvaluateTask, TaskResult>({
      filename: WORKER_FILE,
      minThreads: config.workers,
      maxThreads: config.workers,
      idleTimeout: Number.POSITIVE_INFINITY,
      maxQueue: config.maxQueue,
      // async: a worker's event loop keeps running between tasks, so it can prepare the next context.
      atomics: 'async',
      workerData,
      resourceLimits: { maxOldGenerationSizeMb: workerHeapMb(config.memoryLimitMb) },
    });
  }

  /** As many stuck threads as workers: time to restart the process and give their memory back. */
  get maxLostWorkers(): number {
    return Math.max(2, this.config.workers);
  }

  /** Resolves once every worker has built its sandbox, so the first calls do not pay for it. */
  async ready(): Promise<void> {
    // warmUp (workers/evaluate.ts) takes no task.
    const warmUps = Array.from({ length: this.config.workers }, () => this.piscina.run(null as unknown as EvaluateTask, { name: 'warmUp' }));
    await Promise.all(warmUps);
  }

  get threads(): number {
    return this.piscina.threads.length;
  }

  get queueSize(): number {
    return this.piscina.queueSize;
  }

  get busyWorkers(): number {
    let running = 0;
    for (const entry of this.watched) if (Atomics.load(entry.control, CONTROL_STATE) === TASK_RUNNING) running++;
    return Math.min(this.config.workers, running);
  }

  /** True when the queue is full and new calls should be refused as busy. */
  get saturated(): boolean {
    return this.piscina.queueSize >= this.config.maxQueue;
  }

  async run(task: Omit<EvaluateTask, 'control'>, options: RunOptions = {}): Promise<TaskResult> {
    if (this.closing) throw new PluginError('UNAVAILABLE', 'the plugin is shutting down');
    const control = newControl();
    const entry: Watched = { control: new Int32Array(control), abort: new AbortController(), startedAt: 0, stuck: false };
    // A running task is left to finish within its time limit: aborting it would cost its thread.
    const onCallEnded = (): void => {
      if (Atomics.load(entry.control, CONTROL_STATE) === TASK_QUEUED) entry.abort.abort();
    };
    options.signal?.addEventListener('abort', onCallEnded, { once: true });
    this.watch(entry);
    try {
      const transferList = options.transferList ?? [];
      return await this.piscina.run({ ...task, control }, { signal: entry.abort.signal, transferList });
    } catch (error) {
      if (entry.stuck) throw memoryLimitError(this.config.memoryLimitMb, 'the sandbox stopped responding and was replaced');
      if (entry.abort.signal.aborted) throw new PluginError('CANCELLED', 'the call ended before this chunk ran');
      throw poolError(error, this.config.maxQueue);
    } finally {
      options.signal?.removeEventListener('abort', onCallEnded);
      this.watched.delete(entry);
    }
  }

  /** Waits for running tasks, then stops the workers (their isolates are disposed on exit). */
  close(): Promise<void> {
    this.closing ??= this.piscina.close().finally(() => clearInterval(this.watchdog));
    return this.closing;
  }

  private watch(entry: Watched): void {
    this.watched.add(entry);
    this.watchdog ??= setInterval(() => this.checkStuck(), WATCH_INTERVAL_MS).unref();
  }

  private checkStuck(): void {
    const now = performance.now();
    for (const entry of this.watched) {
      if (entry.stuck || Atomics.load(entry.control, CONTROL_STATE) !== TASK_RUNNING) continue;
      if (entry.startedAt === 0) entry.startedAt = now;
      else if (now - entry.startedAt > Atomics.load(entry.control, CONTROL_TIMEOUT_MS) + STUCK_GRACE_MS) this.abandon(entry);
    }
  }

  private abandon(entry: Watched): void {
    entry.stuck = true;
    entry.abort.abort();
    this.lostWorkers++;
    if (this.lostWorkers === this.maxLostWorkers) this.onDegraded?.();
  }
}

export function busyError(maxQueue: number): PluginError {
  return new PluginError('RESOURCE_EXHAUSTED', `the plugin is busy: ${maxQueue} chunks are already waiting for a sandbox (SSE_MAX_QUEUE); try again shortly`);
}

function poolError(error: unknown, maxQueue: number): PluginError {
  const message = error instanceof Error ? error.message : String(error);
  if (/queue is at limit/i.test(message)) return busyError(maxQueue);
  // Before the shutdown check: Node says "Worker terminated due to reaching memory limit".
  if (/memory limit|out of memory/i.test(message)) return new PluginError('RESOURCE_EXHAUSTED', `a sandbox worker ran out of memory (${message}) and was replaced`);
  if (/terminat|closed/i.test(message)) return new PluginError('UNAVAILABLE', 'the plugin is shutting down');
  return new PluginError('UNAVAILABLE', `a sandbox worker stopped unexpectedly (${message}); the call was not completed, try again`, { cause: error });
}
