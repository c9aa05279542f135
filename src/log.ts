/** Structured JSON logs (pino) on stdout. Script text and row values are never logged at info. */
import pino from 'pino';

import type { LogLevel } from './config';

export type Logger = pino.Logger;

export function createLogger(level: LogLevel, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = { level, base: { service: 'qlik-sse-js' }, timestamp: pino.stdTimeFunctions.isoTime };
  return destination ? pino(options, destination) : pino(options);
}
