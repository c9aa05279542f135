/**
 * A call's console lines, written to the plugin log as its tasks' results arrive: each with the
 * call's request id, app id and user id, `warn` for console.warn/error/trace and `info` for the
 * rest. A call keeps at most SSE_CONSOLE_LINES lines and SSE_CONSOLE_BYTES bytes of UTF-8 text over
 * all its tasks (the sandbox stops at the same bounds per task, so no result carries more); past
 * them lines are counted, and one line at the call's end says how many were dropped. So a flood costs
 * the front at most the bounds per call, and the log never more. All calls together write at most
 * SSE_CONSOLE_RATE_KB a second (src/calls/log-rate.ts); lines past it are dropped the same way.
 */
import type { ConsoleOutput } from '../contract/console';
import type { Logger } from '../ops/log';
import type { LogRate } from './log-rate';

export interface ConsoleOwner {
  readonly requestId: string;
  readonly appId: string;
  readonly userId: string;
}

export class CallConsole {
  private lines = 0;
  private bytes = 0;
  private dropped = 0;
  private droppedByRate = 0;
  /** What each line costs the shared rate beside its text (consoleLineBytes). */
  private readonly lineBytes: number;

  constructor(
    private readonly logger: Logger,
    private readonly owner: ConsoleOwner,
    private readonly maxLines: number,
    private readonly maxBytes: number,
    private readonly rate?: LogRate,
  ) {
    this.lineBytes = lineBytesBesideText(owner);
  }

  /** The lines of one task's result, in the order the script wrote them. */
  add(output: ConsoleOutput): void {
    for (const line of output.lines) {
      const text = cutUtf8(visibleControls(line.text), this.maxBytes - this.bytes);
      if (this.lines >= this.maxLines || text === null) {
        this.dropped++;
        continue;
      }
      const bytes = Buffer.byteLength(text, 'utf8');
      if (this.rate && !this.rate.take(this.lineBytes + jsonBytes(text))) {
        this.dropped++;
        this.droppedByRate++;
        continue;
      }
      this.lines++;
      this.bytes += bytes;
      this.logger[line.level]({ ...this.owner, source: 'console' }, text);
    }
    this.dropped += output.dropped;
  }

  /** The call ended: one line for what was dropped, if anything was (the bytes counted in the sandbox may be fewer). */
  finish(): void {
    if (this.dropped === 0 || this.maxLines === 0) return;
    const rate = this.droppedByRate > 0 ? `; ${this.droppedByRate} of them past the rate all calls share (SSE_CONSOLE_RATE_KB)` : '';
    this.logger.warn(
      { ...this.owner, source: 'console', dropped: this.dropped, droppedByRate: this.droppedByRate },
      `${this.dropped} more console lines dropped: a call keeps ${this.maxLines} lines and ${this.maxBytes} bytes (SSE_CONSOLE_LINES, SSE_CONSOLE_BYTES)${rate}`,
    );
    this.dropped = 0;
    this.droppedByRate = 0;
  }
}

/**
 * A log line's bytes beside its ids and text: level, time, service, `source` and the JSON around
 * them (135 bytes measured in the JSON format, rounded up).
 */
const LOG_LINE_FIXED_BYTES = 144;

/**
 * What one console line costs the log, for the rate all calls share: its ids, its text as JSON writes
 * it (a quote or backslash takes two bytes) and the line's fixed part. Counted as text alone, 204
 * characters a line made 380-byte lines: 125 MiB of log a minute under a rate meant to allow 60.
 */
export function consoleLineBytes(owner: ConsoleOwner, text: string): number {
  return lineBytesBesideText(owner) + jsonBytes(text);
}

/** A console line's bytes but its text: its ids and the fixed part (the same for every line of a call). */
function lineBytesBesideText(owner: ConsoleOwner): number {
  return LOG_LINE_FIXED_BYTES + Buffer.byteLength(owner.requestId) + Buffer.byteLength(owner.appId) + Buffer.byteLength(owner.userId);
}

function jsonBytes(text: string): number {
  return Buffer.byteLength(JSON.stringify(text));
}

/** Control characters (newlines, ESC, C1, line separators), but not tab. */
const CONTROLS = /(?!\t)[\p{Cc}\u2028\u2029]/gu;

/**
 * A script's text with its control characters written out (`\u001b`): in the readable log format a
 * raw newline forged log lines and ESC sequences reached the terminal (cleared it, set its title), and
 * in JSON each counted one byte but took six. Written out before the bytes are counted, so the bound is
 * what the log gets.
 */
function visibleControls(text: string): string {
  return text.replace(CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

const ELLIPSIS = '…';
const ELLIPSIS_BYTES = 3;

/** The text within maxBytes of UTF-8, cut at a character with an ellipsis; null when not even that fits. */
function cutUtf8(text: string, maxBytes: number): string | null {
  // Three bytes a UTF-16 unit at most: a short text needs no measuring beyond this.
  if (text.length * 3 <= maxBytes || Buffer.byteLength(text, 'utf8') <= maxBytes) return text;
  if (maxBytes <= ELLIPSIS_BYTES) return null;
  const kept = Buffer.from(text, 'utf8')
    .subarray(0, maxBytes - ELLIPSIS_BYTES)
    .toString('utf8');
  // A character cut in its middle decodes as U+FFFD: it goes.
  return `${kept.endsWith('\uFFFD') ? kept.slice(0, -1) : kept}${ELLIPSIS}`;
}
