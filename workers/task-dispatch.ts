/**
 * Where each task the front sends runs inside a sandbox process: on the main thread's fast path
 * (workers/fast-path.ts) or on a piscina thread (workers/thread-pool.ts). The frames of one read from
 * the channel are taken in order; of the tasks among them, all but the last go to the pool at once,
 * and the last may run on the main thread after them: when several tasks arrive together the pool's
 * threads run them side by side, and a lone small task (a LOAD's next row) skips the hand-off.
 * A task the front marks pool-only never runs on the main thread: the front's memory of what held a
 * main thread outlives this process (src/sandboxes/fast-path-gate.ts).
 * Either way a task carries the library set in force when it arrived (LIBRARIES frames come in order
 * with the tasks), and each evaluator loads a new set before its next task (task-evaluator.ts).
 */
import type net from 'node:net';

import { type CallSpec, Frame, MAX_OPEN_CALLS, parseJson, type ReceivedFrame, readTaskFrame } from '../src/contract/channel';
import { PluginError } from '../src/contract/errors';
import { readLibraryBundle } from '../src/contract/libraries';
import { resultFrame } from '../src/contract/result-frame';
import type { TaskResult } from '../src/contract/task';
import type { FastPath, FastTask } from './fast-path';
import { libraryCell } from './library-cell';
import type { ThreadPool } from './thread-pool';
import { BUDGET_SPENT_MS, newBudget } from './thread-task';

interface OpenCall {
  readonly call: CallSpec;
  /** Int32[BUDGET_SPENT_MS], shared by the call's tasks on this process's threads. */
  readonly budget: SharedArrayBuffer;
}

/** A task read from the channel, with its call, not yet running. */
interface ArrivedTask {
  readonly taskId: number;
  readonly callId: number;
  readonly open: OpenCall;
  readonly rows: number;
  readonly firstRow: number;
  readonly bytes: Uint8Array;
  /** The bytes' ArrayBuffer holds this frame alone (it may be moved to a thread as it is). */
  readonly owned: boolean;
  /** The library set in force when it arrived (workers/library-cell.ts); null: none sent yet. */
  readonly libraries: SharedArrayBuffer | null;
  /** The front keeps it off the main thread (its fast-path pause outlives any one process). */
  readonly poolOnly: boolean;
}

export class TaskDispatch {
  private readonly calls: OpenCalls;
  private readonly arrived: ArrivedTask[] = [];
  /** The current library set for the evaluators; null until the front's first LIBRARIES frame. */
  private libraries: { cell: SharedArrayBuffer | null; version: number } = { cell: null, version: 0 };

  constructor(
    private readonly channel: net.Socket,
    private readonly pool: ThreadPool,
    private readonly fastPath: FastPath,
    maxOpenCalls = MAX_OPEN_CALLS,
  ) {
    this.calls = new OpenCalls(maxOpenCalls);
  }

  onFrame(frame: ReceivedFrame): void {
    switch (frame.kind) {
      case Frame.LIBRARIES:
        // Checked here, once: a malformed set ends this process (the frame reader's caller) before any task uses it.
        readLibraryBundle(frame.payload);
        this.libraries = { cell: libraryCell(frame.payload, this.libraries.version + 1), version: this.libraries.version + 1 };
        return;
      case Frame.OPEN_CALL:
        // The front is trusted here (it started this process); its OPEN_CALL is its own CallSpec.
        this.calls.open(frame.id, { call: parseJson(frame.payload) as CallSpec, budget: newBudget() });
        return;
      case Frame.CLOSE_CALL:
        // Closed with a task still running only when the call ended early: that task's result is not wanted.
        this.calls.delete(frame.id);
        this.pool.stopCall(frame.id);
        return;
      case Frame.YIELD:
        // Only a pool thread's task can be asked back: while the main thread runs one, it reads no frame.
        return this.pool.yieldTask(frame.id);
      case Frame.TASK:
        return this.arrive(frame);
      default:
        throw new Error(`unknown channel frame kind ${frame.kind}`);
    }
  }

