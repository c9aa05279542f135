/**
 * Experiment only, never in production: preloaded into the plugin (`node -r`) by
 * bench/experiment.ts to try handing each task to the idle worker that has waited longest (round
 * robin) instead of the first idle one, without editing src/. A worker that has just finished a
 * task spends the next ~1 ms preparing its spare context; with sequential small calls the first
 * idle worker is always that one, and the next task waits for the preparation.
 * Piscina design (a2715cf, 2e16e7b on): a `loadBalancer` is added to the pool's Piscina options.
 * Worker-process design (9d11bdf..516f891): the pool's own dispatch() is replaced.
 */
import path from 'node:path';

interface Candidate {
  readonly currentUsage: number;
}

interface ProcessWorker {
  readonly ready: boolean;
  readonly busy: boolean;
  readonly exited: boolean;
}

interface ProcessPool {
  readonly workers: ProcessWorker[];
  readonly queue: unknown[];
  start(worker: ProcessWorker, entry: unknown): void;
  dispatch?: () => void;
}

type Constructor = new (options: Record<string, unknown>) => object;

let next = 0;

/** The first idle worker at or after the one after the last chosen; null queues the task. */
function roundRobin<T>(workers: readonly T[], idle: (worker: T) => boolean): T | null {
  for (let tried = 0; tried < workers.length; tried++) {
    const at = (next + tried) % workers.length;
    const worker = workers[at] as T;
    if (!idle(worker)) continue;
    next = (at + 1) % workers.length;
    return worker;
  }
  return null;
}

function patchPiscina(): void {
  // piscina's CommonJS entry is the class itself; the pool requires it after this preload ran.
  const entry = require.resolve('piscina');
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- must replace the cached module before the pool loads it
  const Original = require(entry) as Constructor;
  const balancer = (_task: unknown, workers: readonly Candidate[]): Candidate | null => roundRobin(workers, (w) => w.currentUsage === 0);
  const cached = require.cache[entry];
  if (cached) {
    cached.exports = class extends Original {
      constructor(options: Record<string, unknown>) {
        super({ ...options, loadBalancer: balancer });
      }
    };
  }
}

function patchProcessPool(pool: { prototype: ProcessPool }): void {
  pool.prototype.dispatch = function dispatch(this: ProcessPool): void {
    while (this.queue.length > 0) {
      const worker = roundRobin(this.workers, (w) => w.ready && !w.busy && !w.exited);
      if (worker === null) return;
      this.start(worker, this.queue.shift());
    }
  };
}

const isPluginMain = path.basename(process.argv[1] ?? '') === 'main.js';

if (isPluginMain && process.env['BENCH_ROUND_ROBIN'] === '1') {
  patchPiscina();
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- must patch the loaded class
  const { WorkerPool } = require('../src/pool') as { WorkerPool: { prototype: ProcessPool } };
  if (typeof WorkerPool.prototype.dispatch === 'function') patchProcessPool(WorkerPool);
}
