/**
 * The front's memory of what held a sandbox process's main thread. A sandbox runs a lone small task on
 * its main thread (workers/fast-path.ts), and native work that cannot be stopped (compiling a huge
 * eval) holds that thread, and every task sent to the process behind it. The sandbox pauses its own
 * fast path after such a hold, but that memory dies with the process: work held past its call's time
 * limit gets its process retired, the replacement took the fast path again, and the same script, or
 * one made unique each call, held the new process's main thread (a bystander stalled ~6 s five times
 * a minute). A key is not enough, as the text can change each call; so the front pauses the fast path
 * of every process: after a process told it its main thread was held, and after any process died
 * holding tasks (a crash, V8 giving up, the fence, a retirement: the front cannot tell which thread
 * ran what), for 20 times as long as it was held (at least 10 s: fastPathPauseMs). While paused, the
 * pool marks each task it sends pool-only (src/contract/channel.ts). The fast path only saves a thread
 * hand-off, so a pause costs speed, never an answer.
 */
import { fastPathPauseMs } from '../contract/channel';

export class FastPathGate {
  /** Until when (performance.now() ms) tasks are sent pool-only. */
  private pausedUntilMs = 0;

  /** Whether a task sent now may take a sandbox's main thread. */
  allows(nowMs: number): boolean {
    return nowMs >= this.pausedUntilMs;
  }

  /** A main thread was held heldMs, or may have been (a process died holding a task that long). */
  pause(heldMs: number, nowMs: number): void {
    this.pausedUntilMs = Math.max(this.pausedUntilMs, nowMs + fastPathPauseMs(heldMs));
  }
}
