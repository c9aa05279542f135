/**
 * The crash-loop backoff of the sandbox processes. A process that dies with nothing running (it
 * cannot start, or dies by itself) is replaced at once while such deaths are few; once there were
 * more of them within STABLE_AFTER_MS than there are processes, each replacement waits longer:
 * 100 ms, doubling, up to MAX_RESTART_DELAY_MS. A process that lived STABLE_AFTER_MS ends the loop
 * (its death is older than the window). Pure: the caller passes the time, so a test needs no clock.
 */

/** A death older than this no longer counts: the loop is over. */
const STABLE_AFTER_MS = 10_000;
const FIRST_DELAY_MS = 100;
const MAX_RESTART_DELAY_MS = 5_000;

export class CrashBackoff {
  /** When each recent death happened (ms, the caller's clock), oldest first. */
  private readonly deathsMs: number[] = [];

  constructor(
    /** How many processes there are: that many deaths in the window are replaced at once. */
    private readonly slots: number,
    private readonly stableAfterMs = STABLE_AFTER_MS,
    private readonly maxDelayMs = MAX_RESTART_DELAY_MS,
  ) {}

  /** Counts a death at nowMs; returns how long to wait before starting its replacement. */
  delayAfterDeathMs(nowMs: number): number {
    while (this.deathsMs.length > 0 && nowMs - (this.deathsMs[0] as number) > this.stableAfterMs) this.deathsMs.shift();
    this.deathsMs.push(nowMs);
    const beyond = this.deathsMs.length - this.slots;
    return beyond <= 0 ? 0 : Math.min(this.maxDelayMs, FIRST_DELAY_MS * 2 ** (beyond - 1));
  }
}
