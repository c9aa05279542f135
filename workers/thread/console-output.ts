/**
 * Turns what a chunk wrote to its console (workers/thread/console.ts, copied out of the isolate) into
 * the lines its RESULT carries. A script may have replaced what the console uses, so the capture is
 * checked like any output (output-check.ts): anything that does not add up is reported as one line
 * saying so, never trusted, never thrown.
 */
import type { ConsoleLine, ConsoleOutput } from '../../src/contract/console';
import type { ConsoleCapture } from './console';

export function consoleOutput(capture: ConsoleCapture | null, maxLines: number): { console?: ConsoleOutput } {
  if (capture === null) return {};
  const { text, lens, levels, dropped } = capture;
  const valid =
    typeof text === 'string' &&
    lens instanceof Uint32Array &&
    levels instanceof Uint8Array &&
    lens.length === levels.length &&
    lens.length <= maxLines &&
    typeof dropped === 'number' &&
    Number.isSafeInteger(dropped) &&
    dropped >= 0;
  if (!valid) return { console: { lines: [{ level: 'warn', text: '[console: the script tampered with its console]' }], dropped: 0 } };
  const lines: ConsoleLine[] = [];
  let at = 0;
  for (let i = 0; i < lens.length; i++) {
    const end = at + (lens[i] as number);
    if (end > text.length) break;
    lines.push({ level: levels[i] === 1 ? 'warn' : 'info', text: text.slice(at, end) });
    at = end;
  }
  return { console: { lines, dropped } };
}
