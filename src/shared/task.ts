/**
 * The contract between the main thread and the sandbox workers: plain data only, so it crosses
 * postMessage unchanged. Errors travel as ErrorData, never as thrown objects.
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
}

export interface EvaluateTask {
  /** Unique per call within the process: a worker may keep a call's context for its next chunk. */
  readonly callId: number;
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
  /** Int32[CONTROL_STATE, CONTROL_TIMEOUT_MS], written by the worker, watched by the pool. */
  readonly control: SharedArrayBuffer;
  readonly maxReplyBytes: number;
}

export const BUDGET_SPENT_MS = 0;
export const CONTROL_STATE = 0;
export const CONTROL_TIMEOUT_MS = 1;
export const TASK_QUEUED = 0;
export const TASK_RUNNING = 1;
export const TASK_DONE = 2;

/** A fresh control cell for one task. */
export function newControl(): SharedArrayBuffer {
  return new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT);
}

/** A fresh budget cell for one call. */
export function newBudget(): SharedArrayBuffer {
  return new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
}

/** One column of a table-shaped chunk: a cell per row. */
export interface TableColumn {
  readonly nums: Float64Array;
  readonly strs: readonly string[];
  /** CELL_NULL, CELL_NUMBER or CELL_TEXT per row. */
  readonly kinds: Uint8Array;
}

export const CELL_NULL = 0;
export const CELL_NUMBER = 1;
export const CELL_TEXT = 2;

export interface TableChunk {
  readonly shape: 'array' | 'object';
  /** Object keys in first-seen order, or Field1..FieldN for arrays. */
  readonly keys: readonly string[];
  readonly columns: readonly TableColumn[];
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
