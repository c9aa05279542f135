/**
 * RESULT payloads (src/contract/channel.ts carries them): what a sandbox thread sends back for a task.
 *
 * success = u8 1 | u8 flags (bit 0 nondeterministic, bits 1-2 the route) | u32 rowsOut | f64 scriptMs | u32 replies | u32 tableMetaBytes
 *           | u32 consoleBytes | u32 length per reply | replies | table (see encodeTable) | console JSON
 * failure = u8 0 | JSON FailureData (with the console, when the script wrote to it)
 *
 * The sandbox writes them, the front reads them; the front does not trust what it reads (a script
 * that escaped V8 would own the sandbox process), so every length is checked before use.
 */
import { Frame, frameHeader, HEADER_BYTES, MAX_RESULT_FRAME_BYTES, parseJson } from './channel';
import { type ConsoleOutput, checkConsole, hasConsole, MAX_CONSOLE_BYTES } from './console';
import { isRecord } from './control-frames';
import { type ErrorData, isErrorData, PluginError } from './errors';
import { MAX_TABLE_COLUMNS, MAX_TABLE_KEY_BYTES, TASK_ROUTES, type TableChunk, type TaskResult, type TaskRoute } from './task';

/**
 * A table chunk's meta JSON: MAX_TABLE_KEY_BYTES of names, each byte at most 6 once escaped (\u0001),
 * quotes and commas, and the other fields.
 */
const MAX_TABLE_META_BYTES = 6 * MAX_TABLE_KEY_BYTES + 3 * MAX_TABLE_COLUMNS + 1024;
/** Where each fixed field of a RESULT payload sits: u8 ok, then (success) the rest. */
const OK_AT = 0;
const FLAGS_AT = 1;
const NONDETERMINISTIC = 1;
/** The route's place in TASK_ROUTES + 1 (0: none), in bits 1-2 of the flags. */
const ROUTE_SHIFT = 1;
const ROUTE_MASK = 0b110;
const ROWS_OUT_AT = 2;
const SCRIPT_MS_AT = 6;
const REPLY_COUNT_AT = 14;
const TABLE_META_BYTES_AT = 18;
const CONSOLE_BYTES_AT = 22;
/** The u32 length of each reply follows the fixed fields. */
const SUCCESS_FIXED_BYTES = 26;
/** A console section's JSON: its text may be escaped up to six bytes a byte (\u0001). */
const MAX_CONSOLE_JSON_BYTES = 6 * MAX_CONSOLE_BYTES + 1024 * 1024;
const FAILURE = 0;
const SUCCESS = 1;

interface FailureData {
  readonly error: ErrorData;
  readonly scriptMs: number;
  readonly isolateRebuilt: boolean;
  readonly timedOut: boolean;
  readonly console?: ConsoleOutput;
  readonly route?: TaskRoute;
}

