/**
 * The sandbox process's thread boundary: what its main thread posts to a piscina thread for one task
 * (EvaluateTask) and the shared-memory cells they both watch. The front never sees these: it sends a
 * TaskFrame (src/contract/channel.ts), which workers/sandbox-main.ts turns into an EvaluateTask with
 * the call's spec and budget cell it keeps.
 */
import type { ScriptSpec } from '../src/contract/task';

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
  /**
   * Int32[CONTROL_STATE, CONTROL_TIMEOUT_MS], written by the thread, watched by its sandbox process;
   * Int32[CONTROL_STOP], set by the sandbox process when the task's call ended (workers/thread-stop.ts).
   */
  readonly control: SharedArrayBuffer;
  readonly maxReplyBytes: number;
  /** The process's current library set (workers/library-cell.ts): shared, so a task carries no code. */
  readonly libraries: SharedArrayBuffer | null;
  /** The main thread ran it first and stopped it at its budget (workers/fast-path.ts): its route is 'moved'. */
  readonly moved?: boolean;
}

export const BUDGET_SPENT_MS = 0;
export const CONTROL_STATE = 0;
export const CONTROL_TIMEOUT_MS = 1;
/**
 * Non-zero once the task must not finish: STOP_CALL_ENDED (its call ended) or STOP_YIELD (the front
 * asked it back, to run it again later); the task is not started, or is stopped where it runs.
 */
export const CONTROL_STOP = 2;
export const STOP_CALL_ENDED = 1;
export const STOP_YIELD = 2;
export const TASK_QUEUED = 0;
export const TASK_RUNNING = 1;
export const TASK_DONE = 2;
/** V8 gave up on the task's isolate (isolated-vm's onCatastrophicError): its thread is lost. */
export const TASK_FATAL = 3;

/** A fresh control cell for one task. */
export function newControl(): SharedArrayBuffer {
  return new SharedArrayBuffer(3 * Int32Array.BYTES_PER_ELEMENT);
}

/** A fresh budget cell for one call. */
export function newBudget(): SharedArrayBuffer {
  return new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
}
