/**
 * Structured JSON logs (pino) on stdout. Script text and row values are never logged at info.
 * At a terminal (SSE_LOG_FORMAT=auto, the default) or with SSE_LOG_FORMAT=pretty the same events are
 * printed readably by pino-pretty (src/ops/log-pretty.ts); services and log pipelines get JSON lines.
 */
import pino from 'pino';

import type { LogFormat, LogLevel } from './config';
import { prettyStream } from './log-pretty';

export type Logger = pino.Logger;

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
  if (isPretty(format, destination)) return pino(options, prettyStream(destination));
  return destination ? pino(options, destination) : pino(options);
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
