/**
 * What a script wrote with console.log and friends during one task, as it travels back in the
 * task's RESULT (src/contract/result-frame.ts) to the front, which logs it with the call's ids
 * (src/calls/call-console.ts). The sandbox stops keeping lines at the call's bounds (SSE_CONSOLE_LINES,
 * SSE_CONSOLE_BYTES) and counts the rest; the front checks what it reads against the same bounds,
 * since a sandbox is not trusted.
 */
import { isRecord } from './control-frames';

export type ConsoleLevel = 'info' | 'warn';

export interface ConsoleLine {
  readonly level: ConsoleLevel;
  readonly text: string;
}

export interface ConsoleOutput {
  readonly lines: readonly ConsoleLine[];
  /** Lines the script wrote past the bounds: counted, not kept. */
  readonly dropped: number;
}

/** The most a RESULT may carry whatever the settings: the front refuses more before it parses it. */
export const MAX_CONSOLE_LINES = 100_000;
export const MAX_CONSOLE_BYTES = 16 * 1024 * 1024;

export function hasConsole(output: ConsoleOutput | undefined): output is ConsoleOutput {
  return output !== undefined && (output.lines.length > 0 || output.dropped > 0);
}

/** A console section read from a sandbox: every field checked; throws on anything else. */
export function checkConsole(value: unknown): ConsoleOutput {
  if (!isRecord(value) || !Array.isArray(value['lines']) || !isCount(value['dropped'])) throw new Error('RESULT with a malformed console');
  const lines = value['lines'] as unknown[];
  if (lines.length > MAX_CONSOLE_LINES) throw new Error('RESULT with more console lines than any bound allows');
  return {
    dropped: value['dropped'],
    lines: lines.map((line) => {
      if (!isRecord(line) || (line['level'] !== 'info' && line['level'] !== 'warn') || typeof line['text'] !== 'string')
        throw new Error('RESULT with a malformed console line');
      return { level: line['level'], text: line['text'] };
    }),
  };
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}
