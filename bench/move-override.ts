/**
 * Experiment only, never in production: preloaded into the plugin (`node -r`) to try returning a
 * task's reply buffers to the main thread by transfer (Piscina.move) instead of by copy, without
 * editing workers/. It wraps the piscina entry's default export inside each worker thread. Only
 * buffers that own their whole ArrayBuffer are transferred: a pooled Buffer shares its
 * ArrayBuffer with others, which a transfer would detach.
 */
import path from 'node:path';
import { isMainThread } from 'node:worker_threads';

import Piscina from 'piscina';

import type { EvaluateTask, TaskResult } from '../src/task';

type Entry = { default: (task: EvaluateTask) => TaskResult };

function ownedBuffers(replies: readonly Uint8Array[]): ArrayBuffer[] {
  const owned: ArrayBuffer[] = [];
  for (const reply of replies) {
    const buffer = reply.buffer;
    if (buffer instanceof ArrayBuffer && reply.byteOffset === 0 && reply.byteLength === buffer.byteLength) owned.push(buffer);
  }
  return owned;
}

if (!isMainThread && process.env['BENCH_MOVE_REPLIES'] === '1') {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- must patch the loaded module object
  const entry = require(path.join(__dirname, '..', 'workers', 'evaluate.js')) as Entry;
  const evaluate = entry.default;
  entry.default = (task: EvaluateTask): TaskResult => {
    const result = evaluate(task);
    if (!result.ok) return result;
    const transfer = ownedBuffers(result.replies);
    if (transfer.length === 0) return result;
    const movable = {
      get [Piscina.transferableSymbol]() {
        return transfer;
      },
      get [Piscina.valueSymbol]() {
        return result;
      },
    };
    return Piscina.move(movable as unknown as Parameters<typeof Piscina.move>[0]) as unknown as TaskResult;
  };
}
