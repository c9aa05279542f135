/**
 * A sandbox thread's way back to the front: the RESULT frame of a task goes straight onto the
 * results socket (fd 4, src/contract/channel.ts) from the thread that ran it, as one writev, instead
 * of through the sandbox's main thread, which would be one more thread to wake per task (for a
 * one-row call that hand-off cost about as much as running the script: bench/RESULTS.md).
 *
 * The threads share the socket, so a frame is written whole under a lock they share (an Int32 in a
 * SharedArrayBuffer from the thread pool). Nothing in the sandbox process opens fd 4 as a stream,
 * so it stays blocking: a write waits while the front is not reading, which is the backpressure
 * wanted. When nothing could be written (no such descriptor), the caller hands the result to the
 * main thread instead, as before; a frame cut short ends the process (the front retries its tasks).
 */
import { writevSync } from 'node:fs';

import { RESULTS_FD } from '../src/contract/channel';
import { resultFrame } from '../src/contract/result-frame';
import type { TaskResult } from '../src/contract/task';

const UNLOCKED = 0;
const LOCKED = 1;
/**
 * Longest a thread waits for the lock. A write takes milliseconds (the front always reads); a lock
 * held this long belongs to a thread that died holding it (ended by its heap limit mid-write) or to a
 * front that stopped reading: either way the socket is lost, and the process ends at once rather than
 * wait for the front's backstop (a task's time limit + 5 s).
 */
export const LOCK_WAIT_MS = 5_000;

/** Ends this sandbox process: the front replaces it and runs its tasks again. */
function endProcess(): void {
  process.kill(process.pid, 'SIGKILL');
}

/** The lock the threads of one sandbox process share (made once by the pool). */
export function newResultLock(): SharedArrayBuffer {
  return new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
}

export class ResultWriter {
  private readonly lock: Int32Array;
  private broken = false;

  constructor(
    lock: SharedArrayBuffer,
    private readonly fd = RESULTS_FD,
    private readonly lockWaitMs = LOCK_WAIT_MS,
    /** What to do when the socket is lost (tests pass their own). */
    private readonly lost: () => void = endProcess,
  ) {
    this.lock = new Int32Array(lock);
  }

  /** Writes the task's RESULT frame; false when it could not (nothing was written then, or the front is gone). */
  write(taskId: number, result: TaskResult): boolean {
    if (this.broken) return false;
    const pieces = resultFrame(taskId, result);
    const progress = { bytes: 0 };
    const deadline = performance.now() + this.lockWaitMs;
    while (Atomics.compareExchange(this.lock, 0, UNLOCKED, LOCKED) !== UNLOCKED) {
      const left = deadline - performance.now();
      if (left <= 0) {
        this.broken = true;
        this.lost();
        return false;
      }
      Atomics.wait(this.lock, 0, LOCKED, left);
    }
    try {
      writeAll(this.fd, pieces, progress);
      return true;
    } catch {
      // Nothing written (EBADF: no results socket here): the main thread's channel carries results.
      // Half a frame (the front went away mid-write): the socket can carry nothing more that the front
      // could read, so this process ends; the front retries its tasks elsewhere.
      if (progress.bytes > 0) this.lost();
      this.broken = true;
      return false;
    } finally {
      Atomics.store(this.lock, 0, UNLOCKED);
      Atomics.notify(this.lock, 0, 1);
    }
  }
}

/** writev until every byte is out: a blocking stream socket may still take part of a large frame per call. */
function writeAll(fd: number, pieces: Uint8Array[], progress: { bytes: number }): void {
  let rest = pieces;
  for (;;) {
    let written = writevSync(fd, rest);
    progress.bytes += written;
    const next: Uint8Array[] = [];
    for (const piece of rest) {
      if (written >= piece.byteLength) written -= piece.byteLength;
      else {
        next.push(written === 0 ? piece : piece.subarray(written));
        written = 0;
      }
    }
    if (next.length === 0) return;
    rest = next;
  }
}
