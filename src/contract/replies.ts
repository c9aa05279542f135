/**
 * Pure encoder of reply rows into serialised qlik.sse.BundledRows messages of at most maxBytes each
 * (Qlik refuses a message over 4 MiB). Hand-written, as src/rows.ts, because it is the hot path.
 */
import { PluginError } from './errors';
import { SHORT_COPY_BYTES } from './rows';

const TAG_ROW = 0x0a; // BundledRows.rows and Row.duals: field 1, length-delimited
const TAG_NUM = 0x09; // Dual.numData: field 1, fixed64
const TAG_STR = 0x12; // Dual.strData: field 2, length-delimited

/** The most bytes a reply message may have: Qlik's gRPC client refuses anything over 4 MiB. */
export const MAX_REPLY_BYTES = 4 * 1024 * 1024;

function varintSize(value: number): number {
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x200000) return 3;
  if (value < 0x10000000) return 4;
  return 5;
}

function writeVarint(buf: Uint8Array, pos: number, value: number): number {
  while (value >= 0x80) {
    buf[pos++] = (value & 0x7f) | 0x80;
    value >>>= 7;
  }
  buf[pos++] = value;
  return pos;
}

/** A reply cell: numData (always written) and/or strData (written when non-empty). */
export interface Cell {
  num: number | undefined;
  str: string | undefined;
}

function tooLarge(row: number, bytes: number, maxBytes: number): PluginError {
  return new PluginError(
    'RESOURCE_EXHAUSTED',
    `the result of row ${row} needs ${bytes} bytes, more than one reply message may carry (${maxBytes} bytes)`,
  );
}

/**
 * Cuts encoded rows into messages of at most maxBytes. Buffers are never from Node's shared pool, so
 * each reply owns its ArrayBuffer and can be moved from a sandbox thread to its process's main thread instead of copied.
 */
class ReplyWriter {
  private readonly replies: Uint8Array[] = [];
  private buf: Buffer;
  private pos = 0;

  constructor(
    private readonly maxBytes: number,
    expectedBytes: number,
  ) {
    this.buf = Buffer.allocUnsafeSlow(Math.max(16, Math.min(maxBytes, expectedBytes)));
  }

  /** Makes room for one row entry of rowEntryBytes; returns the buffer and position to write at. */
  reserve(rowEntryBytes: number, row: number, remainingEstimate: number): number {
    if (rowEntryBytes > this.maxBytes) throw tooLarge(row, rowEntryBytes, this.maxBytes);
    if (this.pos + rowEntryBytes > this.buf.length) {
      if (this.pos + rowEntryBytes <= this.maxBytes) {
        const grown = Buffer.allocUnsafeSlow(Math.min(this.maxBytes, Math.max(this.buf.length * 2, this.pos + rowEntryBytes)));
        this.buf.copy(grown, 0, 0, this.pos);
        this.buf = grown;
      } else {
        this.flush();
        this.buf = Buffer.allocUnsafeSlow(Math.max(rowEntryBytes, Math.min(this.maxBytes, remainingEstimate)));
      }
    }
    return this.pos;
  }

  get buffer(): Buffer {
    return this.buf;
  }

  advance(to: number): void {
    this.pos = to;
  }

  private flush(): void {
    if (this.pos > 0) this.replies.push(this.buf.subarray(0, this.pos));
    this.pos = 0;
  }

  finish(): Uint8Array[] {
    this.flush();
    return this.replies;
  }
}

const NUMERIC_ROW_BYTES = 13; // 0a 0b | 0a 09 | 09 <8 bytes>

/** One NUMERIC value per row. */
export function encodeNumbers(nums: Float64Array, maxBytes: number = MAX_REPLY_BYTES): Uint8Array[] {
  const rowsPerMessage = Math.floor(maxBytes / NUMERIC_ROW_BYTES);
  const replies: Uint8Array[] = [];
  for (let first = 0; first < nums.length; first += rowsPerMessage) {
    const count = Math.min(rowsPerMessage, nums.length - first);
    const buf = Buffer.allocUnsafeSlow(count * NUMERIC_ROW_BYTES);
    let pos = 0;
    for (let i = 0; i < count; i++) {
      buf[pos] = TAG_ROW;
      buf[pos + 1] = 11;
      buf[pos + 2] = TAG_ROW;
      buf[pos + 3] = 9;
      buf[pos + 4] = TAG_NUM;
      buf.writeDoubleLE(nums[first + i] as number, pos + 5);
      pos += NUMERIC_ROW_BYTES;
    }
    replies.push(buf);
  }
  return replies;
}

