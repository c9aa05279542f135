/**
 * How much of the machine other processes used while the bench measured. The bench shares its
 * cores with whatever else runs; a figure taken while others were busy is marked, not hidden.
 * Reads /proc/stat (all CPUs) and /proc/<pid>/stat (the bench, its servers and their children).
 */
import { readFileSync } from 'node:fs';

import { cpuTicks, processTree } from './proc';

/** All waiting for quiet, over the whole run, stops after this long: the bench must end. */
let quietBudgetMs = Number(process.env['BENCH_QUIET_BUDGET_MS'] ?? '60000');

interface Sample {
  readonly totalTicks: number;
  readonly busyTicks: number;
  readonly ownTicks: number;
}

function machineTicks(): { total: number; busy: number } {
  const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1, 9).map(Number);
  const total = fields.reduce((sum, v) => sum + v, 0);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  return { total, busy: total - idle };
}

export class NoiseMonitor {
  sample(): Sample {
    const { total, busy } = machineTicks();
    // The bench's own process tree: itself, the servers it started, and their children.
    const own = processTree(process.pid).reduce((sum, pid) => sum + cpuTicks(pid), 0);
    return { totalTicks: total, busyTicks: busy, ownTicks: own };
  }

  /** Share of all CPUs' time since `from` used by processes other than the bench's (0..1). */
  foreignShare(from: Sample): number {
    const now = this.sample();
    const total = now.totalTicks - from.totalTicks;
    if (total <= 0) return 0;
    const foreign = now.busyTicks - from.busyTicks - (now.ownTicks - from.ownTicks);
    return Math.max(0, foreign / total);
  }

  /**
   * Waits (up to maxWaitMs, and within what is left of the run's BENCH_QUIET_BUDGET_MS) for a
   * window of windowMs in which other processes used less than maxShare of the CPUs.
   */
  async waitForQuiet(maxShare: number, windowMs: number, maxWaitMs: number): Promise<void> {
    const started = Date.now();
    const deadline = started + Math.min(maxWaitMs, quietBudgetMs);
    try {
      while (Date.now() < deadline) {
        const before = this.sample();
        await new Promise((resolve) => setTimeout(resolve, windowMs));
        if (this.foreignShare(before) < maxShare) return;
      }
    } finally {
      quietBudgetMs -= Math.max(0, Date.now() - started - windowMs);
    }
  }
}
