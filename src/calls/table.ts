/**
 * Multi-column results for LOAD … EXTENSION: the table-shaped chunks of a call are joined into one
 * table whose fields are the union of the chunks' keys, typed by what every row holds. Cells arrive
 * encoded by the sandbox (workers/thread/table-cells.ts), so joining is copying bytes; a cell a row lacks
 * is Qlik's null. The joined size is computed from the chunks before anything is built, so a table
 * whose union of keys would multiply its size (a new key every few rows) fails at once instead of
 * growing rows x keys cells on the event loop.
 *
 * The field types need every row, so a call's table-shaped results are held (TableHold) until its
 * last row is evaluated and joined then; the first result that is not a table turns the call to
 * streaming, and what was held is written as it is, ahead of it.
 */
import type { Metadata } from '@grpc/grpc-js';

import { tableColumnsError, tableTooLargeError } from '../contract/limit-errors';
import { NULL_CELL, RowMessageWriter } from '../contract/replies';
import {
  CELL_NUMBER,
  CELL_TEXT,
  DataType,
  MAX_TABLE_COLUMNS,
  MAX_TABLE_KEY_BYTES,
  type TableChunk,
  type TaskSuccess,
} from '../contract/task';
import { tableHeader } from './table-header';

export { TABLE_HEADER } from './table-header';

export interface EncodedTable {
  readonly metadata: Metadata;
  readonly replies: Uint8Array[];
  readonly rows: number;
}

export interface TableLimits {
  readonly maxReplyBytes: number;
  /** The most bytes the joined table may take (SSE_MEMORY_LIMIT_MB). */
  readonly maxBytes: number;
  readonly memoryLimitMb: number;
  /** Called with the joined size before the table is built; throws to refuse it (SSE_MAX_HELD_MB). */
  readonly reserve?: (bytes: number) => void;
}

/**
 * A call's results in request order, held while every one so far is table-shaped. Held tables wait
 * in the front until the last row, so together they are capped like any result (the heap limit).
 */
export class TableHold {
  /** undecided until the first result: held while every result so far is table-shaped. */
  private state: 'undecided' | 'holding' | 'streaming';
  private readonly held: TaskSuccess[] = [];
  private heldBytes = 0;
  /**
   * The call's column names, one string each: every chunk's meta JSON parses into strings of its
   * own, and a held chunk keeps these instead, so a name repeated in every chunk is kept once.
   */
  private readonly names = new Map<string, string>();
  private nameBytes = 0;

  constructor(
    tableAllowed: boolean,
    private readonly maxBytes: number,
    private readonly memoryLimitMb: number,
  ) {
    this.state = tableAllowed ? 'undecided' : 'streaming';
  }

  /** Results held now. */
  get size(): number {
    return this.held.length;
  }

  /** What the held results take, as given to take(). */
  get bytes(): number {
    return this.heldBytes;
  }

  /**
   * Takes the next result in request order (`bytes`: what it takes while kept); returns what to write
   * now, held results first, or [] when it is held. Throws when the held tables would pass the heap
   * limit or the column bounds; a refused result is not kept.
   */
  take(result: TaskSuccess, bytes: number): TaskSuccess[] {
    if (this.state !== 'streaming' && result.table !== null) {
      const keys = this.intern(result.table.keys);
      if (this.heldBytes + bytes > this.maxBytes) throw tableTooLargeError(this.memoryLimitMb);
      this.state = 'holding';
      this.held.push({ ...result, table: { ...result.table, keys } });
      this.heldBytes += bytes;
      return [];
    }
    this.state = 'streaming';
    const ready = this.drain();
    ready.push(result);
    return ready;
  }

  /**
   * The kept string of each name; throws past MAX_TABLE_COLUMNS or MAX_TABLE_KEY_BYTES over all the
   * call's chunks (each chunk is bounded by its sandbox, their union here: more than Qlik reads).
   */
  private intern(keys: readonly string[]): string[] {
    return keys.map((key) => {
      const kept = this.names.get(key);
      if (kept !== undefined) return kept;
      this.nameBytes += Buffer.byteLength(key, 'utf8');
      if (this.names.size >= MAX_TABLE_COLUMNS || this.nameBytes > MAX_TABLE_KEY_BYTES)
        throw tableColumnsError(MAX_TABLE_COLUMNS, MAX_TABLE_KEY_BYTES);
      this.names.set(key, key);
      return key;
    });
  }

  /** At the call's end: the held results joined into one table, or null for mixed shapes (see drain). */
  join(limits: TableLimits): EncodedTable | null {
    const chunks = this.held.map((r) => r.table).filter((t) => t !== null);
    const table = chunks.length === this.held.length ? assembleTable(chunks, limits) : null;
    if (table !== null) this.drain();
    return table;
  }

  /** Takes the held results, to be written as they are (or dropped when the call failed). */
  drain(): TaskSuccess[] {
    this.heldBytes = 0;
    return this.held.splice(0);
  }
}

/** A name's slot in a chunk's keys and its string's header, beyond its characters. */
const NAME_OVERHEAD_BYTES = 16;

