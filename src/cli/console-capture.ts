/**
 * The plugin's log inside `npm run try`: its console lines (what a script wrote with console.log and
 * friends) are kept to be printed beside the result, its errors go to stderr, and everything else it
 * says (start-up, one line per call) is dropped: the author asked for a result, not a log.
 *
 * The plugin logs a script's console lines in the front with the call's ids (SPEC "Console"): a log
 * record is taken for one when isConsoleRecord says so. That is the one place that knows how the
 * front spells such a record; keep it in step with the front's console logging.
 */
import { Writable } from 'node:stream';

import { createLogger, type Logger } from '../ops/log';
import { safeText } from './output';

export interface ConsoleLine {
  /** console.log and info/debug at info, warn and error at warn, as the plugin logs them. */
  readonly level: 'info' | 'warn';
  readonly text: string;
}

/** pino's numbers for warn and error. */
const WARN_LEVEL = 40;
const ERROR_LEVEL = 50;

type LogRecord = Record<string, unknown>;

/**
 * A console line as the front logs it: a record whose message names the console (`console`,
 * `console.log`, …) or that carries a `console` field; its text is the `text` field, else the message.
 */
export function isConsoleRecord(record: LogRecord): boolean {
  return (typeof record['msg'] === 'string' && /^console(\.|$)/.test(record['msg'])) || record['console'] !== undefined;
}

function consoleText(record: LogRecord): string {
  for (const key of ['text', 'line', 'console', 'msg']) if (typeof record[key] === 'string') return record[key];
  return JSON.stringify(record);
}

export class ConsoleCapture {
  readonly lines: ConsoleLine[] = [];
  readonly logger: Logger;

  constructor(private readonly stderr: NodeJS.WritableStream = process.stderr) {
    const destination = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        for (const line of chunk.toString('utf8').split('\n')) if (line !== '') this.take(line);
        done();
      },
    });
    this.logger = createLogger('info', destination, 'json');
  }

  private take(line: string): void {
    let record: LogRecord;
    try {
      record = JSON.parse(line) as LogRecord;
    } catch {
      return;
    }
    const level = typeof record['level'] === 'number' ? record['level'] : 0;
    if (isConsoleRecord(record)) this.lines.push({ level: level >= WARN_LEVEL ? 'warn' : 'info', text: consoleText(record) });
    else if (level >= ERROR_LEVEL) this.stderr.write(`plugin: ${safeText(String(record['msg'] ?? ''))}${errorText(record)}\n`);
  }
}

function errorText(record: LogRecord): string {
  const error = record['err'] as { message?: unknown } | undefined;
  return typeof error?.message === 'string' ? `: ${safeText(error.message)}` : '';
}

/** One line each, escaped as results are, for stderr. */
export function renderConsole(lines: readonly ConsoleLine[]): string {
  return lines.map((line) => `console${line.level === 'warn' ? ' (warn)' : ''}: ${safeText(line.text)}\n`).join('');
}
