/**
 * The small control frames a sandbox process sends on its channel (src/contract/channel.ts): READY
 * once its threads have built their isolates, RETIRE when it has lost a thread and asks to be ended,
 * and HELD when native work holds its main thread past the fast path's budget (no payload: the id
 * names the task; the front gives the process's slot to a spare). The sandbox writes them with the functions here; the front reads them with the readers
 * here, which check every field: a sandbox is not trusted (a script that escaped V8 would own it), so
 * a payload of any other shape throws, which the front treats as that process's protocol error.
 */
import { Frame, frameHeader, jsonFrame, parseJson } from './channel';
import { oneLine } from './errors';

/** What READY says: how many threads the process started (the front asked for that many). */
export interface ReadyPayload {
  readonly threads: number;
}

/** Why a sandbox process asks to be ended, and the tasks it holds to blame. */
export interface Retirement {
  readonly reason: 'fatal' | 'stuck';
  readonly taskIds: readonly number[];
  readonly detail: string;
}

/** A process blames at most the tasks its threads run; more ids than this is not a process of ours. */
const MAX_RETIREMENT_TASKS = 1_024;
const MAX_TASK_ID = 0xffffffff;

export function readyFrame(threads: number): Buffer {
  return jsonFrame(Frame.READY, 0, { threads } satisfies ReadyPayload);
}

export function retireFrame(retirement: Retirement): Buffer {
  return jsonFrame(Frame.RETIRE, 0, retirement);
}

export function heldFrame(taskId: number): Buffer {
  return frameHeader(Frame.HELD, taskId, 0);
}

/** A READY payload, checked: the thread count the front asked for, nothing else. */
export function parseReady(payload: Uint8Array, expectedThreads: number): ReadyPayload {
  const value = parseJson(payload);
  if (!isRecord(value) || value['threads'] !== expectedThreads)
    throw new Error(`READY frame does not say the ${expectedThreads} threads asked for`);
  return { threads: expectedThreads };
}

/** A RETIRE payload, checked field by field; its detail is cut to one line, as it goes to the log. */
export function parseRetirement(payload: Uint8Array): Retirement {
  const value = parseJson(payload);
  if (!isRecord(value)) throw new Error('RETIRE frame is not an object');
  const { reason, taskIds, detail } = value;
  if (reason !== 'fatal' && reason !== 'stuck') throw new Error('RETIRE frame with an unknown reason');
  if (!Array.isArray(taskIds) || taskIds.length > MAX_RETIREMENT_TASKS || !taskIds.every(isTaskId))
    throw new Error('RETIRE frame with task ids that are not task ids');
  if (typeof detail !== 'string') throw new Error('RETIRE frame without a detail');
  return { reason, taskIds, detail: oneLine(detail) };
}

function isTaskId(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= MAX_TASK_ID;
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
