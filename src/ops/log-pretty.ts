/**
 * Log lines a person reads in a terminal (SSE_LOG_FORMAT=pretty, or auto with a terminal on stdout),
 * printed by pino's own pretty printer. JSON stays the default for services, where a log pipeline
 * parses the lines; at a console the same events read as one line each: time, level, the message,
 * then the line's simple fields as `key=value` (not those the message already quotes). Nested objects are left out: the start-up lines
 * already spell out their limits, certificate and QMC fields in the message. Errors keep
 * pino-pretty's own multi-line rendering (hideObject leaves them in).
 *
 * The per-call line is the one a newcomer watches while trying Qlik, so it gets a sentence of its own.
 */

import type pino from 'pino';
import pretty from 'pino-pretty';

type LogRecord = Record<string, unknown>;

/** Fields every line carries, or that pino-pretty prints itself. */
const FRAME_KEYS = new Set(['level', 'time', 'msg', 'service', 'err', 'pid', 'hostname']);

export function prettyStream(destination: pino.DestinationStream | undefined): pretty.PrettyStream {
  return pretty({
    ...(destination ? { destination } : {}),
    sync: true,
    translateTime: 'SYS:HH:MM:ss.l',
    hideObject: true,
    messageFormat: (log) => formatMessage(log),
  });
}

export function formatMessage(log: LogRecord): string {
  const msg = typeof log['msg'] === 'string' ? log['msg'] : '';
  if (msg === 'EvaluateScript') return formatCall(log);
  // A text field the message already quotes (the Settings.ini line, the host) would only repeat it.
  const quoted = new Set(Object.keys(log).filter((key) => typeof log[key] === 'string' && msg.includes(log[key])));
  return [msg, ...simpleFields(log, new Set([...FRAME_KEYS, ...quoted]))].join(' ');
}

/** `EvaluateScript ScriptEvalStr OK: 2 rows in, 2 out, 3.1 ms (script 0.4 ms), table result requestId=… appId=…` */
function formatCall(log: LogRecord): string {
  const shown = ['function', 'status', 'rowsIn', 'rowsOut', 'durationMs', 'scriptMs', 'table', 'noStore', 'details'];
  const rowsIn = text(log['rowsIn']);
  const head = `EvaluateScript ${text(log['function'])} ${text(log['status'])}: ${rowsIn} ${rowsIn === '1' ? 'row' : 'rows'} in, ${text(log['rowsOut'])} out, ${text(log['durationMs'])} ms (script ${text(log['scriptMs'])} ms)`;
  const flags = [log['table'] === true ? 'table result' : '', log['noStore'] === true ? 'qlik-cache: no-store' : ''].filter(Boolean);
  const details = typeof log['details'] === 'string' ? [`— ${log['details']}`] : [];
  return [head + flags.map((flag) => `, ${flag}`).join(''), ...details, ...simpleFields(log, new Set([...FRAME_KEYS, ...shown]))].join(' ');
}

function simpleFields(log: LogRecord, skip: ReadonlySet<string>): string[] {
  const fields: string[] = [];
  for (const [key, value] of Object.entries(log)) {
    if (skip.has(key) || value === undefined || value === null || typeof value === 'object') continue;
    fields.push(`${key}=${quoteIfNeeded(text(value))}`);
  }
  return fields;
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : (JSON.stringify(value) ?? '');
}

function quoteIfNeeded(value: string): string {
  return value === '' || /[\s"=]/.test(value) ? JSON.stringify(value) : value;
}
