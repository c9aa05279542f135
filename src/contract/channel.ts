/**
 * The channel between the gRPC front and a sandbox process: length-prefixed binary frames over the
 * child's fd 3 (a Unix socket pair). Rows travel as the raw BundledRows bytes the front cut at row
 * boundaries, replies as the encoded BundledRows messages the sandbox made: neither side parses,
 * clones or re-encodes the other's payload. Only small control data (a call's script spec, a
 * failure, a retirement notice) is JSON.
 *
 * frame = u32 payload length | u8 kind | u32 id | payload            (little-endian)
 *
 * front -> sandbox  OPEN_CALL  id = call   payload = JSON CallSpec
 *                   TASK       id = task   payload = u32 call, u32 rows, u32 firstRow, u32 spentMs, u32 flags, rows
 *                   CLOSE_CALL id = call   (its spec and contexts may go; a task of it still running is stopped)
 *                   YIELD      id = task   (the task, if running, stops and answers ABORTED: the front runs it again later)
 *                   LIBRARIES  id = 0      payload = JSON LibraryBundle (src/contract/libraries.ts), at start and reloads
 * sandbox -> front  READY      id = 0      payload = JSON { threads }
 *                   RESULT     id = task   payload = encodeResult()
 *                   RETIRE     id = 0      payload = JSON Retirement
 *                   HELD       id = task   (none: native work holds the main thread past the fast path's budget)
 *
 * RESULT payloads are coded in src/contract/result-frame.ts, READY and RETIRE payloads in
 * src/contract/control-frames.ts; the front checks each before use. RESULT frames travel on a second socket pair, the child's fd 4, written by the sandbox threads
 * themselves (workers/result-writer.ts): a result crosses no thread on its way back, so a one-row
 * call pays one write and one read each way. The sandbox's main thread writes a RESULT on fd 3 only
 * for a task its thread could not answer (the thread died, or could not write).
 */
import type { ScriptSpec } from './task';

export const Frame = {
  OPEN_CALL: 1,
  TASK: 2,
  CLOSE_CALL: 3,
  LIBRARIES: 4,
  YIELD: 5,
  READY: 16,
  RESULT: 17,
  RETIRE: 18,
  HELD: 19,
} as const;
export type FrameKind = (typeof Frame)[keyof typeof Frame];

/** The child's descriptors: control frames both ways, and results from the threads. */
export const CHANNEL_FD = 3;
export const RESULTS_FD = 4;

export const HEADER_BYTES = 9;
/** Where each header field sits in a frame. */
const LENGTH_AT = 0;
const KIND_AT = 4;
const ID_AT = 5;
/** Where each fixed field of a TASK payload sits; the row bytes follow them. */
const TASK_CALL_AT = 0;
const TASK_ROWS_AT = 4;
const TASK_FIRST_ROW_AT = 8;
const TASK_SPENT_MS_AT = 12;
const TASK_FLAGS_AT = 16;
const TASK_FIELDS_BYTES = 20;
/** A TASK flag: the task must not run on the sandbox's main thread (the front's fast-path pause, src/sandboxes/fast-path-gate.ts). */
const TASK_POOL_ONLY = 1;
/** No frame from the front is larger: a task is at most a few MiB of rows (an aggregation: the memory limit). */
export const MAX_FRAME_BYTES = 1024 * 1024 * 1024;
/**
 * No RESULT frame is larger: a sandbox sends a failure instead of a larger result (resultFrame), and
 * the front refuses a larger one before it allocates anything (a sandbox is not trusted).
 */
export const MAX_RESULT_FRAME_BYTES = 256 * 1024 * 1024;
/** READY and RETIRE: small JSON. */
const MAX_CONTROL_FRAME_BYTES = 64 * 1024;
/**
 * The most calls a sandbox process keeps open (their specs) at once: the front never has more open
 * in all processes together (src/sandboxes/pool.ts refuses a newcomer as busy), and a sandbox told to
 * open one more treats it as the front's protocol error (workers/sandbox-main.ts), never evicting one.
 */
