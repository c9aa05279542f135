/**
 * A FastPath (workers/fast-path.ts) on the test's own main thread, with a real isolate and a real
 * watcher thread, whose channel (fd 3) and results socket (fd 4) are files the test reads back.
 */
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { FrameReader, type ReceivedFrame } from '../../src/contract/channel';
import { FastPath } from '../../workers/fast-path';
import { MainThreadWatch } from '../../workers/main-watch';
import { newResultLock, ResultWriter } from '../../workers/result-writer';

export interface FastPathOnFiles {
  readonly fastPath: FastPath;
  /** The frames written so far to the file standing for the channel or the results socket. */
  written(name: 'channel' | 'results'): ReceivedFrame[];
  /** Stops the watcher and removes the files. */
  dispose(): Promise<void>;
}

/** budgetMs: the fast path's; graceMs: the watcher's past a task's time left. The watcher never sends HELD. */
export function fastPathOnFiles(budgetMs: number, graceMs: number): FastPathOnFiles {
  const dir = mkdtempSync(path.join(tmpdir(), 'sse-fast-path-'));
  const channelFd = openSync(path.join(dir, 'channel'), 'w');
  const resultsFd = openSync(path.join(dir, 'results'), 'w');
  const watch = new MainThreadWatch({ graceMs, intervalMs: 10, channelFd, killAfterMs: 0 });
  const lock = newResultLock();
  const results = new ResultWriter(lock, resultsFd, 1_000, () => assert.fail('the results file was lost'));
  const fastPath = new FastPath({ memoryLimitMb: 128, scriptTimeoutMs: 60_000 }, budgetMs, lock, { watch, results });
  return {
    fastPath,
    written(name) {
      const frames: ReceivedFrame[] = [];
      new FrameReader((frame) => frames.push(frame)).push(readFileSync(path.join(dir, name)));
      return frames;
    },
    async dispose() {
      await watch.stop();
      closeSync(channelFd);
      closeSync(resultsFd);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
