/**
 * The front-wide rate of console text written to the log: a token bucket of bytes, shared by every
 * call. Each call is bounded on its own (SSE_CONSOLE_LINES, SSE_CONSOLE_BYTES), but calls come one after
 * another: a black-box pass wrote 1.1 GB of log a minute from four clients looping one-row calls that
 * each logged their 64 KiB. Past the rate, lines are dropped and counted in their call's dropped line.
 */
export class ConsoleRate {
  /** The plugin's rate from its settings: a burst of one second's worth, and at least one call's whole share. */
  static fromConfig(config: { consoleRateKb: number; consoleBytes: number }): ConsoleRate {
    const bytesPerSecond = config.consoleRateKb * 1024;
    return new ConsoleRate(bytesPerSecond, Math.max(bytesPerSecond, config.consoleBytes));
  }

  private tokens: number;
  private lastMs: number;

  /** bytesPerSecond 0: no bound. burstBytes: what may be written at once (one call's share at least). */
  constructor(
    private readonly bytesPerSecond: number,
    private readonly burstBytes: number,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    this.tokens = burstBytes;
    this.lastMs = nowMs();
  }

  /** True when `bytes` more may be written now (and they are counted); false: drop the line. */
  take(bytes: number): boolean {
    if (this.bytesPerSecond === 0) return true;
    const now = this.nowMs();
    this.tokens = Math.min(this.burstBytes, this.tokens + ((now - this.lastMs) / 1000) * this.bytesPerSecond);
    this.lastMs = now;
    if (bytes > this.tokens) return false;
    this.tokens -= bytes;
    return true;
  }
}
