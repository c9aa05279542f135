/**
 * Turns the values typed on the command line, or a CSV file's columns, into what Qlik would send:
 * parameters with a data type (and, from a CSV header, a name the script can use) and rows of duals.
 * A value becomes a dual the way Qlik sends one: a number parameter carries only the number (text
 * that is no number, and an empty cell, arrive as a Qlik null, NaN), a text parameter only the text,
 * a dual both. CSV is parsed by csv-parse, so quoting, embedded commas and line breaks behave as
 * in any spreadsheet export.
 */
import { readFileSync, statSync } from 'node:fs';

import { parse } from 'csv-parse/sync';
import { DataType } from '../contract/task';
import { type TryOptions, UsageError, type ValueSource } from './options';
import type { Dual, Param } from './qlik-client';

export interface CallInput {
  readonly params: readonly Param[];
  readonly rows: readonly (readonly Dual[])[];
}

interface Column {
  /** Sent to the plugin as the parameter's name ('' for none). */
  readonly name: string;
  /** For messages. */
  readonly label: string;
  readonly values: readonly string[];
}

const TYPE_OF_LETTER: Readonly<Record<string, DataType>> = { N: DataType.NUMERIC, S: DataType.STRING, D: DataType.DUAL };

export function callInput(options: TryOptions): CallInput {
  const columns = readColumns(options.values);
  const types = parameterTypes(options, columns.length);
  const rowCount = columns[0]?.values.length ?? 0;
  const uneven = columns.find((column) => column.values.length !== rowCount);
  if (uneven)
    throw new UsageError(
      `every parameter needs the same number of values: the first has ${rowCount}, ${uneven.label} has ${uneven.values.length}`,
    );
  const params = columns.map((column, i) => ({ name: column.name, dataType: types[i] ?? DataType.NUMERIC }));
  const rows = Array.from({ length: rowCount }, (_, row) =>
    columns.map((column, i) => toDual(column.values[row] ?? '', types[i] ?? DataType.NUMERIC)),
  );
  return { params, rows };
}

function readColumns(source: ValueSource): Column[] {
  if (source.kind === 'lists') {
    // Unnamed, as with ScriptEval('…', Sum(Sales)): the script reads args[i].
    return source.lists.map((list, i) => ({ name: '', label: `parameter ${i + 1}`, values: parseList(list) }));
  }
  return csvColumns(source.file, source.columns);
}

function parseList(list: string): string[] {
  if (list === '') return [''];
  const records = parseCsv(list, 'an --arg list');
  if (records.length !== 1) throw new UsageError(`an --arg list is one line of comma-separated values; got ${records.length} lines`);
  return records[0] ?? [];
}

/** A CSV read whole into memory for trying a script: larger is not a try (and /dev/zero never ends). */
const MAX_CSV_BYTES = 256 * 1024 * 1024;

function csvColumns(file: string, wanted: readonly string[] | undefined): Column[] {
  let text: string;
  try {
    const info = statSync(file);
    if (!info.isFile()) throw new UsageError(`--csv ${file}: not a regular file`);
    if (info.size > MAX_CSV_BYTES)
      throw new UsageError(`--csv ${file}: ${info.size} bytes, more than the ${MAX_CSV_BYTES} a try reads; take a sample of its rows`);
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError(`--csv ${file}: ${error instanceof Error ? error.message : String(error)}`);
  }
  const [header, ...records] = parseCsv(text, `--csv ${file}`);
  if (header === undefined) throw new UsageError(`--csv ${file}: the file is empty; its first line must name the columns`);
  const names = wanted ?? header;
  return names.map((name) => {
    const index = header.indexOf(name);
    if (index < 0)
      throw new UsageError(
        `--columns: ${file} has no column ${JSON.stringify(name)}; it has ${header.map((h) => JSON.stringify(h)).join(', ')}`,
      );
    return { name, label: `column ${name}`, values: records.map((record) => record[index] ?? '') };
  });
}

function parseCsv(text: string, what: string): string[][] {
  try {
    return parse(text, { bom: true, relax_column_count: true, skip_empty_lines: true });
  } catch (error) {
    throw new UsageError(`${what}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function parameterTypes(options: TryOptions, count: number): DataType[] {
  if (options.typeLetters === undefined)
    return Array.from({ length: count }, () => (options.returnType === DataType.STRING ? DataType.STRING : DataType.NUMERIC));
  if (options.typeLetters.length !== count) {
    throw new UsageError(`--types ${options.typeLetters} names ${options.typeLetters.length} parameter(s), but ${count} were given`);
  }
  return [...options.typeLetters].map((letter) => TYPE_OF_LETTER[letter] ?? DataType.NUMERIC);
}

function toDual(text: string, type: DataType): Dual {
  if (type === DataType.STRING) return { strData: text };
  const number = text.trim() === '' ? Number.NaN : Number(text);
  return type === DataType.NUMERIC ? { numData: number } : { numData: number, strData: text };
}
