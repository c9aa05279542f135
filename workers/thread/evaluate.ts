/**
 * Piscina thread entry point, inside a sandbox process: decodes a task's rows into columns, runs the
 * sandbox over them, encodes the replies (and table cells). Every failure is turned into data
 * (TaskFailure); nothing is thrown across the thread. The task's control cell tells the sandbox
 * process when it started, with what time limit, and whether V8 gave up on the isolate
 * (workers/thread-pool.ts).
 */
import { workerData } from 'node:worker_threads';

import { move, transferableSymbol, valueSymbol } from 'piscina';

import { oneLine, PluginError } from '../../src/contract/errors';
import { memoryLimitError, timeLimitError } from '../../src/contract/limit-errors';
import { encodeCells, encodeNumbers, encodeUtf8 } from '../../src/contract/replies';
import { type Column, decodeColumns } from '../../src/contract/rows';
import {
  DataType,
  MAX_TABLE_COLUMNS,
  MAX_TABLE_KEY_BYTES,
  type ScriptSpec,
  type TaskResult,
  type TaskSuccess,
} from '../../src/contract/task';
import { readLibraryCell } from '../library-cell';
import { ResultWriter } from '../result-writer';
import { threadActivity } from '../thread-activity';
import type { ThreadData } from '../thread-pool';
import { BUDGET_SPENT_MS, CONTROL_STATE, CONTROL_TIMEOUT_MS, type EvaluateTask, TASK_DONE, TASK_FATAL, TASK_RUNNING } from '../thread-task';
import { consoleOutput } from './console-output';
import type { RuntimeInput, RuntimeOutput } from './isolate-runtime';
import { checkOutput } from './output-check';
import { Sandbox } from './sandbox';
import { encodeTableChunk } from './table-cells';

/** A table chunk's encoded cells may take up to the memory limit (the front bounds the joined table again). */
function tableBytes(): number {
  return limits.memoryLimitMb * 1024 * 1024;
}

const limits = workerData as ThreadData;
const results = new ResultWriter(limits.resultLock);
const activity = threadActivity(limits.activity);
let sandbox: Sandbox | undefined;
/** The control cell of the task running now: onCatastrophicError marks it (see newSandbox). */
let runningControl: Int32Array | undefined;

const MODE = { rows: 0, aggregate: 1, once: 2 } as const;
const ALLOCATION_REFUSED = /^(Array buffer allocation failed|Invalid string length|Invalid typed array length)/;

/** Builds the isolate ahead of the first task, so its ~10 ms are not billed to a script. */
export function warmUp(): void {
  sandbox ??= newSandbox();
}

/**
 * isolated-vm calls onCatastrophicError when V8 has lost control of an isolate (isolated-vm #107,
 * #527); its README says to end the process. Marking the task lets the sandbox process name it as
 * the culprit and retire (workers/thread-pool.ts). In the bombs measured the thread hung before the
 * callback ran: V8's report on stderr is what the front acts on (src/sandboxes/sandbox-process.ts).
 */
function newSandbox(): Sandbox {
  return new Sandbox(
    limits,
    (message) => {
      // "Script failed to terminate": native work (a huge regex compile) outran the time limit; the
      // watchdog calls that stuck, a time-limit failure, not V8 giving up on memory.
      if (runningControl && !/failed to terminate/i.test(message)) Atomics.store(runningControl, CONTROL_STATE, TASK_FATAL);
    },
    activity,
  );
}

/**
 * Runs one task and writes its result to the front; returns null once written, or the result for
 * the sandbox's main thread to send when this thread could not.
 */
export default function evaluate(task: EvaluateTask): TaskResult | null {
  const control = new Int32Array(task.control);
  const spent = new Int32Array(task.budget);
  // The call's budget is read now, not when the task was queued: its other tasks may have used it.
  const timeoutMs = task.callTimeoutMs - Atomics.load(spent, BUDGET_SPENT_MS);
  Atomics.store(control, CONTROL_TIMEOUT_MS, Math.max(0, timeoutMs));
  Atomics.store(control, CONTROL_STATE, TASK_RUNNING);
  runningControl = control;
  const result = timeoutMs > 0 ? evaluateWithin(task, timeoutMs) : timedOut(task.callTimeoutMs);
  runningControl = undefined;
  Atomics.add(spent, BUDGET_SPENT_MS, Math.ceil(result.scriptMs));
  Atomics.store(control, CONTROL_STATE, TASK_DONE);
  if (results.write(task.taskId, result)) return null;
  return result.ok ? (movable(result) as unknown as TaskResult) : result;
}

function timedOut(callTimeoutMs: number): TaskResult {
  return { ok: false, error: timeLimitError(callTimeoutMs).toData(), scriptMs: 0, isolateRebuilt: false, timedOut: true };
}

/** Hands the reply buffers to the sandbox process's main thread without copying them (each owns its ArrayBuffer). */
function movable(result: TaskSuccess): unknown {
  const buffers = new Set<ArrayBuffer>();
  for (const reply of result.replies) buffers.add(reply.buffer as ArrayBuffer);
  if (result.table) {
    buffers.add(result.table.cells.buffer as ArrayBuffer);
    buffers.add(result.table.cellEnds.buffer as ArrayBuffer);
    buffers.add(result.table.kinds.buffer as ArrayBuffer);
  }
  return move({ [transferableSymbol]: [...buffers], [valueSymbol]: result });
}

/** The library set version this thread's sandbox has, from the process's cell (workers/library-cell.ts). */
let librariesVersion = 0;

