/**
 * The contract between the front and the sandboxes: what a call asks (ScriptSpec) and what comes
 * back for a task (TaskResult). Plain data only; errors travel as ErrorData, never as thrown objects.
 * How a task travels is the channel's (TaskFrame, src/contract/channel.ts); what a sandbox thread
 * is given for it is the sandbox's own (EvaluateTask, workers/thread-task.ts).
 */
import type { ConsoleOutput } from './console';
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

/**
 * Where a sandbox ran a task: its process's main thread (workers/fast-path.ts), a pool thread, or a
 * pool thread after the main thread stopped it at its budget ('moved'); absent for a result no thread
 * made (an unknown call, a stuck thread). The front counts them (sse_sandbox_tasks_total).
 */
export type TaskRoute = 'main' | 'pool' | 'moved';
export const TASK_ROUTES: readonly TaskRoute[] = ['main', 'pool', 'moved'];

export interface TaskSuccess {
  readonly ok: true;
  /** Encoded BundledRows replies, each within maxReplyBytes. */
  readonly replies: readonly Uint8Array[];
  readonly rowsOut: number;
  readonly nondeterministic: boolean;
  /** Present when every row of this chunk was table-shaped. */
  readonly table: TableChunk | null;
  readonly scriptMs: number;
  /** What the script wrote to its console in this task, when it wrote anything. */
  readonly console?: ConsoleOutput;
  readonly route?: TaskRoute;
}

export interface TaskFailure {
  readonly ok: false;
  readonly error: ErrorData;
  readonly scriptMs: number;
  /** The sandbox hit its memory limit and was rebuilt. */
  readonly isolateRebuilt: boolean;
  readonly timedOut: boolean;
  /** What the script wrote before it failed: the lines that explain the failure. */
  readonly console?: ConsoleOutput;
  readonly route?: TaskRoute;
}

export type TaskResult = TaskSuccess | TaskFailure;
