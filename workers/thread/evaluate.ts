/**
 * Piscina thread entry point, inside a sandbox process: runs a task through the thread's
 * TaskEvaluator (task-evaluator.ts: decode, run in the isolate, check, encode) and writes the result
 * to the front itself. Every failure is turned into data (TaskFailure); nothing is thrown across the
 * thread. The task's control cell tells the sandbox process when it started, with what time limit,
 * and whether V8 gave up on the isolate (workers/thread-pool.ts); the sandbox process says there
 * when the task's call ended, or when the front asked the task back, and the thread's stopper stops
 * it where it runs (isolate-stopper.ts).
 */
import { workerData } from 'node:worker_threads';

import { move, transferableSymbol, valueSymbol } from 'piscina';

import { PluginError } from '../../src/contract/errors';
import { timeLimitError } from '../../src/contract/limit-errors';
import type { TaskResult, TaskSuccess } from '../../src/contract/task';
import { ResultWriter } from '../result-writer';
import { threadActivity } from '../thread-activity';
import type { ThreadData } from '../thread-pool';
import {
  BUDGET_SPENT_MS,
  CONTROL_STATE,
  CONTROL_STOP,
  CONTROL_TIMEOUT_MS,
  type EvaluateTask,
  STOP_YIELD,
  TASK_DONE,
  TASK_FATAL,
  TASK_RUNNING,
} from '../thread-task';
import { IsolateStopper } from './isolate-stopper';
import { stoppedError } from './sandbox';
import { TaskEvaluator } from './task-evaluator';

const limits = workerData as ThreadData;
const results = new ResultWriter(limits.resultLock);
/** The control cell of the task running now: onCatastrophicError marks it (see onCatastrophicError). */
let runningControl: Int32Array | undefined;

/**
 * isolated-vm calls onCatastrophicError when V8 has lost control of an isolate (isolated-vm #107,
 * #527); its README says to end the process. Marking the task lets the sandbox process name it as
 * the culprit and retire (workers/thread-pool.ts). In the bombs measured the thread hung before the
 * callback ran: V8's report on stderr is what the front acts on (src/sandboxes/sandbox-process.ts).
 */
function onCatastrophicError(message: string): void {
  // "Script failed to terminate": native work (a huge regex compile) outran the time limit; the
  // watchdog calls that stuck, a time-limit failure, not V8 giving up on memory.
  if (runningControl && !/failed to terminate/i.test(message)) Atomics.store(runningControl, CONTROL_STATE, TASK_FATAL);
}

const stopper = new IsolateStopper(limits.stopCells);
const evaluator = new TaskEvaluator(limits, onCatastrophicError, threadActivity(limits.activity), stopper);

/** Builds the isolate ahead of the first task, so its ~10 ms are not billed to a script. */
export function warmUp(): void {
  evaluator.warmUp();
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
  stopper.running(task.taskId);
  const result: TaskResult = { ...runTask(task, control, timeoutMs), route: task.moved === true ? 'moved' : 'pool' };
  stopper.running(0);
  runningControl = undefined;
  Atomics.add(spent, BUDGET_SPENT_MS, Math.ceil(result.scriptMs));
  Atomics.store(control, CONTROL_STATE, TASK_DONE);
  if (results.write(task.taskId, result)) return null;
  return result.ok ? (movable(result) as unknown as TaskResult) : result;
}

function runTask(task: EvaluateTask, control: Int32Array, timeoutMs: number): TaskResult {
  // Read after the stopper was told which task runs: a stop either finds the task running or is seen here.
  if (Atomics.load(control, CONTROL_STOP) !== 0) return stopped(control);
  if (timeoutMs <= 0) return timedOut(task.callTimeoutMs);
  const result = evaluator.run(task, timeoutMs);
  if (result.ok || result.error.code !== 'CANCELLED') return result;
  // Stopped without being asked: the stop of this thread's previous task came a moment late. A script
  // has no effect outside its call, so it runs again from the start (the stop was used up).
  const stop = Atomics.load(control, CONTROL_STOP);
  if (stop === 0) return evaluator.run(task, timeoutMs);
  return stop === STOP_YIELD ? stopped(control) : result;
}

/**
 * A task stopped before its end. Asked back by the front, it answers ABORTED having spent none of its
 * call's time: it runs again from the start later (its partial output is dropped with the isolate).
 */
function stopped(control: Int32Array): TaskResult {
  const error = Atomics.load(control, CONTROL_STOP) === STOP_YIELD ? yieldedError() : stoppedError();
  return { ok: false, error: error.toData(), scriptMs: 0, isolateRebuilt: false, timedOut: false };
}

function yieldedError(): PluginError {
  return new PluginError('ABORTED', 'asked back by the front: another host waits; the task runs again later');
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
