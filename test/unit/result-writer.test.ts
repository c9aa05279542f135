/**
 * The sandbox threads' own way back to the front (workers/result-writer.ts): whole RESULT frames that
 * the front decodes as sent, never interleaved when several threads write at once, and false (nothing
 * written) where there is no results socket, so the main thread sends the result instead.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, createReadStream, mkdtempSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';

import { Frame, FrameReader, type ReceivedFrame } from '../../src/contract/channel';
import { decodeResult } from '../../src/contract/result-frame';
import type { TaskResult } from '../../src/contract/task';
import { newResultLock, ResultWriter } from '../../workers/result-writer';

function framesIn(file: string): ReceivedFrame[] {
  const frames: ReceivedFrame[] = [];
  new FrameReader((frame) => frames.push(frame)).push(readFileSync(file));
  return frames;
}

const ok = (replies: Uint8Array[]): TaskResult => ({ ok: true, replies, rowsOut: 3, nondeterministic: true, table: null, scriptMs: 1.5 });

describe('ResultWriter', () => {
  it('writes whole RESULT frames that decode to what was sent', () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'sse-results-')), 'results');
    const fd = openSync(file, 'w');
    const writer = new ResultWriter(newResultLock(), fd);
    const failure: TaskResult = {
      ok: false,
      error: { code: 'INVALID_ARGUMENT', message: 'TypeError: x (at row 2)' },
      scriptMs: 0.25,
      isolateRebuilt: false,
      timedOut: false,
    };
    assert.equal(writer.write(7, ok([Uint8Array.of(1, 2, 3), new Uint8Array(100_000).fill(9)])), true);
    assert.equal(writer.write(8, failure), true);
    closeSync(fd);
    const frames = framesIn(file);
    assert.deepEqual(
      frames.map((f) => [f.kind, f.id]),
      [
        [Frame.RESULT, 7],
        [Frame.RESULT, 8],
      ],
    );
    const first = decodeResult(frames[0]?.payload ?? new Uint8Array());
    assert.ok(first.ok);
    assert.deepEqual(
      first.replies.map((r) => [r.byteLength, r[0]]),
      [
        [3, 1],
        [100_000, 9],
      ],
    );
    assert.equal(first.rowsOut, 3);
    assert.equal(first.nondeterministic, true);
    assert.deepEqual(decodeResult(frames[1]?.payload ?? new Uint8Array()), failure);
  });

  it('returns false where there is no results socket, and keeps returning false', () => {
    const writer = new ResultWriter(newResultLock(), 987_654);
    assert.equal(writer.write(1, ok([])), false);
    assert.equal(writer.write(2, ok([])), false);
  });

  it('a lock held past its wait (a thread that died holding it) ends the process instead of waiting for ever', () => {
    const lock = newResultLock();
    Atomics.store(new Int32Array(lock), 0, 1);
    let lost = 0;
    const writer = new ResultWriter(lock, 987_654, 50, () => lost++);
    assert.equal(writer.write(1, ok([])), false);
    assert.equal(lost, 1);
    // Once lost, the thread does not wait again: its results go to the main thread until the process ends.
    assert.equal(writer.write(2, ok([])), false);
    assert.equal(lost, 1);
  });

  it('frames from several threads at once never interleave', async () => {
    // A pipe, as the results socket, cuts writes larger than PIPE_BUF where another writer may come in.
    const fifo = path.join(mkdtempSync(path.join(tmpdir(), 'sse-results-')), 'results');
    execFileSync('mkfifo', [fifo]);
    // Read and write (Linux): opening it does not wait for a reader, and the reader's open does not wait either.
    const fd = openSync(fifo, 'r+');
    const received: Buffer[] = [];
    const reading = new Promise<void>((resolve, reject) => {
      createReadStream(fifo)
        .on('data', (chunk) => received.push(chunk as Buffer))
        .on('end', resolve)
        .on('error', reject);
    });
    const lock = newResultLock();
    const threads = 4;
    const perThread = 50;
    const source = `
      const { workerData } = require('node:worker_threads');
      const { ResultWriter } = require(${JSON.stringify(require.resolve('../../workers/result-writer'))});
      const writer = new ResultWriter(workerData.lock, workerData.fd);
      for (let i = 0; i < ${perThread}; i++) {
        const id = workerData.thread * 1000 + i;
        const reply = new Uint8Array(20_000 + i * 97).fill(id % 251);
        if (!writer.write(id, { ok: true, replies: [reply], rowsOut: 1, nondeterministic: false, table: null, scriptMs: 0 })) throw new Error('not written');
      }`;
    await Promise.all(
      Array.from(
        { length: threads },
        (_, thread) =>
          new Promise<void>((resolve, reject) => {
            const worker = new Worker(source, { eval: true, workerData: { lock, fd, thread } });
            worker.once('error', reject);
            worker.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`thread exited ${code}`))));
          }),
      ),
    );
    closeSync(fd);
    await reading;
    const frames: ReceivedFrame[] = [];
    new FrameReader((frame) => frames.push(frame)).push(Buffer.concat(received));
    assert.equal(frames.length, threads * perThread);
    for (const frame of frames) {
      const result = decodeResult(frame.payload);
      assert.ok(result.ok);
      const reply = result.replies[0] ?? new Uint8Array();
      assert.equal(reply.byteLength, 20_000 + (frame.id % 1000) * 97);
      assert.ok(reply.every((b) => b === frame.id % 251));
    }
  });
});
