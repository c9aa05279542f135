/**
 * Turns the values typed on the command line, or a CSV file's columns, into what Qlik would send:
 * parameters with a data type (and, from a CSV header, a name the script can use) and rows of duals.
 * A value becomes a dual the way Qlik sends one: a number parameter carries only the number (text
 * that is no number, and an empty cell, arrive as a Qlik null, NaN), a text parameter only the text,
 * a dual both. A constant (`--const 0.9`, as in JS.Percentile(Sales, 0.9)) is a parameter with the
 * same value on every row, as Qlik sends it. CSV is parsed by csv-parse, so quoting, embedded
 * delimiters and line breaks behave as in any spreadsheet export; its delimiter is sniffed from the
 * header line unless given (a European export uses `;`).
 *
 * Reading the values (readValues) comes before the plugin starts, so a mistake costs nothing; typing
 * them (callInput) comes after, because a plugin function's types are read from the plugin.
 */
import { readFileSync, statSync } from 'node:fs';

import { parse } from 'csv-parse/sync';
import { DataType } from '../contract/task';
import { type ParameterList, type ScriptCallee, type TryOptions, UsageError, type ValueSource } from './options';
import type { Dual, Param } from './qlik-client';

export interface CallInput {
  readonly params: readonly Param[];
  readonly rows: readonly (readonly Dual[])[];
}

export interface Column {
  /** Sent to the plugin as the parameter's name ('' for none). */
  readonly name: string;
  /** For messages. */
  readonly label: string;
  readonly values: readonly string[];
}

/** The parameters' text values, and the --group-by column's when there is one. */
export interface ValueColumns {
  readonly columns: readonly Column[];
  readonly groupColumn: Column | undefined;
}

const TYPE_OF_LETTER: Readonly<Record<string, DataType>> = { N: DataType.NUMERIC, S: DataType.STRING, D: DataType.DUAL };

export function readValues(options: TryOptions): ValueColumns {
  const source = options.values;
  const read: CsvRead = source.kind === 'lists' ? { columns: listColumns(source.lists), byName: noColumns } : csvColumns(source);
  const rowCount = read.columns.find((column) => column.values !== CONSTANT)?.values.length ?? 1;
  const columns = read.columns.map((column) =>
    column.values === CONSTANT
      ? { ...column, values: Array.from({ length: rowCount }, () => column.label.slice(CONST_LABEL.length)) }
      : column,
  );
  const uneven = columns.find((column) => column.values.length !== rowCount);
  if (uneven)
    throw new UsageError(
      `every parameter needs the same number of values: the first has ${rowCount}, ${uneven.label} has ${uneven.values.length}`,
    );
  const groupColumn = options.groupBy === undefined || source.kind !== 'csv' ? undefined : read.byName(options.groupBy, '--group-by');
  return { columns, groupColumn };
}

/** Parameters with their types and rows of duals, as Qlik sends them. */
export function callInput(columns: readonly Column[], types: readonly DataType[]): CallInput {
  const rowCount = columns[0]?.values.length ?? 0;
  const params = columns.map((column, i) => ({ name: column.name, dataType: types[i] ?? DataType.NUMERIC }));
  const rows = Array.from({ length: rowCount }, (_, row) =>
    columns.map((column, i) => toDual(column.values[row] ?? '', types[i] ?? DataType.NUMERIC)),
  );
  return { params, rows };
}

/** The types a script function gives its parameters: the …Ex letters, or the one type its name implies. */
export function scriptParameterTypes(callee: ScriptCallee, count: number): DataType[] {
  if (callee.typeLetters === undefined)
    return Array.from({ length: count }, () => (callee.returnType === DataType.STRING ? DataType.STRING : DataType.NUMERIC));
  if (callee.typeLetters.length !== count) {
    throw new UsageError(`--types ${callee.typeLetters} names ${callee.typeLetters.length} parameter(s), but ${count} were given`);
  }
  return [...callee.typeLetters].map((letter) => TYPE_OF_LETTER[letter] ?? DataType.NUMERIC);
}

