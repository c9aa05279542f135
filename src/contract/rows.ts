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
      const start = pos;
      while (pos < end && (buf[pos] as number) >= 0x80) pos++;
      if (pos >= end) throw malformed('truncated varint');
      if (pos - start >= MAX_VARINT_BYTES) throw malformed('varint longer than 10 bytes');
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

/** The most bytes a protobuf varint takes (a 64-bit value). */
const MAX_VARINT_BYTES = 10;

/**
 * Reads a tag (ours are one byte; tolerate multi-byte tags of unknown fields); next position in `cursor`.
 * Field number 0 is not protobuf (no encoder writes it).
 */
function readTag(buf: Uint8Array, pos: number, end: number): number {
  const first = buf[pos] as number;
  if (first < 0x80) {
    if (first < 8) throw malformed('field number 0');
    cursor = pos + 1;
    return first;
  }
  let tag = 0;
  for (let shift = 0, p = pos; p < end && shift < 35; shift += 7) {
    const byte = buf[p++] as number;
    tag += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) {
      if (tag < 8) throw malformed('field number 0');
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

/** Values shorter than this many bytes are copied byte by byte rather than with a subarray and set. */
export const SHORT_COPY_BYTES = 64;

/**
 * Text values are gathered as UTF-8 bytes and turned into one string at the end, with each value's
 * UTF-16 length counted from its bytes: one decode per column instead of a utf8Slice per value and a
 * join (measured in bench/RESULTS.md). Invalid UTF-8 makes the counts unreliable (the decoder's
 * replacement characters): such a column is decoded value by value instead.
 */
class ColumnBuilder {
  readonly nums: Float64Array | null;
  readonly lengths: Uint32Array | null;
  private bytes: Uint8Array;
  private used = 0;
  private readonly starts: Uint32Array | null;
  private wellFormed = true;

  constructor(
    readonly type: DataType,
    rows: number,
    expectedBytes: number,
  ) {
    this.nums = type === DataType.STRING ? null : new Float64Array(rows);
    this.lengths = type === DataType.NUMERIC ? null : new Uint32Array(rows);
    this.starts = type === DataType.NUMERIC ? null : new Uint32Array(rows + 1);
    this.bytes = new Uint8Array(type === DataType.NUMERIC ? 0 : expectedBytes);
  }

  addText(row: number, buf: Uint8Array, start: number, end: number): void {
    const length = end - start;
    if (this.used + length > this.bytes.length) {
      const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.used + length));
      grown.set(this.bytes.subarray(0, this.used));
      this.bytes = grown;
    }
    const at = this.used;
    (this.starts as Uint32Array)[row] = at;
    this.used += length;
    let units: number;
    if (length < SHORT_COPY_BYTES) {
      // Byte by byte: a subarray and a set cost ~100 ns a value, 3x this loop for Qlik's usual short texts.
      const bytes = this.bytes;
      let high = 0;
      for (let i = 0; i < length; i++) {
        const b = buf[start + i] as number;
        bytes[at + i] = b;
        high |= b;
      }
      units = high < 0x80 ? length : utf16Length(bytes, at, at + length);
    } else {
      this.bytes.set(buf.subarray(start, end), at);
      units = utf16Length(this.bytes, at, this.used);
    }
    if (units < 0) this.wellFormed = false;
    else (this.lengths as Uint32Array)[row] = units;
  }

  build(rows: number): Column {
    if (!this.lengths || !this.starts) return { type: this.type, nums: this.nums, strs: null };
    this.starts[rows] = this.used;
    const buffer = Buffer.from(this.bytes.buffer, this.bytes.byteOffset, this.used);
    const text = this.wellFormed ? buffer.toString('utf8') : this.valueByValue(buffer, rows);
    return { type: this.type, nums: this.nums, strs: { text, lengths: this.lengths } };
  }

  private valueByValue(buffer: Buffer, rows: number): string {
    const starts = this.starts as Uint32Array;
    const lengths = this.lengths as Uint32Array;
    const parts = new Array<string>(rows);
    for (let r = 0; r < rows; r++) {
      parts[r] = buffer.toString('utf8', starts[r], starts[r + 1]);
      lengths[r] = (parts[r] as string).length;
    }
    return parts.join('');
  }
}

/**
 * UTF-16 units of the UTF-8 in [start, end): one per sequence, two for a 4-byte one; -1 unless every
 * sequence is well-formed (RFC 3629: no stray continuation bytes, truncated, over-long or surrogate
 * sequences), which is exactly when Node's decoder inserts no replacement character.
 */
function utf16Length(bytes: Uint8Array, start: number, end: number): number {
  let units = 0;
  for (let i = start; i < end; ) {
    const lead = bytes[i] as number;
    if (lead < 0x80) {
      units++;
      i++;
      continue;
    }
    const extra = lead >= 0xc2 && lead < 0xe0 ? 1 : lead >= 0xe0 && lead < 0xf0 ? 2 : lead >= 0xf0 && lead < 0xf5 ? 3 : -1;
    if (extra < 0 || i + extra >= end) return -1;
    const second = bytes[i + 1] as number;
    const low = lead === 0xe0 ? 0xa0 : lead === 0xf0 ? 0x90 : 0x80;
    const high = lead === 0xed ? 0x9f : lead === 0xf4 ? 0x8f : 0xbf;
    if (second < low || second > high) return -1;
    for (let k = 2; k <= extra; k++) if (((bytes[i + k] as number) & 0xc0) !== 0x80) return -1;
    units += extra === 3 ? 2 : 1;
    i += extra + 1;
  }
  return units;
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
export function decodeColumns(bundles: readonly Uint8Array[], rows: number, paramTypes: readonly DataType[], firstRow: number): Column[] {
  const expectedBytes = bundles.reduce((n, b) => n + b.length, 0);
  const builders = paramTypes.map((type) => new ColumnBuilder(type, rows, expectedBytes));
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
        if (builder.lengths) builder.addText(r, buf, strStart, strEnd);
        d++;
        p = dualEnd;
      }
      if (d !== width) throw arityError(firstRow + r, d, width);
      r++;
      pos = rowEnd;
    }
  }
  if (r !== rows) throw malformed(`expected ${rows} rows, found ${r}`);
  return builders.map((b) => b.build(rows));
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
