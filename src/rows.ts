/**
 * Pure decoder from serialised qlik.sse.BundledRows to typed columns (replies: src/replies.ts).
 * Hand-written because it is the hot path: rows are decoded straight into Float64Array / packed
 * strings, with no per-row message objects.
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
