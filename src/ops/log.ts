/**
 * Structured JSON logs (pino) on stdout. Script text and row values are never logged at info.
 * At a terminal (SSE_LOG_FORMAT=auto, the default) or with SSE_LOG_FORMAT=pretty the same events are
 * printed readably by pino-pretty (src/ops/log-pretty.ts); services and log pipelines get JSON lines.
 *
 * Whoever reads stdout may stop (a pipe or FIFO nobody drains, a full disk): the lines wait in a
 * bounded buffer written asynchronously, so the front neither blocks on stdout nor grows (pino's own
 * default kept every line in the heap: 73 MB -> 4.2 GB and out of memory behind a FIFO nobody read,
 * and a write error such as ENOSPC had no listener and ended the front). Lines past the buffer are
 * dropped and counted; the count is logged once stdout takes lines again.
 */
import { constants, fstatSync, openSync } from 'node:fs';

import pino from 'pino';

import type { LogFormat, LogLevel } from './config';
import { prettyStream } from './log-pretty';

export type Logger = pino.Logger;

/** Log bytes that may wait for stdout; past it, lines are dropped (a few seconds of a very busy log). */
export const MAX_LOG_BUFFER_BYTES = 16 * 1024 * 1024;
const DROPPED_REPORT_MS = 2_000;

/** Lines stdout could not take (dropped past the buffer, or lost to a write error), for the metric. */
export const logLoss = { droppedLines: 0, writeErrors: 0 };

/**
 * Defence in depth: should a script or its rows ever be passed to the logger by mistake, the
 * line carries a marker instead of app authors' code or Qlik data.
 */
const REDACTED_PATHS = ['script', '*.script', 'bundles', '*.bundles', 'rows', '*.rows'];

/**
 * The longest text a log field keeps, and how many items of a list: app and user ids, the peer, a
 * request id, an error message — anything a client controls — are cut here, in the one place every
 * line goes through (pino's formatters.log), so a 16 KB app id costs a line ~300 bytes, not 16 KB.
 * Error stacks (the plugin's own) keep more.
 */
export const MAX_LOG_FIELD_CHARS = 256;
const MAX_LOG_STACK_CHARS = 4_096;
const MAX_LOG_LIST_ITEMS = 64;
/** Nested objects are followed this deep; deeper ones are logged as a marker. */
const MAX_LOG_DEPTH = 4;

/**
 * `auto` is pretty only when the lines go to stdout and stdout is a terminal: a given destination
 * (a test's capture, a file) gets JSON unless `pretty` is asked for.
 */
export function createLogger(level: LogLevel, destination?: pino.DestinationStream, format: LogFormat = 'json'): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service: 'qlik-sse-js' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    formatters: { log: (fields) => boundFields(fields, 0) as Record<string, unknown> },
    serializers: { err: (error: Error) => boundFields(pino.stdSerializers.err(error), 0) },
  };
  const out = destination ?? boundedStdout();
  const logger = isPretty(format, destination) ? pino(options, prettyStream(out)) : pino(options, out);
  if (destination === undefined && !lossReported) {
    lossReported = true;
    reportLoss(logger);
  }
  return logger;
}

/**
 * One stream for stdout in the process, whatever the number of loggers: two asynchronous writers on
 * one descriptor could interleave parts of their lines. Its exit flush can be given up
 * (abandonPendingLogLines).
 */
let stdout: ReturnType<typeof pino.destination> | undefined;
/** The loss is reported by the first logger on stdout. */
let lossReported = false;

/** stdout through a bounded asynchronous buffer (see the top); write errors are counted, never thrown. */
function boundedStdout(): pino.DestinationStream {
  if (stdout) return stdout;
  stdout = pino.destination({ dest: nonBlockingStdout(), sync: false, minLength: 0, maxLength: MAX_LOG_BUFFER_BYTES });
  stdout.on('drop', () => logLoss.droppedLines++);
  stdout.on('error', () => logLoss.writeErrors++);
  return stdout;
}

