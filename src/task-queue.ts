/**
 * The front's queue of tasks waiting for a sandbox thread, fair between calls: each call has its own
 * first-in-first-out line, and the next free thread takes the first task of the next call in turn.
 * So a small call waits behind at most one task of each other call, never behind the whole backlog
 * of a large or hostile one (with 2 threads, a normal call answered within a second while another
 * call ran 200,000 rows of slow script; first-in-first-out it waited behind all of them).
 * Tasks sent back because their sandbox process died go first. No operation grows with the queue.
 */
import type { PluginError } from './shared/errors';
import type { TaskResult } from './shared/task';
import type { TaskRequest } from './task-runner';

/** A task from the moment it is queued until it settles (src/sandbox-pool.ts keeps them by id). */
export interface QueuedTask {
  readonly id: number;
  readonly request: TaskRequest;
  readonly resolve: (result: TaskResult) => void;
  readonly reject: (error: PluginError) => void;
  /** Sent again after a sandbox died with no culprit named: at most once. */
  retried: boolean;
  sentAt: number;
  settled: boolean;
  /** Removed from the call's signal when the task settles: a listener left behind keeps the task's rows alive until the call ends. */
  onAbort?: () => void;
}

export class TaskQueue {
  /** Tasks put back at the head, last one first. */
  private readonly head: QueuedTask[] = [];
  /** Each waiting call's tasks in order; the Map's order is the turn (a call goes to the back after its turn). */
  private readonly calls = new Map<number, Map<number, QueuedTask>>();
  private count = 0;

  get length(): number {
    return this.head.length + this.count;
  }

  push(task: QueuedTask): void {
    const callId = task.request.callId;
    let line = this.calls.get(callId);
    if (!line) {
      line = new Map();
      this.calls.set(callId, line);
    }
    line.set(task.id, task);
    this.count++;
  }

  unshift(task: QueuedTask): void {
    this.head.push(task);
  }

  shift(): QueuedTask | undefined {
    const back = this.head.pop();
    if (back) return back;
    for (const [callId, line] of this.calls) {
      const [first] = line;
      this.calls.delete(callId);
      if (!first) continue;
      line.delete(first[0]);
      this.count--;
      // The call's turn is over: it goes to the back of the line of calls.
      if (line.size > 0) this.calls.set(callId, line);
      return first[1];
    }
    return undefined;
  }

  /** True when the task was waiting here. */
  remove(task: QueuedTask): boolean {
    const line = this.calls.get(task.request.callId);
    if (line?.delete(task.id)) {
      this.count--;
      if (line.size === 0) this.calls.delete(task.request.callId);
      return true;
    }
    const at = this.head.indexOf(task);
    if (at >= 0) this.head.splice(at, 1);
    return at >= 0;
  }

  drain(): QueuedTask[] {
    const all = [...this.head.reverse()];
    for (const line of this.calls.values()) all.push(...line.values());
    this.head.length = 0;
    this.calls.clear();
    this.count = 0;
    return all;
  }
}
