/**
 * The watcher of a sandbox process's main thread (workers/main-watch.ts) while it runs scripts on
 * the fast path: native work that ignores termination keeps the main thread from reading the channel
 * or running any watchdog, so only this thread can name the task, and tell the front early (HELD) that
 * the tasks behind it wait. Run here with a real watcher thread writing to a file instead of the
 * channel, and a short grace.
 */
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';

import { Frame, FrameReader, type ReceivedFrame } from '../../src/contract/channel';
import { parseRetirement, type Retirement } from '../../src/contract/control-frames';
import { MainThreadWatch } from '../../workers/main-watch';
import { waitFor } from '../helpers/sandbox-calls';

describe('the main-thread watcher', () => {
  let dir: string;
  let fd: number;
  let watch: MainThreadWatch;
  const file = (): string => path.join(dir, 'channel');

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'sse-watch-'));
    fd = openSync(file(), 'w');
    watch = new MainThreadWatch({ graceMs: 100, intervalMs: 10, channelFd: fd, killAfterMs: 0, heldNoticeMs: 30 });
  });
  afterEach(async () => {
    await watch.stop();
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  });

  /** The frames the watcher wrote so far. */
  function written(): ReceivedFrame[] {
    const frames: ReceivedFrame[] = [];
    new FrameReader((frame) => frames.push(frame)).push(readFileSync(file()));
    return frames;
  }

  async function retirement(): Promise<Retirement> {
    // Only turns a watcher that never writes into a failure; it writes ~150 ms after the entry.
    await waitFor('a RETIRE frame', () => written().some((frame) => frame.kind === Frame.RETIRE), 10_000);
    const frame = written().find((one) => one.kind === Frame.RETIRE);
    return parseRetirement(frame?.payload ?? new Uint8Array());
  }

  it('names the task when the main thread stays in its isolate past its limit + grace', async () => {
    watch.enter(20, 7);
    const retired = await retirement();
    assert.equal(retired.reason, 'stuck');
    assert.deepEqual(retired.taskIds, [7]);
  });

  it('names the task that is stuck, not one that left in time', async () => {
    watch.enter(20, 1);
    watch.leave();
    watch.enter(20, 2);
    assert.deepEqual((await retirement()).taskIds, [2]);
  });

  it('names no task when the main thread is stuck between tasks', async () => {
    watch.enter(20);
    assert.deepEqual((await retirement()).taskIds, []);
  });

  it('writes HELD naming a task that holds the main thread, once, before RETIRE', async () => {
    watch.enter(20, 5);
    assert.deepEqual((await retirement()).taskIds, [5]);
    const [held, retire] = written();
    assert.equal(held?.kind, Frame.HELD);
    assert.equal(held.id, 5);
    assert.equal(held.payload.byteLength, 0);
    assert.equal(retire?.kind, Frame.RETIRE);
    assert.equal(written().length, 2);
  });

  it('writes HELD for no task that left before the notice, nor between tasks', async () => {
    watch.enter(60_000, 6);
    watch.leave();
    watch.enter(20);
    await retirement();
    assert.deepEqual(
      written().map((frame) => frame.kind),
      [Frame.RETIRE],
    );
  });

  it('says fatal when V8 gave up on the isolate', async () => {
    watch.enter(60_000, 9);
    watch.fatal();
    const retired = await retirement();
    assert.equal(retired.reason, 'fatal');
    assert.deepEqual(retired.taskIds, [9]);
  });
});
