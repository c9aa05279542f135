/**
 * Prints the reply of one call the way an app author reads it: one line per result row, with the
 * column names Qlik would get. A table result (LOAD … EXTENSION) names its fields in the
 * `qlik-tabledescription-bin` header, so its columns are read from there, exactly as Qlik reads them;
 * any other result is one column named after the function. A Qlik null prints as `-` in the table
 * (as Qlik's own tables show it) and as an empty field in CSV.
 */

import { DataType } from '../contract/task';
import { decodeMessage, messages } from '../grpc/proto';
import type { CallResult, Dual } from './qlik-client';

// The wire's header names (sse-protocol.md), read here as Qlik reads them, not through the plugin's modules.
const TABLE_HEADER = 'qlik-tabledescription-bin';
const CACHE_HEADER = 'qlik-cache';
const NULL_IN_TABLE = '-';

export type OutputFormat = 'table' | 'csv';

/** Cells as text; null is a Qlik null. */
export interface ResultTable {
  readonly columns: readonly string[];
  readonly rows: readonly (readonly (string | null)[])[];
}

interface Field {
  readonly name: string;
  readonly dataType: DataType;
}

export function resultTable(result: CallResult, functionName: string, returnType: DataType): ResultTable {
  const fields = tableFields(result) ?? [{ name: functionName, dataType: returnType }];
  const rows = result.rows.map((duals) => fields.map((field, i) => cellText(duals[i], field.dataType)));
  return { columns: fields.map((field) => field.name), rows };
}

/** Qlik caches results unless told not to; a script that read the clock or Math.random tells it. */
export function isNoStore(result: CallResult): boolean {
  const values = [...(result.initialMetadata?.get(CACHE_HEADER) ?? []), ...(result.trailers?.get(CACHE_HEADER) ?? [])];
  return values.some((value) => String(value) === 'no-store');
}

function tableFields(result: CallResult): Field[] | undefined {
  const bytes = result.initialMetadata?.get(TABLE_HEADER)[0];
  if (!Buffer.isBuffer(bytes)) return undefined;
  const description = decodeMessage(messages.TableDescription, bytes) as { fields?: { name?: string; dataType?: number }[] };
  return (description.fields ?? []).map((field) => ({
    name: field.name ?? '',
    dataType: (field.dataType ?? DataType.NUMERIC) as DataType,
  }));
}

function cellText(dual: Dual | undefined, dataType: DataType): string | null {
  const number = dual?.numData;
  const text = dual?.strData;
  if (dataType === DataType.STRING) return text ?? '';
  if (dataType === DataType.DUAL && text !== undefined && text !== '') return text;
  return number === undefined || Number.isNaN(number) ? null : String(number);
}

export function render(table: ResultTable, format: OutputFormat): string {
  return format === 'csv' ? renderCsv(table) : renderTable(table);
}

function renderCsv(table: ResultTable): string {
  const lines = [table.columns, ...table.rows].map((row) => row.map((cell) => csvField(safeText(cell ?? ''))).join(','));
  return `${lines.join('\r\n')}\r\n`;
}

/** Columns padded to their widest cell, a rule under the header. */
function renderTable(table: ResultTable): string {
  const rows = table.rows.map((row) => row.map((cell) => oneLine(cell ?? NULL_IN_TABLE)));
  const header = table.columns.map(oneLine);
  const widths = header.map((name, i) => Math.max(name.length, ...rows.map((row) => row[i]?.length ?? 0)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  const rule = widths.map((width) => '-'.repeat(width)).join('  ');
  return `${[line(header), rule, ...rows.map(line)].join('\n')}\n`;
}

/**
 * A line break inside a cell would break the table's rows apart, and a control character (an escape
 * sequence a script returned) would act on the terminal: both are shown escaped.
 */
function oneLine(text: string): string {
  return safeText(text.replace(/\r?\n/g, '\\n'));
}

/** Control characters but line breaks and tabs, shown as \u escapes instead of reaching the terminal. */
export function safeText(text: string): string {
  return text.replace(
    // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
    /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/** RFC 4180 quoting: only fields holding a quote, comma or line break are quoted. */
export function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

/** pino's number for `error`: the plugin's own lines at or above it still reach the author. */
const PINO_ERROR = 50;

/**
 * Where `try` sends the plugin's log: the script's console lines printed as `console.log: …` (or
 * `console.warn: …` for warn and error) on stderr, beside the results on stdout; of the plugin's own
 * lines only errors, as before. It reads the JSON lines the plugin writes (src/calls/call-console.ts).
 */
export function tryLogDestination(stderr: { write(text: string): unknown }): { write(line: string): void } {
  return {
    write(line: string): void {
      let fields: { source?: unknown; level?: unknown; msg?: unknown };
      try {
        fields = JSON.parse(line) as typeof fields;
      } catch {
        return void stderr.write(line);
      }
      if (fields.source === 'console')
        stderr.write(
          `console.${typeof fields.level === 'number' && fields.level >= 40 ? 'warn' : 'log'}: ${safeText(String(fields.msg))}\n`,
        );
      else if (typeof fields.level === 'number' && fields.level >= PINO_ERROR) stderr.write(line);
    },
  };
}
