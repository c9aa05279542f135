/**
 * The thread that watches the sandbox process's main thread while it runs scripts (the cells are
 * described in main-watch.ts). It sleeps between looks, WATCH_INTERVAL_MS apart, so an idle process
 * costs a few wake-ups a second. When the main thread stays in its isolate past the period's time
 * limit + graceMs, or V8 gave up on that isolate, it writes RETIRE on the channel (fd 3) naming the
 * task: the main thread is stuck in native code and writes nothing there meanwhile (it enters its
 * isolate only with nothing left to write on the channel). If the frame cannot be written whole, the
 * process ends itself; the front then retries the tasks it held as after any crash. Earlier, once a
 * task has held the main thread heldNoticeMs (or its period's own), it writes HELD (once a period) the same way: one that
 * the socket cannot take at all is left out (the front then waits for RETIRE, as before HELD was).
 */
import { writeSync } from 'node:fs';
import { workerData } from 'node:worker_threads';

import { heldFrame, type Retirement, retireFrame } from '../src/contract/control-frames';
import { WATCH_FATAL, WATCH_NOTICE_MS, WATCH_PERIOD, WATCH_TASK, WATCH_TIMEOUT_MS, type WatcherData } from './main-watch';

const { cells, graceMs, intervalMs, channelFd, killAfterMs, heldNoticeMs } = workerData as WatcherData;
const view = new Int32Array(cells);
const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** How often it looks while a period it has seen goes on (a hold is rare: the fast path's tasks take ~0.2 ms). */
const BUSY_INTERVAL_MS = 20;

function retire(retirement: Retirement): never {
  try {
    const frame = retireFrame(retirement);
    if (writeSync(channelFd, frame) !== frame.length) throw new Error('short write');
    // The front ends the process on RETIRE; this is only the backstop if it does not.
    if (killAfterMs === 0) for (;;) Atomics.wait(sleeper, 0, 0);
    Atomics.wait(sleeper, 0, 0, killAfterMs);
  } catch {
    // The channel cannot take the frame: ending the process is what is left.
  }
  process.kill(process.pid, 'SIGKILL');
  for (;;) Atomics.wait(sleeper, 0, 0);
}

/** Tells the front the task holds the main thread; a frame cut short would corrupt the channel: the process ends. */
function tellHeld(taskId: number): void {
  const frame = heldFrame(taskId);
  let written = 0;
  try {
    written = writeSync(channelFd, frame);
  } catch {
    return;
  }
  if (written !== frame.length) {
    process.kill(process.pid, 'SIGKILL');
    for (;;) Atomics.wait(sleeper, 0, 0);
  }
}

function blamed(): number[] {
  const task = Atomics.load(view, WATCH_TASK);
  return task === 0 ? [] : [(task - 1) >>> 0];
}

function watch(): never {
  let seenPeriod = 0;
  let sinceMs = 0;
  let told = false;
  for (;;) {
    // Closer looks while the main thread is in its isolate: HELD goes out soon after heldNoticeMs.
    Atomics.wait(sleeper, 0, 0, seenPeriod === 0 ? intervalMs : Math.min(intervalMs, BUSY_INTERVAL_MS));
    const period = Atomics.load(view, WATCH_PERIOD);
    if (period === 0) {
      seenPeriod = 0;
      continue;
    }
    const now = performance.now();
    if (Atomics.load(view, WATCH_FATAL) !== 0)
      retire({ reason: 'fatal', taskIds: blamed(), detail: 'V8 gave up on the sandbox (a fatal out-of-memory error)' });
    if (period !== seenPeriod) {
      seenPeriod = period;
      sinceMs = now;
      told = false;
      continue;
    }
    // A watcher told never to send HELD (tests) sends none for any period.
    const noticeMs = heldNoticeMs > 0 ? Atomics.load(view, WATCH_NOTICE_MS) || heldNoticeMs : 0;
    if (!told && noticeMs > 0 && now - sinceMs > noticeMs) {
      told = true;
      for (const taskId of blamed()) tellHeld(taskId);
    }
    if (now - sinceMs > Atomics.load(view, WATCH_TIMEOUT_MS) + graceMs)
      retire({ reason: 'stuck', taskIds: blamed(), detail: "the sandbox process's main thread stopped responding past its time limit" });
  }
}

watch();
