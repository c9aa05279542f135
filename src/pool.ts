/**
 * Owns the piscina pool of sandbox workers. Tasks go in as EvaluateTask and come back as
 * TaskResult; pool-level failures (queue full, a worker that died) become PluginErrors here.
 */
import path from 'node:path';

import Piscina from 'piscina';

import type { Config } from './config';
import { PluginError } from './errors';
import type { EvaluateTask, TaskResult } from './task';
import type { SandboxLimits } from '../workers/sandbox';

const WORKER_FILE = path.join(__dirname, '..', 'workers', 'evaluate.js');

/** Host-side heap of a worker (decoding, encoding, result copies), apart from the isolate's own heap. */
function workerHeapMb(memoryLimitMb: number): number {
  return Math.max(256, memoryLimitMb * 4);
}

export type PoolConfig = Pick<Config, 'workers' | 'maxQueue' | 'memoryLimitMb' | 'scriptTimeoutMs'>;

export class WorkerPool {
  private readonly piscina: Piscina<EvaluateTask, TaskResult>;
  private closing: Promise<void> | undefined;
  /** Tasks handed to piscina and not yet settled (queued or running). */
  private active = 0;

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

  get threads(): number {
    return this.piscina.threads.length;
  }

  get queueSize(): number {
    return this.piscina.queueSize;
  }

  get utilization(): number {
    return this.piscina.utilization;
  }

  get busyWorkers(): number {
    return Math.max(0, Math.min(this.threads, this.active - this.piscina.queueSize));
  }

  /** True when the queue is full and new calls should be refused as busy. */
  get saturated(): boolean {
    return this.piscina.queueSize >= this.config.maxQueue;
  }

  async run(task: EvaluateTask): Promise<TaskResult> {
    if (this.closing) throw new PluginError('UNAVAILABLE', 'the plugin is shutting down');
    this.active++;
    try {
      return await this.piscina.run(task);
    } catch (error) {
      throw poolError(error, this.config.maxQueue);
    } finally {
      this.active--;
    }
  }

  /** Waits for running tasks, then stops the workers (their isolates are disposed on exit). */
  close(): Promise<void> {
    this.closing ??= this.piscina.close();
    return this.closing;
  }
}

export function busyError(maxQueue: number): PluginError {
  return new PluginError('RESOURCE_EXHAUSTED', `the plugin is busy: ${maxQueue} chunks are already waiting for a sandbox (SSE_MAX_QUEUE); try again shortly`);
}

function poolError(error: unknown, maxQueue: number): PluginError {
  const message = error instanceof Error ? error.message : String(error);
  if (/queue is at limit/i.test(message)) return busyError(maxQueue);
  if (/terminat|closed/i.test(message)) return new PluginError('UNAVAILABLE', 'the plugin is shutting down');
  return new PluginError('UNAVAILABLE', `a sandbox worker stopped unexpectedly (${message}); the call was not completed, try again`, { cause: error });
}