export const MAX_OPEN_CALLS = 4_096;

/** What a sandbox process needs to know of a call once, before its first task. */
export interface CallSpec {
  readonly spec: ScriptSpec;
  /** Calls with the same key may reuse a sandbox context in turn (src/calls/context-key.ts). */
  readonly contextKey: string;
  readonly callTimeoutMs: number;
  readonly maxReplyBytes: number;
}

export interface TaskFrame {
  readonly callId: number;
  readonly rows: number;
  readonly firstRow: number;
  /** Script time the call had used, as the front knew it when it sent this task. */
  readonly spentMs: number;
  /** The front says it must run on a pool thread, never on the main thread's fast path (workers/fast-path.ts). */
  readonly poolOnly: boolean;
  readonly bytes: Uint8Array;
}

/**
 * Script time a small task may take on a sandbox process's main thread before it moves to a pool
 * thread (workers/fast-path.ts): far above a LOAD row's ~0.2 ms, short enough that the channel's
 * other tasks wait little behind it.
 */
export const DEFAULT_FAST_PATH_MS = 10;

/**
 * How long no task takes the fast path after native work held a main thread heldMs: 20 times as long,
 * at least 10 s, so such work holds a main thread at most about 1/21 of the time. The sandbox pauses
 * its own fast path so after a hold that ended (workers/fast-path.ts); the front pauses every process's
 * after a hold it was told of or a process that died with tasks (src/sandboxes/fast-path-gate.ts),
 * which a replacement process would not know of.
 */
export function fastPathPauseMs(heldMs: number): number {
  return Math.max(FAST_PATH_MIN_PAUSE_MS, heldMs * FAST_PATH_PAUSE_PER_HELD_MS);
}

const FAST_PATH_MIN_PAUSE_MS = 10_000;
const FAST_PATH_PAUSE_PER_HELD_MS = 20;

/** What a sandbox process is started with (its one argument, JSON): the front writes it, the process reads it. */
export interface SandboxSettings {
  readonly threads: number;
  readonly memoryLimitMb: number;
  readonly scriptTimeoutMs: number;
  /** Niceness the process gives all its threads before any script runs (SSE_SANDBOX_NICE). */
  readonly nice: number;
  /** Script time a small task may take on the process's main thread before it moves to a pool thread; 0: never there (SSE_FAST_PATH_MS). */
  readonly fastPathMs?: number;
  /** Calls the process keeps open at once; MAX_OPEN_CALLS unless a test makes it small. */
  readonly maxOpenCalls?: number;
  /** Console lines and bytes a call keeps (SSE_CONSOLE_LINES, SSE_CONSOLE_BYTES): the rest is counted. 0 when not given. */
  readonly consoleLines?: number;
  readonly consoleBytes?: number;
}

export interface ReceivedFrame {
  readonly kind: FrameKind;
  readonly id: number;
  readonly payload: Uint8Array;
  /** The payload's ArrayBuffer holds this frame alone (it may be moved to a thread). */
  readonly owned: boolean;
}

export function frameHeader(kind: FrameKind, id: number, payloadBytes: number): Buffer {
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  writeHeader(header, kind, id, payloadBytes);
  return header;
}

function writeHeader(target: Buffer, kind: FrameKind, id: number, payloadBytes: number): void {
  target.writeUInt32LE(payloadBytes, LENGTH_AT);
  target.writeUInt8(kind, KIND_AT);
  target.writeUInt32LE(id >>> 0, ID_AT);
}

/** A whole frame with a JSON payload. */
export function jsonFrame(kind: FrameKind, id: number, value: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  return Buffer.concat([frameHeader(kind, id, body.length), body]);
}

/**
 * A call's OPEN_CALL frame. Calls prepared from the same headers share their spec object
 * (src/calls/prepared-scripts.ts), so its JSON is made once for all of them, not once a call.
 */
