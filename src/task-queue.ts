/**
 * The front's queue of tasks waiting for a sandbox thread: first in, first out, with tasks sent
 * back to the head when their sandbox process died, and removal of a cancelled call's tasks in
 * constant time (a Map keeps insertion order), so no operation grows with the queue's length.
 */
import type { QueuedTask } from './sandbox-pool';

export class TaskQueue {
  /** Tasks put back at the head, last one first. */
  private readonly head: QueuedTask[] = [];
  private readonly fifo = new Map<number, QueuedTask>();

  get length(): number {
    return this.head.length + this.fifo.size;
  }

  push(task: QueuedTask): void {
    this.fifo.set(task.id, task);
  }

  unshift(task: QueuedTask): void {
    this.head.push(task);
  }

  shift(): QueuedTask | undefined {
    const back = this.head.pop();
    if (back) return back;
    for (const [id, task] of this.fifo) {
      this.fifo.delete(id);
      return task;
    }
    return undefined;
  }

  remove(task: QueuedTask): void {
    if (this.fifo.delete(task.id)) return;
    const at = this.head.indexOf(task);
    if (at >= 0) this.head.splice(at, 1);
  }

  drain(): QueuedTask[] {
    const all = [...this.head.reverse(), ...this.fifo.values()];
    this.head.length = 0;
    this.fifo.clear();
    return all;
  }
}
