/**
 * One task's work inside a sandbox process, wherever it runs: decode the rows into columns, run the
 * script in the isolate of a Sandbox, check what came out, encode the replies (and table cells).
 * A piscina thread (evaluate.ts) and the sandbox process's main thread (workers/fast-path.ts) each
 * own one TaskEvaluator, so both run a task with the same isolate runtime, the same limits, the same
 * context-sharing rules, the same library set (synced from the task's cell before it runs) and the
 * same console capture. Every failure is turned into data (TaskFailure); nothing is thrown.
 */
import { oneLine, PluginError } from '../../src/contract/errors';
import { memoryLimitError } from '../../src/contract/limit-errors';
import { encodeCells, encodeNumbers, encodeUtf8 } from '../../src/contract/replies';
import { type Column, decodeColumns } from '../../src/contract/rows';
import { DataType, MAX_TABLE_COLUMNS, MAX_TABLE_KEY_BYTES, type ScriptSpec, type TaskResult } from '../../src/contract/task';
import { readLibraryCell } from '../library-cell';
import type { EvaluateTask } from '../thread-task';
import { consoleOutput } from './console-output';
import type { RuntimeInput, RuntimeOutput } from './isolate-runtime';
import type { Stopper } from './isolate-stopper';
import { checkOutput } from './output-check';
import { Sandbox, type SandboxLimits, type ThreadActivity } from './sandbox';
import { encodeTableChunk } from './table-cells';

/** What a task needs to run, apart from its place in the call's time budget. */
export type TaskInput = Pick<
  EvaluateTask,
  'callId' | 'contextKey' | 'spec' | 'bundles' | 'rows' | 'firstRow' | 'maxReplyBytes' | 'libraries'
>;

const MODE = { rows: 0, aggregate: 1, once: 2 } as const;
const ALLOCATION_REFUSED = /^(Array buffer allocation failed|Invalid string length|Invalid typed array length)/;

export class TaskEvaluator {
  private sandbox: Sandbox | undefined;
  /** The library set version this evaluator's sandbox has, from the process's cell (workers/library-cell.ts). */
  private librariesVersion = 0;

  constructor(
    private readonly limits: SandboxLimits,
    /** isolated-vm's word that V8 gave up on the isolate (see Sandbox). */
    private readonly onCatastrophicError: (message: string) => void,
    private readonly activity: ThreadActivity,
    /** A pool thread's: stops a task whose call ended (isolate-stopper.ts); the fast path's budget is short. */
    private readonly stopper?: Stopper,
  ) {}

  /** Builds the isolate ahead of the first task, so its ~10 ms are not billed to a script. */
  warmUp(): void {
    if (this.sandbox) return;
    this.sandbox = this.newSandbox();
    this.sandbox.warmUp();
  }

  /** CPU time the isolate spent on the last task, in ms (of the last attempt when it was run again). */
  get lastCpuMs(): number {
    return this.sandbox?.lastCpuMs ?? 0;
  }

  /** Runs the task within timeoutMs of script time; never throws. */
  run(task: TaskInput, timeoutMs: number): TaskResult {
    const started = performance.now();
    this.sandbox ??= this.newSandbox();
    const sandbox = this.sandbox;
    const rebuildsBefore = sandbox.rebuilds;
    const { memoryLimitMb } = this.limits;
    const consoleLines = this.limits.consoleLines ?? 0;
    let output: RuntimeOutput | undefined;
    try {
      const { spec } = task;
      this.syncLibraries(task.libraries, sandbox);
      const columns = spec.mode === 'once' ? [] : decodeColumns(task.bundles, task.rows, spec.paramTypes, task.firstRow);
      const input = runtimeInput(spec, columns, task, this.limits);
      output = sandbox.evaluate(spec, input, timeoutMs, task.callId, task.contextKey);
      if (!output.ok) throw scriptFailure(spec, output, task.firstRow, memoryLimitMb);
      checkOutput(output, spec.mode === 'rows' ? task.rows : 1, spec.returnType);
      const rowsOut = output.nums?.length ?? output.byteLens?.length ?? output.lens?.length ?? 0;
      // A table chunk's encoded cells may take up to the memory limit (the front bounds the joined table again).
      const tableBytes = memoryLimitMb * 1024 * 1024;
      const replies = encodeReplies(output, spec.returnType, task.maxReplyBytes);
      const table = output.table === null ? null : encodeTableChunk(output.table, task.rows, tableBytes, memoryLimitMb);
      return {
        ok: true,
        replies,
        rowsOut,
        nondeterministic: output.nondet,
        table,
        // The thread's whole time on the task, its results' encoding too: what the front's fair queue
        // charges it and the call's time budget counts (a script's huge strings cost their encoding).
        scriptMs: performance.now() - started,
        ...consoleOutput(output.console, consoleLines),
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
        ...consoleOutput(output?.console ?? null, consoleLines),
      };
    }
  }

  private newSandbox(): Sandbox {
    return new Sandbox(this.limits, this.onCatastrophicError, this.activity, this.stopper);
  }

  /** Gives the sandbox the process's current library set when it is not the one it has. */
  private syncLibraries(cell: SharedArrayBuffer | null, sandbox: Sandbox): void {
    const update = readLibraryCell(cell, this.librariesVersion);
    if (update === null) return;
    this.librariesVersion = update.version;
    sandbox.setLibraries(update.bundle);
  }
}

function runtimeInput(spec: ScriptSpec, columns: readonly Column[], task: TaskInput, limits: SandboxLimits): RuntimeInput {
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

export function scriptFailure(
  spec: ScriptSpec,
  output: Extract<RuntimeOutput, { ok: false }>,
  firstRow: number,
  memoryLimitMb: number,
): PluginError {
  const thrown = oneLine(`${output.name}: ${output.message}`);
  const row = firstRow + output.row;
  // V8 and isolated-vm's allocator refuse a too-large buffer or string with a RangeError, in the
  // script or while its result is converted: either way the memory limit, never the script's fault.
  if (output.name === 'RangeError' && ALLOCATION_REFUSED.test(output.message) && (output.kind === 'throw' || output.kind === 'convert'))
    return memoryLimitError(memoryLimitMb, `${thrown} (at row ${row})`);
  switch (output.kind) {
    case 'size':
      return new PluginError(
        'RESOURCE_EXHAUSTED',
        `the result is larger than the memory limit of ${memoryLimitMb} MB (SSE_MEMORY_LIMIT_MB)`,
      );
    case 'dirty':
      return new PluginError('INTERNAL', 'internal error: a sandbox context could not be reset');
    case 'convert':
      return new PluginError('INVALID_ARGUMENT', `the result of row ${row} cannot be converted to text: ${thrown}`);
    case 'reject':
      return new PluginError('INVALID_ARGUMENT', `${thrown} (a promise the script rejected and never handled)`);
    case 'throw':
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
