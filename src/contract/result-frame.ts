/**
 * RESULT payloads (src/contract/channel.ts carries them): what a sandbox thread sends back for a task.
 *
 * success = u8 1 | u8 nondeterministic | u32 rowsOut | f64 scriptMs | u32 replies | u32 tableMetaBytes
 *           | u32 length per reply | replies | table (see encodeTable)
 * failure = u8 0 | JSON FailureData
 *
 * The sandbox writes them, the front reads them; the front does not trust what it reads (a script
 * that escaped V8 would own the sandbox process), so every length is checked before use.
 */
import { Frame, frameHeader, HEADER_BYTES, MAX_RESULT_FRAME_BYTES, parseJson } from './channel';
import { type ErrorData, PluginError } from './errors';
import { MAX_TABLE_COLUMNS, MAX_TABLE_KEY_BYTES, type TableChunk, type TaskResult } from './task';

/**
 * A table chunk's meta JSON: MAX_TABLE_KEY_BYTES of names, each byte at most 6 once escaped (\u0001),
 * quotes and commas, and the other fields.
 */
const MAX_TABLE_META_BYTES = 6 * MAX_TABLE_KEY_BYTES + 3 * MAX_TABLE_COLUMNS + 1024;
/** u8 ok, u8 nondeterministic, u32 rowsOut, f64 scriptMs, u32 replies, u32 tableMetaBytes. */
const SUCCESS_FIXED_BYTES = 22;

interface FailureData {
  readonly error: ErrorData;
  readonly scriptMs: number;
  readonly isolateRebuilt: boolean;
  readonly timedOut: boolean;
}

/** The pieces of a RESULT payload, to be written one after another (no join of the reply bytes). */
export function encodeResult(result: TaskResult): Uint8Array[] {
  if (!result.ok) {
    const failure: FailureData = {
      error: result.error,
      scriptMs: result.scriptMs,
      isolateRebuilt: result.isolateRebuilt,
      timedOut: result.timedOut,
    };
    return [Uint8Array.of(0), Buffer.from(JSON.stringify(failure), 'utf8')];
  }
  const table = result.table === null ? [] : encodeTable(result.table);
  const fixed = Buffer.allocUnsafe(SUCCESS_FIXED_BYTES + 4 * result.replies.length);
  fixed.writeUInt8(1, 0);
  fixed.writeUInt8(result.nondeterministic ? 1 : 0, 1);
  fixed.writeUInt32LE(result.rowsOut, 2);
  fixed.writeDoubleLE(result.scriptMs, 6);
  fixed.writeUInt32LE(result.replies.length, 14);
  fixed.writeUInt32LE(table[0]?.byteLength ?? 0, 18);
  result.replies.forEach((reply, i) => {
    fixed.writeUInt32LE(reply.byteLength, SUCCESS_FIXED_BYTES + 4 * i);
  });
  return [fixed, ...result.replies, ...table];
}

/** A whole RESULT frame, header first, in pieces for one writev; past MAX_RESULT_FRAME_BYTES, a failure instead. */
export function resultFrame(taskId: number, result: TaskResult): Uint8Array[] {
  let pieces = encodeResult(result);
  let payloadBytes = pieces.reduce((n, piece) => n + piece.byteLength, 0);
  if (payloadBytes > MAX_RESULT_FRAME_BYTES) {
    const error = new PluginError(
      'RESOURCE_EXHAUSTED',
      `the results of one chunk of rows take ${payloadBytes} bytes, more than a sandbox sends back at once (${MAX_RESULT_FRAME_BYTES} bytes); return less per row`,
    );
    pieces = encodeResult({ ok: false, error: error.toData(), scriptMs: result.scriptMs, isolateRebuilt: false, timedOut: false });
    payloadBytes = pieces.reduce((n, piece) => n + piece.byteLength, 0);
  }
  return [frameHeader(Frame.RESULT, taskId, payloadBytes), ...pieces];
}

/**
 * Reads a RESULT payload from a sandbox, which is not trusted: every length is checked against the
 * payload before use, and anything that does not add up throws (the front ends that process). The
 * result owns exactly its bytes: a payload that is a view of a larger read is copied, so a result
 * kept for long (a table chunk until the call's last row) holds no one else's bytes.
 */