/**
 * What a kept table chunk takes in the front beyond its replies: its part of the RESULT frame (cell
 * ends, cells, kinds; src/contract/result-frame.ts), the aligned copy of its cell ends, and its names:
 * in the frame's meta JSON (up to 3 bytes a UTF-16 unit) and as strings (2 bytes a unit; kept once
 * per call, see TableHold, but counted with every chunk: a bound, not a tally).
 */
export function tableChunkBytes(table: TableChunk): number {
  let nameBytes = 0;
  for (const key of table.keys) nameBytes += 5 * key.length + NAME_OVERHEAD_BYTES;
  return table.cells.byteLength + table.kinds.byteLength + 2 * table.cellEnds.byteLength + nameBytes;
}

/** Row entries take at most this much framing each (tag and a length of up to 5 bytes). */
const ROW_FRAMING_BYTES = 6;

/** Joins chunks (in row order, all of one shape) into a table; returns null for mixed shapes. */
export function assembleTable(chunks: readonly TableChunk[], limits: TableLimits): EncodedTable | null {
  const shape = chunks[0]?.shape;
  if (shape === undefined || chunks.some((c) => c.shape !== shape)) return null;
  const keys = unionKeys(chunks, shape);
  const totalRows = chunks.reduce((n, c) => n + c.rows, 0);
  const joinedBytes = chunks.reduce(
    (n, c) => n + c.cells.byteLength + (keys.length - c.keys.length) * c.rows * NULL_CELL.byteLength + c.rows * ROW_FRAMING_BYTES,
    0,
  );
  if (joinedBytes > limits.maxBytes) throw tableTooLargeError(limits.memoryLimitMb);
  limits.reserve?.(joinedBytes);
  const index = new Map(keys.map((key, i) => [key, i]));
  // For each chunk, the chunk's column holding each table column (or -1).
  const columnMaps = chunks.map((chunk) => {
    const map = new Int32Array(keys.length).fill(-1);
    chunk.keys.forEach((key, c) => {
      map[index.get(key) as number] = c;
    });
    return map;
  });
  const metadata = tableHeader(fieldTypes(chunks, keys, index), totalRows);
  const replies = joinRows(chunks, columnMaps, keys.length, joinedBytes, limits.maxReplyBytes);
  return { metadata, replies, rows: totalRows };
}

function joinRows(
  chunks: readonly TableChunk[],
  columnMaps: readonly Int32Array[],
  width: number,
  joinedBytes: number,
  maxReplyBytes: number,
): Uint8Array[] {
  const writer = new RowMessageWriter(maxReplyBytes, joinedBytes);
  let row = 0;
  let written = 0;
  chunks.forEach((chunk, k) => {
    const map = columnMaps[k] as Int32Array;
    const { rows, cells, cellEnds } = chunk;
    for (let r = 0; r < rows; r++, row++) {
      let rowBytes = 0;
      for (let u = 0; u < width; u++) {
        const c = map[u] as number;
        rowBytes += c < 0 ? NULL_CELL.byteLength : cellBytes(cellEnds, c * rows + r);
      }
      const start = writer.beginRow(rowBytes, row, joinedBytes - written);
      let pos = start.pos;
      for (let u = 0; u < width; u++) {
        const c = map[u] as number;
        if (c < 0) {
          start.out.set(NULL_CELL, pos);
          pos += NULL_CELL.byteLength;
        } else {
          const i = c * rows + r;
          const from = i === 0 ? 0 : (cellEnds[i - 1] as number);
          start.out.set(cells.subarray(from, cellEnds[i] as number), pos);
          pos += (cellEnds[i] as number) - from;
        }
      }
      written += pos - start.pos;
      writer.endRow(pos);
    }
  });
  return writer.finish();
}

function cellBytes(cellEnds: Uint32Array, i: number): number {
  return (cellEnds[i] as number) - (i === 0 ? 0 : (cellEnds[i - 1] as number));
}

/** numbers only -> NUMERIC, text only -> STRING, both -> DUAL; nulls do not count. */
function fieldTypes(
  chunks: readonly TableChunk[],
  keys: readonly string[],
  index: Map<string, number>,
): { name: string; dataType: DataType }[] {
  const seen = keys.map(() => ({ number: false, text: false }));
  for (const chunk of chunks) {
    chunk.keys.forEach((key, c) => {
      const types = seen[index.get(key) as number] as { number: boolean; text: boolean };
      const kinds = chunk.kinds.subarray(c * chunk.rows, (c + 1) * chunk.rows);
      if (!types.number && kinds.includes(CELL_NUMBER)) types.number = true;
      if (!types.text && kinds.includes(CELL_TEXT)) types.text = true;
    });
  }
  return keys.map((name, i) => {
    const { number, text } = seen[i] as { number: boolean; text: boolean };
    return { name, dataType: number && text ? DataType.DUAL : text ? DataType.STRING : DataType.NUMERIC };
  });
}

function unionKeys(chunks: readonly TableChunk[], shape: TableChunk['shape']): string[] {
  if (shape === 'array') {
    const width = chunks.reduce((n, c) => Math.max(n, c.keys.length), 0);
    return Array.from({ length: width }, (_, i) => `Field${i + 1}`);
  }
  const keys = new Set<string>();
  for (const chunk of chunks) for (const key of chunk.keys) keys.add(key);
  return [...keys];
}
