/**
 * The thread's side of stopping a task whose call ended (workers/thread-stop.ts says why): a small
 * isolate of its own whose one task, started with isolated-vm's async `apply`, runs on isolated-vm's
 * thread pool, not on this thread. It sleeps in Atomics.wait on the thread's cells and, told to stop
 * the task this thread runs, disposes the thread's isolate: V8 terminates the running script at
 * once, and the thread's applySync throws. The stopper holds one of isolated-vm's pool threads asleep
 * per sandbox thread (isolated-vm starts a thread of its own when its pool is busy) and costs a task
 * nothing: the thread only writes which task it runs.
 *
 * A stop may be seen a moment late, when the thread has just begun its next task: the stopper then
 * says which task it disposed the isolate for, and the thread runs its own task again (evaluate.ts).
 */
import type ivm from 'isolated-vm';

import { claimStopSlot, ringStopBell, STOP_GENERATION, STOP_RUNNING, STOP_STOPPED } from '../thread-stop';
import { isolatedVm } from './isolated-vm';

/** The smallest heap isolated-vm allows: the stopper's code allocates nothing. */
const STOPPER_MEMORY_MB = 8;

/**
 * Runs in the stopper's isolate (its source text, so nothing from module scope). Ends when the thread
 * arms a newer isolate, or once it disposed this one.
 */
function watchForStop(cells: SharedArrayBuffer, at: number, generation: number, target: ivm.Isolate): void {
  const view = new Int32Array(cells);
  const [running, task, bell, armed, stopped] = [at, at + 1, at + 2, at + 3, at + 4];
  for (;;) {
    const rung = Atomics.load(view, bell);
    if (Atomics.load(view, armed) !== generation) return;
    const stop = Atomics.exchange(view, task, 0);
    if (stop !== 0 && stop === Atomics.load(view, running)) {
      Atomics.store(view, stopped, stop);
      try {
        target.dispose();
      } catch {
        // Disposed already (its memory limit): the run ends anyway.
      }
      return;
    }
    Atomics.wait(view, bell, rung);
  }
}

/** What a Sandbox asks of its stopper; the fast path's sandbox has none (its budget is short). */
export interface Stopper {
  /** The sandbox built a new isolate: the stop now disposes this one. */
  arm(isolate: ivm.Isolate): void;
  /** The id of the task the isolate was disposed for (once), or 0 when the stopper did not dispose it. */
  takeStopped(): number;
}

export const NO_STOPPER: Stopper = { arm: () => undefined, takeStopped: () => 0 };

export class IsolateStopper implements Stopper {
  private readonly view: Int32Array;
  private readonly at: number;
  private readonly cells: ivm.ExternalCopy<SharedArrayBuffer>;
  private readonly watch: ivm.Reference<(...args: unknown[]) => void>;
  private generation = 0;

  constructor(cells: SharedArrayBuffer) {
    this.view = new Int32Array(cells);
    this.at = claimStopSlot(cells);
    Atomics.store(this.view, this.at + STOP_RUNNING, 0);
    Atomics.store(this.view, this.at + STOP_STOPPED, 0);
    // A shared buffer's copy shares its memory: the stopper waits on the very cells the main thread rings.
    this.cells = new isolatedVm.ExternalCopy(cells);
    const isolate = new isolatedVm.Isolate({ memoryLimit: STOPPER_MEMORY_MB });
    const context = isolate.createContextSync();
    const script = isolate.compileScriptSync(`(${watchForStop.toString()})`, { filename: 'stopper.js' });
    this.watch = script.runSync(context, { reference: true }) as ivm.Reference<(...args: unknown[]) => void>;
  }

  arm(isolate: ivm.Isolate): void {
    this.generation = (this.generation % 0x7fff_fffe) + 1;
    Atomics.store(this.view, this.at + STOP_GENERATION, this.generation);
    // The stopper of the last isolate wakes and ends; this one's runs after it (one task at a time).
    ringStopBell(this.view, this.at);
    this.watch.apply(undefined, [this.cells.copyInto(), this.at, this.generation, isolate]).catch(() => {
      // Only if the stopper's isolate itself failed: tasks still end at their time limit.
    });
  }

  /** The thread starts a task (its id) or ends one (0). */
  running(taskId: number): void {
    Atomics.store(this.view, this.at + STOP_RUNNING, taskId | 0);
  }

  takeStopped(): number {
    return Atomics.exchange(this.view, this.at + STOP_STOPPED, 0);
  }
}
