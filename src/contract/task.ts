/**
 * The contract between the front and the sandboxes: what a call asks (ScriptSpec), what one task of
 * rows is inside a sandbox process (EvaluateTask, posted to a piscina thread) and what comes back
 * (TaskResult). Plain data only; errors travel as ErrorData, never as thrown objects.
 */
import type { ErrorData } from './errors';

/** qlik.sse.DataType */
export const DataType = { STRING: 0, NUMERIC: 1, DUAL: 2 } as const;
export type DataType = (typeof DataType)[keyof typeof DataType];

/** qlik.sse.FunctionType */
export const FunctionType = { SCALAR: 0, AGGREGATION: 1, TENSOR: 2 } as const;
export type FunctionType = (typeof FunctionType)[keyof typeof FunctionType];

/** rows: the script runs once per row; aggregate: once over all rows; once: no parameters, once. */
export type EvaluationMode = 'rows' | 'aggregate' | 'once';

export interface ScriptSpec {
  readonly script: string;
  readonly paramTypes: readonly DataType[];
  /** The identifier each parameter is bound to inside the script, or '' when it is only in args. */
  readonly boundNames: readonly string[];
  readonly returnType: DataType;
  readonly mode: EvaluationMode;
  /** TENSOR calls may answer with a table (every row an array, or every row a plain object). */
  readonly tableAllowed: boolean;
  /**
   * Plugin functions (src/functions/): `script` is an expression whose value is the per-row function
   * itself, `(args) => …`, evaluated once per call context, instead of an expression or body run per row.
   */
  readonly factory?: boolean;
  /**
   * With factory: `script` is a plugin function file's script, shared by its functions, and its value
   * is a selector; called with `entry` it makes this function's per-row function.
   */
  readonly entry?: number;
}

export interface EvaluateTask {
  /** The front's id of the task: its thread writes the RESULT frame itself (workers/result-writer.ts). */
  readonly taskId: number;
  /** Unique per call within the front: a thread may keep a call's context for its next chunk. */
  readonly callId: number;
  /** Calls with the same key (app, user and script: src/calls/context-key.ts) may reuse a context in turn. */
  readonly contextKey: string;
  readonly spec: ScriptSpec;
  /** Serialised BundledRows messages; their concatenation is itself one BundledRows. */
  readonly bundles: readonly Uint8Array[];
  readonly rows: number;
  /** Index of this task's first row within the call, for error messages. */
  readonly firstRow: number;
  /** Script time of the whole call (SSE_SCRIPT_TIMEOUT_MS); what is left is read from `budget` at start. */
  readonly callTimeoutMs: number;
  /** Int32[BUDGET_SPENT_MS]: script time the call's tasks have used, shared by all of them. */
  readonly budget: SharedArrayBuffer;
  /** Int32[CONTROL_STATE, CONTROL_TIMEOUT_MS], written by the thread, watched by its sandbox process. */
  readonly control: SharedArrayBuffer;
  readonly maxReplyBytes: number;
}

export const BUDGET_SPENT_MS = 0;
export const CONTROL_STATE = 0;
export const CONTROL_TIMEOUT_MS = 1;
export const TASK_QUEUED = 0;
export const TASK_RUNNING = 1;
export const TASK_DONE = 2;
/** V8 gave up on the task's isolate (isolated-vm's onCatastrophicError): its thread is lost. */
export const TASK_FATAL = 3;

/** A fresh control cell for one task. */
export function newControl(): SharedArrayBuffer {
  return new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT);
}

/** A fresh budget cell for one call. */
export function newBudget(): SharedArrayBuffer {
  return new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
}

/**
 * The most columns, and UTF-8 bytes of column names together, a table result may have. A Qlik engine
 * reads at most 815 columns, or 5,703 bytes of one name, in the table header (src/calls/table-header.ts:
 * 7,680 bytes of base64 description), so nothing Qlik could read is refused; the sandbox refuses a
 * wider chunk before sending it (workers/thread/output-check.ts) and the front the union of a call's chunks
 * (src/calls/table.ts), so neither ever holds more names than this for a call.
 */
export const MAX_TABLE_COLUMNS = 1_024;
export const MAX_TABLE_KEY_BYTES = 8_192;

export const CELL_NULL = 0;
export const CELL_NUMBER = 1;
export const CELL_TEXT = 2;

/**
 * The table-shaped rows of one task, already encoded: each cell is a ready Row.duals field entry
 * (tag, length, Dual), column by column, so the front joins chunks by copying bytes, without
 * decoding a cell or holding a JavaScript string per cell.
 */
export interface TableChunk {
  readonly shape: 'array' | 'object';
  /** The chunk's own columns: object keys in first-seen order, or Field1..FieldN for arrays. */
  readonly keys: readonly string[];
  /** Rows of the chunk, whether or not they have a cell ({} and [] are rows of nulls). */
  readonly rows: number;
  /** Encoded cells, column-major: cell (c, r) is number c * rows + r. */
  readonly cells: Uint8Array;
  /** End offset in `cells` of each cell. */
  readonly cellEnds: Uint32Array;
  /** CELL_NULL, CELL_NUMBER or CELL_TEXT per cell, for the field types. */
  readonly kinds: Uint8Array;
}

export interface TaskSuccess {
  readonly ok: true;
  /** Encoded BundledRows replies, each within maxReplyBytes. */
  readonly replies: readonly Uint8Array[];
  readonly rowsOut: number;
  readonly nondeterministic: boolean;
  /** Present when every row of this chunk was table-shaped. */
  readonly table: TableChunk | null;
  readonly scriptMs: number;
}

export interface TaskFailure {
  readonly ok: false;
  readonly error: ErrorData;
  readonly scriptMs: number;
  /** The sandbox hit its memory limit and was rebuilt. */
  readonly isolateRebuilt: boolean;
  readonly timedOut: boolean;
}

export type TaskResult = TaskSuccess | TaskFailure;
