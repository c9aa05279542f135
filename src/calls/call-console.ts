/**
 * A call's console lines, written to the plugin log as its tasks' results arrive: each with the
 * call's request id, app id and user id, `warn` for console.warn/error/trace and `info` for the
 * rest. A call keeps at most SSE_CONSOLE_LINES lines and SSE_CONSOLE_BYTES bytes of UTF-8 text over
 * all its tasks (the sandbox stops at the same bounds per task, so no result carries more); past
 * them lines are counted, and one line at the call's end says how many were dropped. So a flood costs
 * the front at most the bounds per call, and the log never more.
 */
import type { ConsoleOutput } from '../contract/console';
import type { Logger } from '../ops/log';

export interface ConsoleOwner {
  readonly requestId: string;
  readonly appId: string;
  readonly userId: string;
}

export class CallConsole {
  private lines = 0;
  private bytes = 0;
  private dropped = 0;

  constructor(
    private readonly logger: Logger,
    private readonly owner: ConsoleOwner,
    private readonly maxLines: number,
    private readonly maxBytes: number,
  ) {}

  /** The lines of one task's result, in the order the script wrote them. */
  add(output: ConsoleOutput): void {
    for (const line of output.lines) {
      const bytes = Buffer.byteLength(line.text, 'utf8');
      if (this.lines >= this.maxLines || this.bytes + bytes > this.maxBytes) {
        this.dropped++;
        continue;
      }
      this.lines++;
      this.bytes += bytes;
      this.logger[line.level]({ ...this.owner, source: 'console' }, line.text);
    }
    this.dropped += output.dropped;
  }

  /** The call ended: one line for what was dropped, if anything was. */
  finish(): void {
    if (this.dropped === 0) return;
    this.logger.warn(
      { ...this.owner, source: 'console', dropped: this.dropped },
      `${this.dropped} more console lines dropped: a call keeps ${this.maxLines} lines and ${this.maxBytes} bytes (SSE_CONSOLE_LINES, SSE_CONSOLE_BYTES)`,
    );
    this.dropped = 0;
  }
}