/** The pieces of a RESULT payload, to be written one after another (no join of the reply bytes). */
export function encodeResult(result: TaskResult): Uint8Array[] {
  if (!result.ok) {
    const failure: FailureData = {
      error: result.error,
      scriptMs: result.scriptMs,
      isolateRebuilt: result.isolateRebuilt,
      timedOut: result.timedOut,
      ...(hasConsole(result.console) ? { console: result.console } : {}),
      ...(result.route === undefined ? {} : { route: result.route }),
    };
    return [Uint8Array.of(FAILURE), Buffer.from(JSON.stringify(failure), 'utf8')];
  }
  const table = result.table === null ? [] : encodeTable(result.table);
  const consoleJson = hasConsole(result.console) ? [Buffer.from(JSON.stringify(result.console), 'utf8')] : [];
  const fixed = Buffer.allocUnsafe(SUCCESS_FIXED_BYTES + 4 * result.replies.length);
  fixed.writeUInt8(SUCCESS, OK_AT);
  const route = result.route === undefined ? 0 : TASK_ROUTES.indexOf(result.route) + 1;
  fixed.writeUInt8((result.nondeterministic ? NONDETERMINISTIC : 0) | (route << ROUTE_SHIFT), FLAGS_AT);
  fixed.writeUInt32LE(result.rowsOut, ROWS_OUT_AT);
  fixed.writeDoubleLE(result.scriptMs, SCRIPT_MS_AT);
  fixed.writeUInt32LE(result.replies.length, REPLY_COUNT_AT);
  fixed.writeUInt32LE(table[0]?.byteLength ?? 0, TABLE_META_BYTES_AT);
  fixed.writeUInt32LE(consoleJson[0]?.byteLength ?? 0, CONSOLE_BYTES_AT);
  result.replies.forEach((reply, i) => {
    fixed.writeUInt32LE(reply.byteLength, SUCCESS_FIXED_BYTES + 4 * i);
  });
  return [fixed, ...result.replies, ...table, ...consoleJson];
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
  const ok = buf.readUInt8(OK_AT);
  if (ok === FAILURE) return { ok: false, ...checkFailure(parseJson(buf.subarray(OK_AT + 1))) };
  if (ok !== SUCCESS) throw new Error(`RESULT frame of unknown outcome ${ok}`);
  if (buf.length < SUCCESS_FIXED_BYTES) throw new Error('RESULT frame shorter than its fixed fields');
  const replyCount = buf.readUInt32LE(REPLY_COUNT_AT);
  const tableMetaBytes = buf.readUInt32LE(TABLE_META_BYTES_AT);
  const consoleBytes = buf.readUInt32LE(CONSOLE_BYTES_AT);
  let at = SUCCESS_FIXED_BYTES + 4 * replyCount;
  if (at > buf.length) throw new Error('RESULT frame shorter than its reply lengths');
  if (consoleBytes > MAX_CONSOLE_JSON_BYTES || at + consoleBytes > buf.length) throw new Error('RESULT frame shorter than its console');
  const consoleAt = buf.length - consoleBytes;
  const replies: Uint8Array[] = [];
  for (let i = 0; i < replyCount; i++) {
    const length = buf.readUInt32LE(SUCCESS_FIXED_BYTES + 4 * i);
    if (at + length > consoleAt) throw new Error('RESULT frame shorter than its replies');
    replies.push(buf.subarray(at, at + length));
    at += length;
  }
  const rest = buf.subarray(at, consoleAt);
  if (tableMetaBytes === 0 && rest.length > 0) throw new Error('RESULT frame longer than its replies');
  const console = consoleBytes === 0 ? undefined : checkConsole(parseJson(buf.subarray(consoleAt)));
  const flags = buf.readUInt8(FLAGS_AT);
  const route = TASK_ROUTES[((flags & ROUTE_MASK) >> ROUTE_SHIFT) - 1];
  return {
    ok: true,
    nondeterministic: (flags & NONDETERMINISTIC) !== 0,
    rowsOut: buf.readUInt32LE(ROWS_OUT_AT),
    scriptMs: checkScriptMs(buf.readDoubleLE(SCRIPT_MS_AT)),
    replies,
    table: tableMetaBytes === 0 ? null : decodeTable(rest, tableMetaBytes),
    ...(console === undefined ? {} : { console }),
    ...(route === undefined ? {} : { route }),
  };
}

/**
 * A failure's JSON, field by field: its error becomes the client's status and message
 * (PluginError.fromData), so a code outside the closed set or a message that is not text is refused.
 */
function checkFailure(value: unknown): FailureData {
  if (!isRecord(value)) throw new Error('RESULT failure is not an object');
  const { error, scriptMs, isolateRebuilt, timedOut, console, route } = value;
  if (!isErrorData(error)) throw new Error('RESULT failure without a known error code and message');
  if (typeof scriptMs !== 'number') throw new Error('RESULT failure without its script time');
  if (typeof isolateRebuilt !== 'boolean' || typeof timedOut !== 'boolean') throw new Error('RESULT failure without its flags');
  if (route !== undefined && !TASK_ROUTES.includes(route as TaskRoute)) throw new Error('RESULT failure with an unknown route');
  const failure = { error: { code: error.code, message: error.message }, scriptMs: checkScriptMs(scriptMs), isolateRebuilt, timedOut };
  return {
    ...failure,
    ...(console === undefined ? {} : { console: checkConsole(console) }),
    ...(route === undefined ? {} : { route: route as TaskRoute }),
  };
}

/** Script time is added to the call's budget: NaN, a negative or an infinite time would corrupt it. */
function checkScriptMs(scriptMs: number): number {
  if (!Number.isFinite(scriptMs) || scriptMs < 0) throw new Error(`RESULT with a script time of ${scriptMs} ms`);
  return scriptMs;
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
  const meta = checkTableMeta(parseJson(buf.subarray(0, metaBytes)));
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
function checkTableMeta(meta: unknown): TableMeta {
  if (!isRecord(meta)) throw new Error('table meta out of bounds');
  const { shape, keys, rows, cellBytes } = meta;
  if ((shape !== 'array' && shape !== 'object') || !isNameList(keys) || !isCount(rows) || !isCount(cellBytes))
    throw new Error('table meta out of bounds');
  return { shape, keys, rows, cellBytes };
}

function isNameList(keys: unknown): keys is string[] {
  return (
    Array.isArray(keys) &&
    keys.length <= MAX_TABLE_COLUMNS &&
    keys.every((key) => typeof key === 'string') &&
    keys.reduce((n: number, key: string) => n + Buffer.byteLength(key, 'utf8'), 0) <= MAX_TABLE_KEY_BYTES
  );
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function checkCellEnds(cellEnds: Uint32Array, cellBytes: number): void {
  let previous = 0;
  for (const end of cellEnds) {
    if (end < previous) throw new Error('table cell ends out of order');
    previous = end;
  }
  if (previous !== cellBytes) throw new Error('table cell ends do not match its cells');
}
