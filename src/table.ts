/**
 * Multi-column results for LOAD … EXTENSION: the table-shaped chunks of a call are joined into one
 * table whose fields are the union of the chunks' keys, typed by what every row holds.
 */
import { Metadata } from '@grpc/grpc-js';

import { encodeMessage, messages } from './proto';
import { encodeCells } from './shared/replies';
import { CELL_NUMBER, CELL_TEXT, DataType, type TableChunk } from './shared/task';

export const TABLE_HEADER = 'qlik-tabledescription-bin';

export interface EncodedTable {
  readonly metadata: Metadata;
  readonly replies: Uint8Array[];
  readonly rows: number;
}

/** Joins chunks (in row order, all of one shape) into a table; returns null for mixed shapes. */
export function assembleTable(chunks: readonly TableChunk[], maxReplyBytes: number): EncodedTable | null {
  const shape = chunks[0]?.shape;
  if (shape === undefined || chunks.some((c) => c.shape !== shape)) return null;
  const keys = unionKeys(chunks, shape);
  const index = new Map(keys.map((key, i) => [key, i]));
  // For each chunk, the chunk's column holding each table column (or -1).
  const columnMaps = chunks.map((chunk) => {
    const map = new Int32Array(keys.length).fill(-1);
    chunk.keys.forEach((key, c) => map[index.get(key) as number] = c);
    return map;
  });
  const seen = keys.map(() => ({ number: false, text: false }));
  const rowRefs: [number, number][] = [];
  chunks.forEach((chunk, k) => {
    const rows = chunk.columns[0]?.kinds.length ?? 0;
    for (let r = 0; r < rows; r++) rowRefs.push([k, r]);
    chunk.columns.forEach((column, c) => {
      const at = index.get(chunk.keys[c] as string) as number;
      const types = seen[at] as { number: boolean; text: boolean };
      for (const kind of column.kinds) {
        if (kind === CELL_NUMBER) types.number = true;
        else if (kind === CELL_TEXT) types.text = true;
      }
    });
  });
  const fields = keys.map((name, i) => {
    const { number, text } = seen[i] as { number: boolean; text: boolean };
    const dataType = number && text ? DataType.DUAL : text ? DataType.STRING : DataType.NUMERIC;
    return { name, dataType };
  });
  const replies = encodeCells(
    rowRefs.length,
    keys.length,
    (row, col, cell) => {
      const [k, r] = rowRefs[row] as [number, number];
      const source = (columnMaps[k] as Int32Array)[col] as number;
      const column = source < 0 ? undefined : (chunks[k] as TableChunk).columns[source];
      cell.num = column ? (column.nums[r] as number) : Number.NaN;
      const str = column?.strs[r];
      cell.str = str === '' ? undefined : str;
    },
    maxReplyBytes,
  );
  const metadata = new Metadata();
  metadata.set(TABLE_HEADER, encodeMessage(messages.TableDescription, { fields, numberOfRows: rowRefs.length }));
  return { metadata, replies, rows: rowRefs.length };
}

function unionKeys(chunks: readonly TableChunk[], shape: TableChunk['shape']): string[] {
  if (shape === 'array') {
    const width = Math.max(0, ...chunks.map((c) => c.keys.length));
    return Array.from({ length: width }, (_, i) => `Field${i + 1}`);
  }
  const keys = new Set<string>();
  for (const chunk of chunks) for (const key of chunk.keys) keys.add(key);
  return [...keys];
}