export function openCallFrame(callId: number, call: CallSpec): Buffer[] {
  let kept = openCallBodies.get(call.spec);
  if (
    kept === undefined ||
    kept.contextKey !== call.contextKey ||
    kept.callTimeoutMs !== call.callTimeoutMs ||
    kept.maxReplyBytes !== call.maxReplyBytes
  ) {
    kept = { ...call, body: call.spec.entry === undefined ? Buffer.from(JSON.stringify(call), 'utf8') : fileScriptBody(call) };
    openCallBodies.set(call.spec, kept);
  }
  if (Buffer.isBuffer(kept.body)) return [frameHeader(Frame.OPEN_CALL, callId, kept.body.length), kept.body];
  const script = fileScriptJson(call.spec.script);
  const [head, tail] = kept.body;
  return [frameHeader(Frame.OPEN_CALL, callId, head.length + script.length + tail.length), head, script, tail];
}

const openCallBodies = new WeakMap<ScriptSpec, CallSpec & { readonly body: Buffer | readonly [Buffer, Buffer] }>();

/**
 * A plugin function's spec: the JSON around its script, which is its file's, shared by all the
 * file's functions (up to 1 MiB): kept once per file (fileScriptJson), not once per function.
 */
function fileScriptBody(call: CallSpec): [Buffer, Buffer] {
  const { script: _script, ...rest } = call.spec;
  const { spec: _spec, ...others } = call;
  const tail = `,${JSON.stringify(rest).slice(1)},${JSON.stringify(others).slice(1)}`;
  return [Buffer.from('{"spec":{"script":', 'utf8'), Buffer.from(tail, 'utf8')];
}

/** The JSON of the few file scripts in use lately (the key is the spec's own string: hashed once). */
const fileScriptJsons = new Map<string, Buffer>();
const FILE_SCRIPTS_KEPT = 4;

function fileScriptJson(script: string): Buffer {
  let json = fileScriptJsons.get(script);
  if (json === undefined) json = Buffer.from(JSON.stringify(script), 'utf8');
  else fileScriptJsons.delete(script);
  fileScriptJsons.set(script, json);
  for (const [oldest] of fileScriptJsons) {
    if (fileScriptJsons.size <= FILE_SCRIPTS_KEPT) break;
    fileScriptJsons.delete(oldest);
  }
  return json;
}

/** A JSON payload, not yet checked: what the other side sent is for the caller to validate. */
export function parseJson(payload: Uint8Array): unknown {
  return JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
}

/** The header and fixed fields of a TASK frame; the row bytes follow it on the channel unchanged. */
export function taskFrameHead(taskId: number, task: Omit<TaskFrame, 'bytes'>, rowBytes: number): Buffer {
  const head = Buffer.allocUnsafe(HEADER_BYTES + TASK_FIELDS_BYTES);
  writeHeader(head, Frame.TASK, taskId, TASK_FIELDS_BYTES + rowBytes);
  head.writeUInt32LE(task.callId >>> 0, HEADER_BYTES + TASK_CALL_AT);
  head.writeUInt32LE(task.rows >>> 0, HEADER_BYTES + TASK_ROWS_AT);
  head.writeUInt32LE(task.firstRow >>> 0, HEADER_BYTES + TASK_FIRST_ROW_AT);
  head.writeUInt32LE(Math.min(0xffffffff, Math.max(0, Math.ceil(task.spentMs))), HEADER_BYTES + TASK_SPENT_MS_AT);
  head.writeUInt32LE(task.poolOnly ? TASK_POOL_ONLY : 0, HEADER_BYTES + TASK_FLAGS_AT);
  return head;
}

