/**
 * Pure codec between serialised qlik.sse.BundledRows and typed columns. Hand-written because it is
 * the hot path: rows are decoded straight into Float64Array / packed strings and replies encoded
 * straight into bytes, with no per-row message objects.
 *
 * BundledRows = repeated Row rows = 1; Row = repeated Dual duals = 1;
 * Dual = double numData = 1 (fixed64); string strData = 2.
 * Top-level fields of a BundledRows are self-contained, so any run of them is a valid BundledRows.
 */
import { PluginError } from './errors';
import { DataType } from './task';

const TAG_ROW = 0x0a; // field 1, length-delimited (also Row.duals)
const TAG_NUM = 0x09; // field 1, fixed64
const TAG_STR = 0x12; // field 2, length-delimited

/** The most bytes a reply message may have: Qlik's gRPC client refuses anything over 4 MiB. */
export const MAX_REPLY_BYTES = 4 * 1024 * 1024;

function malformed(what: string): PluginError {
  return new PluginError('INVALID_ARGUMENT', `malformed BundledRows message: ${what}`);
}

/**
 * Where the last readLength/readTag stopped. A module-level cursor instead of returning
 * [value, position] pairs: the decoder runs per field of every row, and the pairs were garbage.
 */
let cursor = 0;

/** Reads a varint length and checks it fits before `end`; the next position is left in `cursor`. */
function readLength(buf: Uint8Array, pos: number, end: number): number {
  const first = buf[pos] as number;
  if (first < 0x80 && pos < end) {
    if (pos + 1 + first > end) throw malformed('field runs past the end of the message');
    cursor = pos + 1;
    return first;
  }
  let value = 0;
  let shift = 0;
  for (;;) {
    if (pos >= end) throw malformed('truncated length');
    const byte = buf[pos++] as number;
    if (shift < 28) value |= (byte & 0x7f) << shift;
    else if (shift < 49) value += (byte & 0x7f) * 2 ** shift;
    else throw malformed('length too large');
    if (byte < 0x80) break;
    shift += 7;
  }
  if (value < 0 || pos + value > end) throw malformed('field runs past the end of the message');
  cursor = pos;
  return value;
}

/** Skips one field's value of the given wire type; returns the next position. */
function skipField(buf: Uint8Array, pos: number, end: number, wireType: number): number {
  switch (wireType) {
    case 0: {
      while (pos < end && (buf[pos] as number) >= 0x80) pos++;
      if (pos >= end) throw malformed('truncated varint');
      return pos + 1;
    }
    case 1:
      if (pos + 8 > end) throw malformed('truncated fixed64');
      return pos + 8;
    case 2: {
      const len = readLength(buf, pos, end);
      return cursor + len;
    }
    case 5:
      if (pos + 4 > end) throw malformed('truncated fixed32');
      return pos + 4;
    default:
      throw malformed(`unsupported wire type ${wireType}`);
  }
}

/** Reads a tag (ours are one byte; tolerate multi-byte tags of unknown fields); next position in `cursor`. */
function readTag(buf: Uint8Array, pos: number, end: number): number {
  const first = buf[pos] as number;
  if (first < 0x80) {
    cursor = pos + 1;
    return first;
  }
  let tag = 0;
  for (let shift = 0, p = pos; p < end && shift < 35; shift += 7) {
    const byte = buf[p++] as number;
    tag += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) {
      cursor = p;
      return tag;
    }
  }
  throw malformed('truncated tag');
}

export interface RowChunk {
  readonly bytes: Uint8Array;
  readonly rows: number;
}

/**
 * Counts the rows of one BundledRows message and cuts it at row boundaries into pieces of about
 * targetBytes, without decoding any row. Unknown top-level fields are dropped.
 */
export function splitRows(buf: Uint8Array, targetBytes: number): RowChunk[] {
  const chunks: RowChunk[] = [];
  const end = buf.length;
  let pos = 0;
  let start = 0;
  let rows = 0;
  while (pos < end) {
    const tag = readTag(buf, pos, end);
    const afterTag = cursor;
    if (tag !== TAG_ROW) {
      if (rows > 0) chunks.push({ bytes: buf.subarray(start, pos), rows });
      pos = skipField(buf, afterTag, end, tag & 7);
      start = pos;
      rows = 0;
      continue;
    }
    const len = readLength(buf, afterTag, end);
    const at = cursor;
    pos = at + len;
    rows++;
    if (pos - start >= targetBytes) {
      chunks.push({ bytes: buf.subarray(start, pos), rows });
      start = pos;
      rows = 0;
    }
  }
  if (rows > 0) chunks.push({ bytes: buf.subarray(start, pos), rows });
  return chunks;
}

/** Strings of one column packed as one string plus each value's length in UTF-16 units. */
export interface PackedStrings {
  readonly text: string;
  readonly lengths: Uint32Array;
}

/** One parameter's values over the rows of a task. */
export interface Column {
  readonly type: DataType;
  readonly nums: Float64Array | null;
  readonly strs: PackedStrings | null;
}

class ColumnBuilder {
  readonly nums: Float64Array | null;
  readonly parts: string[] | null;
  readonly lengths: Uint32Array | null;

  constructor(
    readonly type: DataType,
    rows: number,
  ) {
    this.nums = type === DataType.STRING ? null : new Float64Array(rows);
    this.parts = type === DataType.NUMERIC ? null : new Array<string>(rows);
    this.lengths = type === DataType.NUMERIC ? null : new Uint32Array(rows);
  }