export function decodeResult(payload: Uint8Array): TaskResult {
  const buf = ownBytes(payload);
  if (buf.length === 0) throw new Error('empty RESULT frame');
  if (buf.readUInt8(0) === 0) {
    const failure = parseJson<FailureData>(buf.subarray(1));
    return { ok: false, ...failure };
  }
  if (buf.length < SUCCESS_FIXED_BYTES) throw new Error('RESULT frame shorter than its fixed fields');
  const replyCount = buf.readUInt32LE(14);
  const tableMetaBytes = buf.readUInt32LE(18);
  let at = SUCCESS_FIXED_BYTES + 4 * replyCount;
  if (at > buf.length) throw new Error('RESULT frame shorter than its reply lengths');
  const replies: Uint8Array[] = [];
  for (let i = 0; i < replyCount; i++) {
    const length = buf.readUInt32LE(SUCCESS_FIXED_BYTES + 4 * i);
    if (at + length > buf.length) throw new Error('RESULT frame shorter than its replies');
    replies.push(buf.subarray(at, at + length));
    at += length;
  }
  const rest = buf.subarray(at);
  if (tableMetaBytes === 0 && rest.length > 0) throw new Error('RESULT frame longer than its replies');
  return {
    ok: true,
    nondeterministic: buf.readUInt8(1) === 1,
    rowsOut: buf.readUInt32LE(2),
    scriptMs: buf.readDoubleLE(6),
    replies,
    table: tableMetaBytes === 0 ? null : decodeTable(rest, tableMetaBytes),
  };
}

/** The payload as a Buffer over memory of its own (a frame gathered by FrameReader already is). */
function ownBytes(payload: Uint8Array): Buffer {
  if (payload.buffer.byteLength - payload.byteLength <= HEADER_BYTES)
    return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const copy = Buffer.allocUnsafeSlow(payload.byteLength);
  copy.set(payload);
  return copy;
}

interface TableMeta {
  readonly shape: TableChunk['shape'];
  readonly keys: readonly string[];
  readonly rows: number;
  readonly cellBytes: number;
}

/** meta JSON | u32 end offset per cell | cell bytes | u8 kind per cell. */
function encodeTable(table: TableChunk): Uint8Array[] {
  const meta: TableMeta = { shape: table.shape, keys: table.keys, rows: table.rows, cellBytes: table.cells.byteLength };
  const ends = new Uint8Array(table.cellEnds.buffer, table.cellEnds.byteOffset, table.cellEnds.byteLength);
  return [Buffer.from(JSON.stringify(meta), 'utf8'), ends, table.cells, table.kinds];
}

function decodeTable(buf: Buffer, metaBytes: number): TableChunk {
  if (metaBytes > MAX_TABLE_META_BYTES || metaBytes > buf.length) throw new Error(`table meta of ${metaBytes} bytes`);
  const meta = checkTableMeta(parseJson<TableMeta>(buf.subarray(0, metaBytes)));
  const cellCount = meta.rows * meta.keys.length;
  if (buf.length !== metaBytes + 5 * cellCount + meta.cellBytes) throw new Error('table chunk sizes do not add up');
  let at = metaBytes;
  // Copied: a Uint32Array needs an aligned offset.
  const cellEnds = new Uint32Array(cellCount);
  new Uint8Array(cellEnds.buffer).set(buf.subarray(at, at + 4 * cellCount));
  at += 4 * cellCount;
  checkCellEnds(cellEnds, meta.cellBytes);
  const cells = buf.subarray(at, at + meta.cellBytes);
  at += meta.cellBytes;
  return { shape: meta.shape, keys: meta.keys, rows: meta.rows, cellEnds, cells, kinds: buf.subarray(at, at + cellCount) };
}

/** The sandbox bounds a table's names (workers/thread/output-check.ts); the front does not take its word for it. */
function checkTableMeta(meta: TableMeta): TableMeta {
  const { shape, keys, rows, cellBytes } = meta;
  const fine =
    (shape === 'array' || shape === 'object') &&
    Array.isArray(keys) &&
    keys.length <= MAX_TABLE_COLUMNS &&
    keys.every((key) => typeof key === 'string') &&
    keys.reduce((n, key) => n + Buffer.byteLength(key, 'utf8'), 0) <= MAX_TABLE_KEY_BYTES &&
    Number.isSafeInteger(rows) &&
    rows >= 0 &&
    Number.isSafeInteger(cellBytes) &&
    cellBytes >= 0;
  if (!fine) throw new Error('table meta out of bounds');
  return meta;
}

function checkCellEnds(cellEnds: Uint32Array, cellBytes: number): void {
  let previous = 0;
  for (const end of cellEnds) {
    if (end < previous) throw new Error('table cell ends out of order');
    previous = end;
  }
  if (previous !== cellBytes) throw new Error('table cell ends do not match its cells');
}
