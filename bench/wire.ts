/**
 * Byte-level helpers shared by the bench client and the ceiling server. They only walk the
 * top-level fields of a BundledRows (one tag and one length per row): they never decode a row.
 */

const TAG_ROW = 0x0a; // BundledRows.rows = 1, length-delimited
const TAG_NUM = 0x09; // Dual.numData = 1, fixed64

/** Bytes of one NUMERIC reply row: 0a 0b | 0a 09 | 09 <8 bytes>, the shape the plugin writes. */
export const NUMERIC_ROW_BYTES = 13;

function readVarint(buf: Uint8Array, pos: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (;;) {
    const byte = buf[pos++] as number;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, pos];
    scale *= 128;
  }
}

/** Rows in one serialised BundledRows (its top-level `rows` fields). */
export function countRows(buf: Uint8Array): number {
  let rows = 0;
  let pos = 0;
  while (pos < buf.length) {
    const tag = buf[pos++] as number;
    if (tag !== TAG_ROW) throw new Error(`unexpected top-level tag 0x${tag.toString(16)} in a BundledRows`);
    const [len, at] = readVarint(buf, pos);
    pos = at + len;
    rows++;
  }
  return rows;
}

const numericReplies = new Map<number, Buffer>();

/** A BundledRows of `rows` NUMERIC rows (value 0), built once per row count and reused. */
export function numericReply(rows: number): Buffer {
  let reply = numericReplies.get(rows);
  if (reply !== undefined) return reply;
  reply = Buffer.alloc(rows * NUMERIC_ROW_BYTES);
  for (let pos = 0; pos < reply.length; pos += NUMERIC_ROW_BYTES) {
    reply[pos] = TAG_ROW;
    reply[pos + 1] = 11;
    reply[pos + 2] = TAG_ROW;
    reply[pos + 3] = 9;
    reply[pos + 4] = TAG_NUM;
  }
  numericReplies.set(rows, reply);
  return reply;
}