export function readTaskFrame(payload: Uint8Array): TaskFrame {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return {
    callId: view.getUint32(TASK_CALL_AT, true),
    rows: view.getUint32(TASK_ROWS_AT, true),
    firstRow: view.getUint32(TASK_FIRST_ROW_AT, true),
    spentMs: view.getUint32(TASK_SPENT_MS_AT, true),
    poolOnly: (view.getUint32(TASK_FLAGS_AT, true) & TASK_POOL_ONLY) !== 0,
    bytes: payload.subarray(TASK_FIELDS_BYTES),
  };
}

/**
 * Collects stream chunks and hands out whole frames. A frame inside one chunk is a view of it (no
 * copy). A frame that spans chunks is gathered, as its chunks arrive, into a buffer of its own
 * allocated once its length is known: one copy, and that frame owns its memory (`owned`), so the
 * sandbox process can move it to a thread without copying it again.
 */
export class FrameReader {
  /** The start of a frame whose header is not complete yet (fewer than HEADER_BYTES). */
  private partial: Buffer | undefined;
  /** A frame larger than what has arrived: its own buffer, and how much of it is filled. */
  private gathering: { readonly frame: Buffer; filled: number } | undefined;

  constructor(private readonly onFrame: (frame: ReceivedFrame) => void) {}

  push(chunk: Buffer): void {
    let data = this.partial ? Buffer.concat([this.partial, chunk]) : chunk;
    this.partial = undefined;
    if (this.gathering) data = this.gather(data);
    let at = 0;
    while (data.length - at >= HEADER_BYTES) {
      const payloadBytes = data.readUInt32LE(at + LENGTH_AT);
      if (payloadBytes > maxPayloadBytes(kindAt(data, at)))
        throw new Error(`channel frame of ${payloadBytes} bytes is larger than any the other side sends`);
      const frameBytes = HEADER_BYTES + payloadBytes;
      if (data.length - at < frameBytes) {
        this.gathering = { frame: Buffer.allocUnsafeSlow(frameBytes), filled: 0 };
        this.gather(data.subarray(at));
        return;
      }
      this.emit(data.subarray(at, at + frameBytes), false);
      at += frameBytes;
    }
    if (at < data.length) this.partial = Buffer.from(data.subarray(at));
  }

  /** Copies what belongs to the frame being gathered; returns what is left of `data` after it. */
  private gather(data: Buffer): Buffer {
    const gathering = this.gathering as { readonly frame: Buffer; filled: number };
    const bytes = Math.min(data.length, gathering.frame.length - gathering.filled);
    data.copy(gathering.frame, gathering.filled, 0, bytes);
    gathering.filled += bytes;
    if (gathering.filled === gathering.frame.length) {
      this.gathering = undefined;
      this.emit(gathering.frame, true);
    }
    return data.subarray(bytes);
  }

  private emit(frame: Buffer, owned: boolean): void {
    this.onFrame({ kind: kindAt(frame, 0), id: frame.readUInt32LE(ID_AT), payload: frame.subarray(HEADER_BYTES), owned });
  }
}

const FRAME_KINDS: ReadonlySet<number> = new Set(Object.values(Frame));

/** The kind of the frame whose header starts at `at`; an unknown kind is refused before its buffer is allocated. */
function kindAt(data: Buffer, at: number): FrameKind {
  const kind = data.readUInt8(at + KIND_AT);
  if (!FRAME_KINDS.has(kind)) throw new Error(`unknown channel frame kind ${kind}`);
  return kind as FrameKind;
}

function maxPayloadBytes(kind: FrameKind): number {
  switch (kind) {
    case Frame.OPEN_CALL:
    case Frame.TASK:
    case Frame.CLOSE_CALL:
    case Frame.LIBRARIES:
      return MAX_FRAME_BYTES;
    case Frame.RESULT:
      return MAX_RESULT_FRAME_BYTES;
    case Frame.READY:
    case Frame.RETIRE:
      return MAX_CONTROL_FRAME_BYTES;
    case Frame.HELD:
    case Frame.YIELD:
      return 0;
  }
}