function syncLibraries(cell: SharedArrayBuffer | null, target: Sandbox): void {
  const update = readLibraryCell(cell, librariesVersion);
  if (update === null) return;
  librariesVersion = update.version;
  target.setLibraries(update.bundle);
}

function evaluateWithin(task: EvaluateTask, timeoutMs: number): TaskResult {
  const started = performance.now();
  sandbox ??= newSandbox();
  const rebuildsBefore = sandbox.rebuilds;
  let output: RuntimeOutput | undefined;
  try {
    const { spec } = task;
    syncLibraries(task.libraries, sandbox);
    const columns = spec.mode === 'once' ? [] : decodeColumns(task.bundles, task.rows, spec.paramTypes, task.firstRow);
    const input = runtimeInput(spec, columns, task);
    output = sandbox.evaluate(spec, input, timeoutMs, task.callId, task.contextKey);
    const scriptMs = performance.now() - started;
    if (!output.ok) throw scriptFailure(spec, output, task.firstRow);
    checkOutput(output, spec.mode === 'rows' ? task.rows : 1, spec.returnType);
    const rowsOut = output.nums?.length ?? output.byteLens?.length ?? output.lens?.length ?? 0;
    return {
      ok: true,
      replies: encodeReplies(output, spec.returnType, task.maxReplyBytes),
      rowsOut,
      nondeterministic: output.nondet,
      table: output.table === null ? null : encodeTableChunk(output.table, task.rows, tableBytes(), limits.memoryLimitMb),
      scriptMs,
      ...consoleOutput(output.console, limits.consoleLines ?? 0),
    };
  } catch (error) {
    const failure = PluginError.from(error);
    return {
      ok: false,
      error: failure.toData(),
      scriptMs: performance.now() - started,
      // A rebuild after a time limit or a changed built-in is routine; the front counts memory disposals.
      isolateRebuilt: sandbox.rebuilds !== rebuildsBefore && failure.code === 'RESOURCE_EXHAUSTED',
      timedOut: failure.code === 'DEADLINE_EXCEEDED',
      ...consoleOutput(output?.console ?? null, limits.consoleLines ?? 0),
    };
  }
}

function runtimeInput(spec: ScriptSpec, columns: readonly Column[], task: EvaluateTask): RuntimeInput {
  const bound: number[] = [];
  spec.boundNames.forEach((name, i) => {
    if (name !== '') bound.push(i);
  });
  return {
    mode: MODE[spec.mode],
    rows: task.rows,
    ret: spec.returnType,
    table: spec.tableAllowed,
    firstRow: task.firstRow,
    bound,
    cols: columns.map((c) => ({ t: c.type, n: c.nums, s: c.strs?.text ?? null, l: c.strs?.lengths ?? null })),
    // V8 strings take one or two bytes a character; bound the result text by the heap limit.
    maxChars: Math.floor((limits.memoryLimitMb * 1024 * 1024) / 2),
    maxColumns: MAX_TABLE_COLUMNS,
    maxKeyBytes: MAX_TABLE_KEY_BYTES,
    consoleLines: limits.consoleLines ?? 0,
    consoleChars: limits.consoleBytes ?? 0,
  };
}

function scriptFailure(spec: ScriptSpec, output: Extract<RuntimeOutput, { ok: false }>, firstRow: number): PluginError {
  const thrown = oneLine(`${output.name}: ${output.message}`);
  const row = firstRow + output.row;
  switch (output.kind) {
    case 'size':
      return new PluginError(
        'RESOURCE_EXHAUSTED',
        `the result is larger than the memory limit of ${limits.memoryLimitMb} MB (SSE_MEMORY_LIMIT_MB)`,
      );
    case 'dirty':
      return new PluginError('INTERNAL', 'internal error: a sandbox context could not be reset');
    case 'convert':
      return new PluginError('INVALID_ARGUMENT', `the result of row ${row} cannot be converted to text: ${thrown}`);
    case 'throw':
      // V8 and isolated-vm's allocator refuse a too-large buffer or string with a RangeError.
      if (output.name === 'RangeError' && ALLOCATION_REFUSED.test(output.message))
        return memoryLimitError(limits.memoryLimitMb, `${thrown} (at row ${row})`);
      if (spec.mode === 'aggregate') return new PluginError('INVALID_ARGUMENT', `${thrown} (the aggregation failed)`);
      if (spec.mode === 'once') return new PluginError('INVALID_ARGUMENT', thrown);
      return new PluginError('INVALID_ARGUMENT', `${thrown} (at row ${row})`);
  }
}

function encodeReplies(output: Extract<RuntimeOutput, { ok: true }>, returnType: DataType, maxBytes: number): Uint8Array[] {
  const { nums, text, lens, utf8, byteLens } = output;
  if (returnType === DataType.NUMERIC && nums) return encodeNumbers(nums, maxBytes);
  if (returnType === DataType.STRING && utf8 && byteLens) return encodeUtf8(utf8, byteLens, maxBytes);
  if (!nums || text === null || !lens) return [];
  const offsets = new Uint32Array(lens.length + 1);
  for (let i = 0; i < lens.length; i++) offsets[i + 1] = (offsets[i] as number) + (lens[i] as number);
  return encodeCells(
    nums.length,
    1,
    (row, _col, cell) => {
      cell.num = nums[row];
      cell.str = text.slice(offsets[row], offsets[row + 1]);
    },
    maxBytes,
  );
}
