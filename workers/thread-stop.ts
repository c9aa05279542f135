/**
 * How the sandbox process's main thread stops a task whose call ended while a pool thread runs it.
 * A thread in isolated-vm's runSync or applySync reads no message until the script returns, and
 * isolated-vm has no interrupt: a script stops at the `timeout` chosen up front, or when its isolate
 * is disposed, which may be done from another thread (laverdet/isolated-vm#182). So each thread keeps
 * a stopper (workers/thread/isolate-stopper.ts) whose code runs on isolated-vm's own threads, waiting
 * on the cells here, and disposes the thread's isolate when told to stop the task it runs. Without
 * that, a cancelled call's chunk kept its thread to the time limit, and a client that cancelled and
 * reopened one call at a time held every thread of the process.
 *
 * One group of Int32 cells per thread, in one shared buffer per process:
 * - RUNNING: the id of the task the thread runs now (0 between tasks), written by the thread;
 * - STOP: the id of a task to stop, written by the main thread;
 * - BELL: what the stopper waits on, rung by the main thread (a stop) and the thread (a new isolate);
 * - GENERATION: the thread's count of isolates armed; a stopper of an older one ends;
 * - STOPPED: the id of the task the stopper disposed the isolate for, taken by the thread.
 * Task ids are stored as Int32 (`| 0`) on both sides; 0 is never a task's.
 */

/** Threads per sandbox process that can be stopped; a thread replaced after a crash takes the next group. */
const SLOTS = 64;
const CLAIMED = 0;
export const STOP_RUNNING = 0;
export const STOP_TASK = 1;
export const STOP_BELL = 2;
export const STOP_GENERATION = 3;
export const STOP_STOPPED = 4;
const CELLS = 5;

export function newStopCells(): SharedArrayBuffer {
  return new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT * (1 + SLOTS * CELLS));
}

/** Claims a thread's group of cells: the index of its first cell. */
export function claimStopSlot(cells: SharedArrayBuffer): number {
  return 1 + (Atomics.add(new Int32Array(cells), CLAIMED, 1) % SLOTS) * CELLS;
}

/** Rings a group's bell: its stopper looks at the cells again. */
export function ringStopBell(view: Int32Array, at: number): void {
  Atomics.add(view, at + STOP_BELL, 1);
  Atomics.notify(view, at + STOP_BELL);
}

/** The main thread's side: asks the thread running a task to stop it. */
export class TaskStops {
  private readonly view: Int32Array;

  constructor(cells: SharedArrayBuffer) {
    this.view = new Int32Array(cells);
  }

  /** True when a thread was running the task and was told; a task not started yet is stopped by its control cell. */
  stop(taskId: number): boolean {
    const id = taskId | 0;
    for (let slot = 0; slot < SLOTS; slot++) {
      const at = 1 + slot * CELLS;
      if (Atomics.load(this.view, at + STOP_RUNNING) !== id) continue;
      Atomics.store(this.view, at + STOP_TASK, id);
      ringStopBell(this.view, at);
      return true;
    }
    return false;
  }
}
