/** A failed call's log line is a few hundred bytes: 20 a second is ~0.3 MB of log a minute. */
const FAILED_LINES_PER_SECOND = 20;
const FAILED_LINES_BURST = 200;

/**
 * Front-wide rates of log output, token buckets shared by every call, for what a client can make the
 * front log faster than calls run:
 * - console text, in bytes. Each call is bounded on its own (SSE_CONSOLE_LINES, SSE_CONSOLE_BYTES), but
 *   calls come one after another: a black-box pass wrote 1.1 GB of log a minute from four clients
 *   looping one-row calls that each logged their 64 KiB. Past the rate, lines are dropped and counted
 *   in their call's dropped line.
 * - lines of failed calls: refused ones (busy, shutting down, bad headers) cost the front no sandbox
 *   time, and ones failing at once (a syntax error) little: one client looping refused calls wrote 53 MB
 *   of log a minute, one looping syntax errors 70 MB. Past the rate, the next line logged says how many
 *   were not; sse_calls_total counts every call.
 */
export class LogRate {
  /** The console rate from the plugin's settings: a burst of one second's worth, and at least one call's whole share. */
  static forConsole(config: { consoleRateKb: number; consoleBytes: number }): LogRate {
    const bytesPerSecond = config.consoleRateKb * 1024;
    return new LogRate(bytesPerSecond, Math.max(bytesPerSecond, config.consoleBytes));
  }

  /** Failed calls' lines: FAILED_LINES_PER_SECOND, with a burst of FAILED_LINES_BURST. */
  static forFailedCalls(): LogRate {
    return new LogRate(FAILED_LINES_PER_SECOND, FAILED_LINES_BURST);
  }

  private tokens: number;
  private lastMs: number;

  /** In the units take() counts (bytes, lines) a second, and at most at once; perSecond 0: no bound. */
  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    this.tokens = burst;
    this.lastMs = nowMs();
  }

  /** True when `units` more may be written now (and they are counted); false: drop the line. */
  take(units: number): boolean {
    if (this.perSecond === 0) return true;
    const now = this.nowMs();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.lastMs) / 1000) * this.perSecond);
    this.lastMs = now;
    if (units > this.tokens) return false;
    this.tokens -= units;
    return true;
  }
}

/** Which failed calls get their log line: those within the rate, the next of them saying how many did not. */
export class FailedLines {
  private notLogged = 0;

  constructor(private readonly rate = LogRate.forFailedCalls()) {}

  /** undefined: leave this call's line out; otherwise how many lines were left out since the last one logged. */
  admit(): number | undefined {
    if (!this.rate.take(1)) {
      this.notLogged++;
      return undefined;
    }
    const notLogged = this.notLogged;
    this.notLogged = 0;
    return notLogged;
  }
}