/**
 * stdout opened again without blocking, where it is a pipe or FIFO: an asynchronous write to a pipe
 * nobody drains otherwise blocks one of libuv's threads for good, and Node's exit waits for that
 * thread (a stop that had ended everything else hung). Without blocking, the write answers EAGAIN
 * and is retried on a timer. Anything else (a file, a terminal, a socket, no /proc) keeps fd 1.
 */
function nonBlockingStdout(): number {
  try {
    if (!fstatSync(1).isFIFO()) return 1;
    return openSync('/proc/self/fd/1', constants.O_WRONLY | constants.O_NONBLOCK);
  } catch {
    return 1;
  }
}

/**
 * pino writes what is still buffered synchronously when the process exits; with a stdout nobody reads
 * that write never returns, and a stop that had finished everything else hung until SIGKILL (a black-box
 * pass: still alive 91 s after SIGTERM). Called when the process must exit although something still
 * holds it: the lines still waiting are given up (at most the buffer), the exit is not.
 */
export function abandonPendingLogLines(): void {
  if (stdout) stdout.flushSync = () => undefined;
}

/**
 * Resolves once stdout has taken the lines written so far, or after withinMs, whichever is first: an
 * exit that must not wait for anything else (a second signal) still gets its last lines out when stdout
 * takes them. Read from the destination's own counters (sonic-boom's pending length and write flag).
 */
export function logLinesWritten(withinMs: number): Promise<void> {
  const deadline = performance.now() + withinMs;
  return new Promise((resolve) => {
    const check = (): void => {
      const pending = stdout as unknown as { _len?: unknown; _writing?: unknown } | undefined;
      const written = pending === undefined || typeof pending._len !== 'number' || (pending._len === 0 && pending._writing !== true);
      if (written || performance.now() >= deadline) resolve();
      else setTimeout(check, 5);
    };
    check();
  });
}

/** Says how many lines were lost, once the loss has stopped growing (stdout takes lines again). */
function reportLoss(logger: Logger): void {
  let reported = { ...logLoss };
  let last = { ...logLoss };
  setInterval(() => {
    const now = { ...logLoss };
    const stable = now.droppedLines === last.droppedLines && now.writeErrors === last.writeErrors;
    last = now;
    if (!stable || (now.droppedLines === reported.droppedLines && now.writeErrors === reported.writeErrors)) return;
    logger.warn(
      { droppedLines: now.droppedLines - reported.droppedLines, writeErrors: now.writeErrors - reported.writeErrors },
      `stdout did not take log lines (a reader that stopped, a full disk): lines dropped past ${MAX_LOG_BUFFER_BYTES / 1048576} MiB waiting, failed writes retried`,
    );
    reported = now;
  }, DROPPED_REPORT_MS).unref();
}

function isPretty(format: LogFormat, destination: pino.DestinationStream | undefined): boolean {
  if (format === 'auto') return destination === undefined && process.stdout.isTTY;
  return format === 'pretty';
}

/** A copy of a line's fields with every text cut to MAX_LOG_FIELD_CHARS and every list to MAX_LOG_LIST_ITEMS. */
export function boundFields(value: unknown, depth: number, key = ''): unknown {
  if (typeof value === 'string') return cut(value, key === 'stack' ? MAX_LOG_STACK_CHARS : MAX_LOG_FIELD_CHARS);
  if (typeof value !== 'object' || value === null || !isPlain(value)) return value;
  if (depth >= MAX_LOG_DEPTH) return '[nested too deep]';
  if (Array.isArray(value)) {
    const items = value.slice(0, MAX_LOG_LIST_ITEMS).map((item) => boundFields(item, depth + 1));
    if (value.length > MAX_LOG_LIST_ITEMS) items.push(`[${value.length - MAX_LOG_LIST_ITEMS} more]`);
    return items;
  }
  const bounded: Record<string, unknown> = {};
  for (const [name, field] of Object.entries(value)) bounded[name] = boundFields(field, depth + 1, name);
  return bounded;
}

function cut(text: string, maxChars: number): string {
  return text.length <= maxChars ? text : `${text.slice(0, maxChars)}…[${text.length - maxChars} more chars]`;
}

/** Plain objects and arrays are bounded; anything else (an Error before its serializer, a Date) goes to pino as it is. */
function isPlain(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null || Array.isArray(value);
}