/** One STRING value per row, given as UTF-8 bytes and each value's byte length. */
export function encodeUtf8(bytes: Uint8Array, byteLengths: Uint32Array, maxBytes: number = MAX_REPLY_BYTES): Uint8Array[] {
  const writer = new ReplyWriter(maxBytes, bytes.length + byteLengths.length * 6);
  let bytePos = 0;
  for (let i = 0; i < byteLengths.length; i++) {
    const strBytes = byteLengths[i] as number;
    const dualBytes = strBytes === 0 ? 0 : 1 + varintSize(strBytes) + strBytes;
    const rowBytes = 1 + varintSize(dualBytes) + dualBytes;
    const entryBytes = 1 + varintSize(rowBytes) + rowBytes;
    let pos = writer.reserve(entryBytes, i, bytes.length - bytePos + (byteLengths.length - i) * 6);
    const out = writer.buffer;
    out[pos++] = TAG_ROW;
    pos = writeVarint(out, pos, rowBytes);
    out[pos++] = TAG_ROW;
    pos = writeVarint(out, pos, dualBytes);
    if (strBytes > 0) {
      out[pos++] = TAG_STR;
      pos = writeVarint(out, pos, strBytes);
      if (strBytes < SHORT_COPY_BYTES) for (let k = 0; k < strBytes; k++) out[pos++] = bytes[bytePos + k] as number;
      else {
        out.set(bytes.subarray(bytePos, bytePos + strBytes), pos);
        pos += strBytes;
      }
    }
    writer.advance(pos);
    bytePos += strBytes;
  }
  return writer.finish();
}

/** Rows of cells (several columns, or both numData and strData): the general, slower encoder. */
export function encodeCells(
  rows: number,
  width: number,
  cellAt: (row: number, col: number, cell: Cell) => void,
  maxBytes: number = MAX_REPLY_BYTES,
): Uint8Array[] {
  const writer = new ReplyWriter(maxBytes, rows * width * 16);
  const cell: Cell = { num: undefined, str: undefined };
  const dualSizes = new Array<number>(width);
  const strSizes = new Array<number>(width);
  for (let r = 0; r < rows; r++) {
    let rowBytes = 0;
    for (let c = 0; c < width; c++) {
      cellAt(r, c, cell);
      const strBytes = cell.str ? Buffer.byteLength(cell.str, 'utf8') : 0;
      const dualBytes = (cell.num === undefined ? 0 : 9) + (strBytes > 0 ? 1 + varintSize(strBytes) + strBytes : 0);
      strSizes[c] = strBytes;
      dualSizes[c] = dualBytes;
      rowBytes += 1 + varintSize(dualBytes) + dualBytes;
    }
    const entryBytes = 1 + varintSize(rowBytes) + rowBytes;
    let pos = writer.reserve(entryBytes, r, (rows - r) * entryBytes);
    const out = writer.buffer;
    out[pos++] = TAG_ROW;
    pos = writeVarint(out, pos, rowBytes);
    for (let c = 0; c < width; c++) {
      cellAt(r, c, cell);
      out[pos++] = TAG_ROW;
      pos = writeVarint(out, pos, dualSizes[c] as number);
      if (cell.num !== undefined) {
        out[pos++] = TAG_NUM;
        out.writeDoubleLE(cell.num, pos);
        pos += 8;
      }
      const strBytes = strSizes[c] as number;
      if (strBytes > 0 && cell.str) {
        out[pos++] = TAG_STR;
        pos = writeVarint(out, pos, strBytes);
        pos += out.write(cell.str, pos, strBytes, 'utf8');
      }
    }
    writer.advance(pos);
  }
  return writer.finish();
}

/** Bytes of one Row.duals entry holding numData and strData of strBytes (none when 0). */
export function dualCellBytes(strBytes: number): number {
  const dualBytes = 9 + (strBytes > 0 ? 1 + varintSize(strBytes) + strBytes : 0);
  return 1 + varintSize(dualBytes) + dualBytes;
}

/** Writes one Row.duals entry (numData always, strData when not empty) at `pos`; returns the end. */
export function encodeDualCell(out: Buffer, pos: number, num: number, str: string): number {
  const strBytes = str === '' ? 0 : Buffer.byteLength(str, 'utf8');
  out[pos++] = TAG_ROW;
  pos = writeVarint(out, pos, 9 + (strBytes > 0 ? 1 + varintSize(strBytes) + strBytes : 0));
  out[pos++] = TAG_NUM;
  out.writeDoubleLE(num, pos);
  pos += 8;
  if (strBytes > 0) {
    out[pos++] = TAG_STR;
    pos = writeVarint(out, pos, strBytes);
    pos += out.write(str, pos, strBytes, 'utf8');
  }
  return pos;
}

/** The one cell a row lacks (a key another row has): numData NaN, Qlik's null. */
export const NULL_CELL: Uint8Array = (() => {
  const cell = Buffer.alloc(dualCellBytes(0));
  encodeDualCell(cell, 0, Number.NaN, '');
  return cell;
})();

/** Joins whole Row entries into BundledRows messages of at most maxBytes (see ReplyWriter). */
export class RowMessageWriter {
  private readonly writer: ReplyWriter;

  constructor(maxBytes: number, expectedBytes: number) {
    this.writer = new ReplyWriter(maxBytes, expectedBytes);
  }

  /** Starts a row of rowBytes (the sum of its cells' entries); returns where to copy the cells. */
  beginRow(rowBytes: number, row: number, remainingEstimate: number): { out: Buffer; pos: number } {
    const entryBytes = 1 + varintSize(rowBytes) + rowBytes;
    let pos = this.writer.reserve(entryBytes, row, remainingEstimate);
    const out = this.writer.buffer;
    out[pos++] = TAG_ROW;
    pos = writeVarint(out, pos, rowBytes);
    return { out, pos };
  }

  endRow(pos: number): void {
    this.writer.advance(pos);
  }

  finish(): Uint8Array[] {
    return this.writer.finish();
  }
}