  build(): Column {
    const strs = this.parts && this.lengths ? { text: this.parts.join(''), lengths: this.lengths } : null;
    return { type: this.type, nums: this.nums, strs };
  }
}

function arityError(row: number, got: number, want: number): PluginError {
  return new PluginError(
    'INVALID_ARGUMENT',
    `row ${row} has ${got} value${got === 1 ? '' : 's'} but the script takes ${want} parameter${want === 1 ? '' : 's'}`,
  );
}

/**
 * Decodes rows into one column per parameter. Absent fields take protobuf defaults (0 and ''),
 * which is how Qlik's NaN-for-null and empty-string-for-null arrive.
 */
export function decodeColumns(
  bundles: readonly Uint8Array[],
  rows: number,
  paramTypes: readonly DataType[],
  firstRow: number,
): Column[] {
  const builders = paramTypes.map((type) => new ColumnBuilder(type, rows));
  const width = builders.length;
  let r = 0;
  for (const buf of bundles) {
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const end = buf.length;
    let pos = 0;
    while (pos < end) {
      const tag = readTag(buf, pos, end);
      const afterTag = cursor;
      if (tag !== TAG_ROW) {
        pos = skipField(buf, afterTag, end, tag & 7);
        continue;
      }
      const rowLen = readLength(buf, afterTag, end);
      const rowStart = cursor;
      const rowEnd = rowStart + rowLen;
      if (r >= rows) throw malformed('more rows than counted');
      let d = 0;
      let p = rowStart;
      while (p < rowEnd) {
        const rowTag = readTag(buf, p, rowEnd);
        const afterRowTag = cursor;
        if (rowTag !== TAG_ROW) {
          p = skipField(buf, afterRowTag, rowEnd, rowTag & 7);
          continue;
        }
        const dualLen = readLength(buf, afterRowTag, rowEnd);
        const dualStart = cursor;
        const dualEnd = dualStart + dualLen;
        const builder = builders[d];
        if (builder === undefined) throw arityError(firstRow + r, countDuals(buf, rowStart, rowEnd), width);
        let num = 0;
        let strStart = 0;
        let strEnd = 0;
        let q = dualStart;
        while (q < dualEnd) {
          const dualTag = readTag(buf, q, dualEnd);
          const afterDualTag = cursor;
          if (dualTag === TAG_NUM) {
            if (afterDualTag + 8 > dualEnd) throw malformed('truncated numData');
            num = view.getFloat64(afterDualTag, true);
            q = afterDualTag + 8;
          } else if (dualTag === TAG_STR) {
            const strLen = readLength(buf, afterDualTag, dualEnd);
            const at = cursor;
            strStart = at;
            strEnd = at + strLen;
            q = strEnd;
          } else {
            q = skipField(buf, afterDualTag, dualEnd, dualTag & 7);
          }
        }
        if (builder.nums) builder.nums[r] = num;
        if (builder.parts && builder.lengths) {
          const text = strEnd > strStart ? Buffer.prototype.utf8Slice.call(buf, strStart, strEnd) : '';
          builder.parts[r] = text;
          builder.lengths[r] = text.length;
        }
        d++;
        p = dualEnd;
      }
      if (d !== width) throw arityError(firstRow + r, d, width);
      r++;
      pos = rowEnd;
    }
  }
  if (r !== rows) throw malformed(`expected ${rows} rows, found ${r}`);
  return builders.map((b) => b.build());
}

function countDuals(buf: Uint8Array, start: number, end: number): number {
  let n = 0;
  let p = start;
  while (p < end) {
    const tag = readTag(buf, p, end);
    const afterTag = cursor;
    if (tag === TAG_ROW) n++;
    p = skipField(buf, afterTag, end, tag & 7);
  }
  return n;
}

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
 * each reply owns its ArrayBuffer and can be transferred to the main thread instead of copied.
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

/** One STRING value per row, given packed as one string and UTF-16 lengths. */
export function encodeStrings(packed: PackedStrings, maxBytes: number = MAX_REPLY_BYTES): Uint8Array[] {
  const { text, lengths } = packed;
  const byteLengths = new Uint32Array(lengths.length);
  let at = 0;
  for (let i = 0; i < lengths.length; i++) {
    const chars = lengths[i] as number;
    byteLengths[i] = Buffer.byteLength(text.slice(at, at + chars), 'utf8');
    at += chars;
  }
  return encodeUtf8(Buffer.from(text, 'utf8'), byteLengths, maxBytes);
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
      out.set(bytes.subarray(bytePos, bytePos + strBytes), pos);
      pos += strBytes;
    }
    writer.advance(pos);
    bytePos += strBytes;
  }
  return writer.finish();
}

/** Rows of cells (several columns, or both numData and strData): the general, slower encoder. */
export function encodeCells(rows: number, width: number, cellAt: (row: number, col: number, cell: Cell) => void, maxBytes: number = MAX_REPLY_BYTES): Uint8Array[] {
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

/** Copies row chunks into one buffer that owns its memory, so it can be transferred to a worker. */
export function packChunks(chunks: readonly RowChunk[]): Uint8Array {
  const total = chunks.reduce((n, c) => n + c.bytes.length, 0);
  const packed = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    packed.set(chunk.bytes, at);
    at += chunk.bytes.length;
  }
  return packed;
}
