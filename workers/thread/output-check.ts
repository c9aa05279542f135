/**
 * The runtime's output is built inside the sandbox, in the same context as the script, so a script
 * that rewrites built-ins (Array.prototype setters, TypedArray.prototype.fill, Map.prototype.get)
 * can bend its shape. Before anything leaves the worker, check it is what the plugin expects, so a
 * hostile result can only fail its own call, never confuse (or amplify work in) the main process.
 */
import { PluginError } from '../../src/contract/errors';
import { tableColumnsError } from '../../src/contract/limit-errors';
import { DataType, MAX_TABLE_COLUMNS, MAX_TABLE_KEY_BYTES } from '../../src/contract/task';
import type { RuntimeOutput, RuntimeTable } from './isolate-runtime';

type Success = Extract<RuntimeOutput, { ok: true }>;

export function checkOutput(output: Success, rows: number, returnType: DataType): void {
  if (output.table !== null) checkTableBounds(output.table);
  const fine =
    numbersFine(output, rows, returnType) && textFine(output, rows, returnType) && (output.table === null || tableFine(output.table, rows));
  if (!fine)
    throw new PluginError('INVALID_ARGUMENT', 'the result of the script could not be read back (did it change built-in prototypes?)');
}

function numbersFine({ nums }: Success, rows: number, returnType: DataType): boolean {
  if (returnType === DataType.STRING) return nums === null;
  return nums instanceof Float64Array && nums.length === rows;
}

function textFine({ text, lens, utf8, byteLens }: Success, rows: number, returnType: DataType): boolean {
  if (returnType === DataType.NUMERIC) return text === null && lens === null && utf8 === null && byteLens === null;
  if (returnType === DataType.STRING) {
    if (text !== null || !(utf8 instanceof Uint8Array) || !(byteLens instanceof Uint32Array) || byteLens.length !== rows) return false;
    return sum(byteLens) === utf8.length;
  }
  if (typeof text !== 'string' || !(lens instanceof Uint32Array) || lens.length !== rows) return false;
  return sum(lens) === text.length;
}

function sum(values: Uint32Array): number {
  let total = 0;
  for (const value of values) total += value;
  return total;
}

function tableFine(table: RuntimeTable, rows: number): boolean {
  const { shape, keys, columns } = table;
  if ((shape !== 'array' && shape !== 'object') || !Array.isArray(keys) || !Array.isArray(columns)) return false;
  if (keys.length !== columns.length || !keys.every((key) => typeof key === 'string')) return false;
  return columns.every(
    (column) =>
      typeof column === 'object' &&
      column !== null &&
      column.nums instanceof Float64Array &&
      column.nums.length === rows &&
      column.kinds instanceof Uint8Array &&
      column.kinds.length === rows &&
      Array.isArray(column.strs) &&
      column.strs.length === rows &&
      column.strs.every((s) => typeof s === 'string'),
  );
}

/**
 * A table's names travel to the front with every chunk: past MAX_TABLE_COLUMNS or MAX_TABLE_KEY_BYTES
 * (more than Qlik reads) the call fails here, whatever the runtime (in the script's reach) reported.
 */
function checkTableBounds(table: RuntimeTable): void {
  const { keys } = table;
  if (table.tooWide === true) throw tableColumnsError(MAX_TABLE_COLUMNS, MAX_TABLE_KEY_BYTES);
  if (!Array.isArray(keys)) return;
  if (keys.length > MAX_TABLE_COLUMNS) throw tableColumnsError(MAX_TABLE_COLUMNS, MAX_TABLE_KEY_BYTES);
  let keyBytes = 0;
  for (const key of keys) {
    if (typeof key !== 'string') return;
    keyBytes += Buffer.byteLength(key, 'utf8');
    if (keyBytes > MAX_TABLE_KEY_BYTES) throw tableColumnsError(MAX_TABLE_COLUMNS, MAX_TABLE_KEY_BYTES);
  }
}
