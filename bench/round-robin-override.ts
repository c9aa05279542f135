/**
 * Experiment only, never in production: preloaded into the plugin (`node -r`) by
 * bench/experiment.ts to try handing each task to the idle worker that has waited longest (round
 * robin) instead of the first idle one, without editing src/. A worker that has just finished a
 * task spends the next ~1 ms preparing its spare context; with sequential small calls, the first
 * idle worker is always that one, and the next task waits for the preparation.
 */
import path from 'node:path';

interface Worker {
  readonly ready: boolean;
  readonly busy: boolean;
  readonly exited: boolean;
}

interface PoolInternals {
  readonly workers: Worker[];
  readonly queue: unknown[];
  start(worker: Worker, entry: unknown): void;
  dispatch(): void;
}

const isPluginMain = path.basename(process.argv[1] ?? '') === 'main.js';

if (isPluginMain && process.env['BENCH_ROUND_ROBIN'] === '1') {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- must patch the loaded class
  const { WorkerPool } = require('../src/pool') as { WorkerPool: { prototype: PoolInternals } };
  let next = 0;
  WorkerPool.prototype.dispatch = function dispatch(this: PoolInternals): void {
    const count = this.workers.length;
    for (let tried = 0; tried < count && this.queue.length > 0; tried++) {
      const at = (next + tried) % count;
      const worker = this.workers[at] as Worker;
      if (!worker.ready || worker.busy || worker.exited) continue;
      this.start(worker, this.queue.shift());
      next = (at + 1) % count;
    }
  };
}