/** A constant's values are made once the row count is known; its label carries the value. */
const CONSTANT: readonly string[] = Object.freeze([]);
const CONST_LABEL = 'the constant ';

function listColumns(lists: readonly ParameterList[]): Column[] {
  // Unnamed, as with ScriptEval('…', Sum(Sales)): the script reads args[i].
  return lists.map((list, i) =>
    list.kind === 'const'
      ? { name: '', label: `${CONST_LABEL}${list.value}`, values: CONSTANT }
      : { name: '', label: `parameter ${i + 1}`, values: parseList(list.text) },
  );
}

function parseList(list: string): string[] {
  if (list === '') return [''];
  const records = parseCsv(list, 'an --arg list');
  if (records.length !== 1) throw new UsageError(`an --arg list is one line of comma-separated values; got ${records.length} lines`);
  return records[0] ?? [];
}

/** A CSV read whole into memory for trying a script: larger is not a try (and /dev/zero never ends). */
const MAX_CSV_BYTES = 256 * 1024 * 1024;

function noColumns(_name: string, flag: string): never {
  throw new UsageError(`${flag} names a column of the --csv file`);
}

interface CsvRead {
  readonly columns: Column[];
  byName(name: string, flag: string): Column;
}

function csvColumns(source: Extract<ValueSource, { kind: 'csv' }>): CsvRead {
  const { file } = source;
  const text = readCsvText(file);
  const delimiter = source.delimiter ?? sniffDelimiter(text);
  const [header, ...records] = parseCsv(text, `--csv ${file}`, delimiter);
  if (header === undefined) throw new UsageError(`--csv ${file}: the file is empty; its first line must name the columns`);
  const byName = (name: string, flag: string): Column => {
    const index = header.indexOf(name);
    if (index < 0)
      throw new UsageError(
        `${flag}: ${file} has no column ${JSON.stringify(name)}; it has ${header.map((h) => JSON.stringify(h)).join(', ')}` +
          (header.length === 1 && source.delimiter === undefined ? ' (if its delimiter is not , ; tab or |, give --delimiter)' : ''),
      );
    return { name, label: `column ${name}`, values: records.map((record) => record[index] ?? '') };
  };
  const constants = source.constants.map((value) => ({ name: '', label: `${CONST_LABEL}${value}`, values: CONSTANT }));
  return { columns: [...(source.columns ?? header).map((name) => byName(name, '--columns')), ...constants], byName };
}

function readCsvText(file: string): string {
  try {
    const info = statSync(file);
    if (!info.isFile()) throw new UsageError(`--csv ${file}: not a regular file`);
    if (info.size > MAX_CSV_BYTES)
      throw new UsageError(`--csv ${file}: ${info.size} bytes, more than the ${MAX_CSV_BYTES} a try reads; take a sample of its rows`);
    return readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError(`--csv ${file}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

const DELIMITERS = [',', ';', '\t', '|'];

/**
 * The delimiter that splits the header line into the most fields, outside quotes (a `,` wins a tie):
 * spreadsheets in locales with a decimal comma export with `;`.
 */
export function sniffDelimiter(text: string): string {
  const firstLine = (text.replace(/^\uFEFF/, '').split(/\r?\n/, 1)[0] ?? '').replace(/"[^"]*"/g, '');
  let best = ',';
  let bestCount = 0;
  for (const delimiter of DELIMITERS) {
    const count = firstLine.split(delimiter).length - 1;
    if (count > bestCount) [best, bestCount] = [delimiter, count];
  }
  return best;
}

function parseCsv(text: string, what: string, delimiter = ','): string[][] {
  try {
    return parse(text, { bom: true, relax_column_count: true, skip_empty_lines: true, delimiter });
  } catch (error) {
    throw new UsageError(`${what}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function toDual(text: string, type: DataType): Dual {
  if (type === DataType.STRING) return { strData: text };
  const number = text.trim() === '' ? Number.NaN : Number(text);
  return type === DataType.NUMERIC ? { numData: number } : { numData: number, strData: text };
}
