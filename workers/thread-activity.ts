/**
 * What a sandbox thread does in its isolate between tasks (preparing the next fresh context), made
 * visible to its watchdog (workers/thread-pool.ts), which otherwise watches only running tasks: a
 * thread stuck there would take no task and be seen by no one. One shared Int32 pair per thread:
 * a busy-period number (0 when idle, never 0 when busy) and that period's time limit.
 */
import type { ThreadActivity } from './thread/sandbox';

/** Threads per sandbox process that can report; a thread replaced after a crash takes the next pair. */
const SLOTS = 64;
const CLAIMED = 0;

export function newActivityCells(): SharedArrayBuffer {
  return new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT * (1 + SLOTS * 2));
}

/** Claims this thread's pair of cells. */
export function threadActivity(cells: SharedArrayBuffer): ThreadActivity {
  const view = new Int32Array(cells);
  const at = 1 + (Atomics.add(view, CLAIMED, 1) % SLOTS) * 2;
  let period = 0;
  return {
    enter(timeoutMs: number): void {
      period = (period % 0x7fff_fffe) + 1;
      Atomics.store(view, at + 1, timeoutMs);
      Atomics.store(view, at, period);
    },
    leave(): void {
      Atomics.store(view, at, 0);
    },
  };
}

/** A busy period the watchdog saw, and when it first saw it. */
interface Seen {
  period: number;
  sinceMs: number;
}

/** The pool's side: which thread has been busy between tasks for longer than its limit + graceMs. */
export class ActivityWatch {
  private readonly view: Int32Array;
  private readonly seen: Seen[] = Array.from({ length: SLOTS }, () => ({ period: 0, sinceMs: 0 }));

  constructor(cells: SharedArrayBuffer) {
    this.view = new Int32Array(cells);
  }

  /** True when some thread is busy between tasks; `stuck` when one is past its limit + graceMs. */
  check(nowMs: number, graceMs: number): 'idle' | 'busy' | 'stuck' {
    let busy = false;
    for (let slot = 0; slot < SLOTS; slot++) {
      const period = Atomics.load(this.view, 1 + slot * 2);
      const seen = this.seen[slot] as Seen;
      if (period === 0) continue;
      busy = true;
      if (seen.period !== period) {
        seen.period = period;
        seen.sinceMs = nowMs;
      } else if (nowMs - seen.sinceMs > Atomics.load(this.view, 2 + slot * 2) + graceMs) return 'stuck';
    }
    return busy ? 'busy' : 'idle';
  }
}