  /** After every read from the channel: starts the tasks it brought. */
  flush(): void {
    const last = this.arrived.pop();
    for (const task of this.arrived) this.toPool(task);
    this.arrived.length = 0;
    if (last === undefined) return;
    // The watcher may write on the channel while the main thread is stuck: only when nothing is pending there.
    if (last.poolOnly || !this.fastPath.accepts(last.open.call.contextKey, last.bytes.byteLength) || this.channel.writableLength > 0)
      return this.toPool(last);
    const outcome = this.fastPath.run(evaluateInput(last, last.bytes));
    if (outcome === 'moved') this.toPool(last, true);
    else if (outcome !== 'sent') this.send(last.taskId, outcome);
  }

  private arrive(frame: ReceivedFrame): void {
    const task = readTaskFrame(frame.payload);
    const open = this.calls.get(task.callId);
    if (!open) return this.send(frame.id, unknownCall());
    // Tasks of one call may also run in other sandbox processes: the front's count of its script time wins when larger.
    const spent = new Int32Array(open.budget);
    if (task.spentMs > Atomics.load(spent, BUDGET_SPENT_MS)) Atomics.store(spent, BUDGET_SPENT_MS, task.spentMs);
    const { callId, rows, firstRow, bytes, poolOnly } = task;
    const libraries = this.libraries.cell;
    this.arrived.push({ taskId: frame.id, callId, open, rows, firstRow, bytes, owned: frame.owned, libraries, poolOnly });
  }

  /** moved: the main thread ran it first and stopped it at its budget. */
  private toPool(task: ArrivedTask, moved = false): void {
    // Moved to the thread: as it is when the frame owns its buffer, else a copy (a view of the
    // channel's chunk would be cloned whole, and Buffer#slice would share it).
    const bytes = task.owned ? task.bytes : new Uint8Array(task.bytes);
    this.pool.run({ ...evaluateInput(task, bytes), moved }, [bytes.buffer as ArrayBuffer]).then(
      (result) => {
        if (result) this.send(task.taskId, result);
      },
      // pool.run turns every failure into a result; anything else is a bug of this process: end it.
      (error: unknown) => {
        process.stderr.write(`sandbox process failed: ${error instanceof Error ? error.message : String(error)}\n`);
        process.kill(process.pid, 'SIGKILL');
      },
    );
  }

  /** A result its thread could not write (workers/result-writer.ts), or that no thread made: one writev on the channel. */
  private send(taskId: number, result: TaskResult): void {
    this.channel.cork();
    for (const piece of resultFrame(taskId, result)) this.channel.write(piece);
    this.channel.uncork();
  }
}

/** What a thread or the fast path needs to run the task, over these bytes of its rows. */
function evaluateInput(task: ArrivedTask, bytes: Uint8Array): FastTask {
  const { call, budget } = task.open;
  return {
    taskId: task.taskId,
    callId: task.callId,
    contextKey: call.contextKey,
    spec: call.spec,
    bundles: [bytes],
    rows: task.rows,
    firstRow: task.firstRow,
    callTimeoutMs: call.callTimeoutMs,
    budget,
    maxReplyBytes: call.maxReplyBytes,
    libraries: task.libraries,
  };
}

function unknownCall(): TaskResult {
  return {
    ok: false,
    error: new PluginError('INTERNAL', 'internal error: a task arrived for a call the sandbox does not know').toData(),
    scriptMs: 0,
    isolateRebuilt: false,
    timedOut: false,
  };
}

/**
 * The calls the front has opened here and not closed. The front never opens more than maxOpenCalls
 * (src/sandboxes/pool.ts); one more is the front's protocol error, and this process ends rather than
 * forget a call whose tasks may still come (the front then sends them again to a new process).
 */
class OpenCalls extends Map<number, OpenCall> {
  constructor(private readonly maxOpenCalls: number) {
    super();
  }

  open(callId: number, call: OpenCall): void {
    if (!this.has(callId) && this.size >= this.maxOpenCalls) {
      process.stderr.write(`sandbox process: protocol error: the front opened more than ${this.maxOpenCalls} calls at once\n`);
      process.kill(process.pid, 'SIGKILL');
      return;
    }
    this.set(callId, call);
  }
}
