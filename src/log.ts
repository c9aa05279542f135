/** Structured JSON logs (pino) on stdout. Script text and row values are never logged at info. */
import pino from 'pino';

import type { LogLevel } from './config';

export type Logger = pino.Logger;

/**
 * Defence in depth: should a script or its rows ever be passed to the logger by mistake, the
 * line carries a marker instead of app authors' code or Qlik data.
 */
const REDACTED_PATHS = ['script', '*.script', 'bundles', '*.bundles', 'rows', '*.rows'];

export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service: 'qlik-sse-js' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  };
  return destination ? pino(options, destination) : pino(options);
}
