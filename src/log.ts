/**
 * Structured JSON logs (pino) on stdout. Script text and row values are never logged at info.
 * At a terminal (SSE_LOG_FORMAT=auto, the default) or with SSE_LOG_FORMAT=pretty the same events are
 * printed readably by pino-pretty (src/log-pretty.ts); services and log pipelines get JSON lines.
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
 * `auto` is pretty only when the lines go to stdout and stdout is a terminal: a given destination
 * (a test's capture, a file) gets JSON unless `pretty` is asked for.
 */
export function createLogger(level: LogLevel, destination?: pino.DestinationStream, format: LogFormat = 'json'): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service: 'qlik-sse-js' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  };
  if (isPretty(format, destination)) return pino(options, prettyStream(destination));
  return destination ? pino(options, destination) : pino(options);
}

function isPretty(format: LogFormat, destination: pino.DestinationStream | undefined): boolean {
  if (format === 'auto') return destination === undefined && process.stdout.isTTY;
  return format === 'pretty';
}
