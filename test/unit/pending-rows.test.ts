/**
 * Rows waiting for a task (src/calls/pending-rows.ts): small pieces, such as one-row messages, are copied
 * together instead of each keeping its gRPC message and objects alive, and what the pieces hold is
 * what the call's account counts, objects included; how big a task is, how it shrinks for a slow
 * script, and that an aggregation is never cut. Pure: scriptMs are plain numbers, no clock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { MIN_TASK_BYTES, PendingRows, PIECE_OBJECT_BYTES } from '../../src/calls/pending-rows';
import { splitRows } from '../../src/contract/rows';
import { encodeBundle, num } from '../helpers/qlik-client';

describe('PendingRows', () => {
  it('keeps 10,000 one-row messages as a few shared buffers, in order, counted at what they hold', () => {
    const pending = new PendingRows('aggregate', 256 * 1024);
    const messages = Array.from({ length: 10_000 }, (_, i) => encodeBundle([[num(i)]]));
    let added = 0;
    for (const message of messages) added += pending.push(splitRows(message, pending.pieceBytes));
    const taken = pending.take();
    const rowBytes = messages.reduce((n, m) => n + m.length, 0);
    assert.equal(taken.rows, 10_000);
    assert.equal(taken.bytes, rowBytes);
    assert.deepEqual(Buffer.concat(taken.chunks.map((c) => c.bytes)), Buffer.concat(messages));
    assert.ok(taken.chunks.length <= Math.ceil(rowBytes / (32 * 1024)), `${taken.chunks.length} pieces`);
    assert.equal(taken.heldBytes, added);
    assert.ok(taken.heldBytes >= rowBytes + taken.chunks.length * PIECE_OBJECT_BYTES);
    assert.ok(taken.heldBytes <= 2 * rowBytes + 64 * 1024, `held ${taken.heldBytes} for ${rowBytes} bytes of rows`);
    assert.equal(pending.clear(), 0);
  });

  it('keeps a large piece as the view it is, and small ones after it in order', () => {
    const pending = new PendingRows('rows', 64 * 1024);
    const big = encodeBundle(Array.from({ length: 200 }, (_, i) => [num(i)]));
    const small = encodeBundle([[num(7)]]);
    pending.push([{ bytes: small, rows: 1 }]);
    pending.push([{ bytes: big, rows: 200 }]);
    pending.push([{ bytes: small, rows: 1 }]);
    pending.push([{ bytes: small, rows: 1 }]);
    const taken = pending.take();
    assert.deepEqual(Buffer.concat(taken.chunks.map((c) => c.bytes)), Buffer.concat([small, big, small, small]));
    assert.equal(taken.chunks[1]?.bytes.buffer, big.buffer, 'the large piece is not copied');
    assert.equal(taken.rows, 203);
  });
});

describe('PendingRows: task size', () => {
  const piece = (bytes: number, rows = 1) => ({ bytes: Buffer.alloc(bytes, 1), rows });

  it('is full once a task of rows waits, and a task takes about that many bytes, in order', () => {
    const pending = new PendingRows('rows', 32 * 1024);
    pending.push([piece(20 * 1024, 2)]);
    assert.equal(pending.full, false);
    pending.push([piece(20 * 1024, 3), piece(20 * 1024, 4)]);
    assert.equal(pending.full, true);
    const taken = pending.take();
    assert.deepEqual([taken.bytes, taken.rows, taken.chunks.length], [40 * 1024, 5, 2]);
    assert.deepEqual([pending.bytes, pending.rows, pending.full], [20 * 1024, 4, false]);
  });

  it('shrinks tasks for a slow script to fit about 20 ms, never below MIN_TASK_BYTES, and keeps them for a fast one', () => {
    const pending = new PendingRows('rows', 256 * 1024);
    pending.adapt(256 * 1024, 20);
    assert.equal(pending.taskBytes, 256 * 1024, 'a 20 ms task is the right size');
    pending.adapt(256 * 1024, 80);
    assert.equal(pending.taskBytes, 64 * 1024);
    pending.adapt(64 * 1024, 10_000);
    assert.equal(pending.taskBytes, MIN_TASK_BYTES);
    pending.adapt(MIN_TASK_BYTES, 1);
    assert.equal(pending.taskBytes, MIN_TASK_BYTES, 'it does not grow back');
  });

  it('never cuts or shrinks an aggregation: it is never full, and takes every row as one task', () => {
    const pending = new PendingRows('aggregate', 16 * 1024);
    pending.push([piece(64 * 1024, 10), piece(64 * 1024, 10)]);
    pending.adapt(128 * 1024, 10_000);
    assert.equal(pending.full, false);
    assert.equal(pending.pieceBytes, Number.POSITIVE_INFINITY);
    assert.deepEqual([pending.take().rows, pending.rows], [20, 0]);
  });

  it('cuts per-row messages no larger than four minimum tasks, so any task size can be made of them', () => {
    assert.equal(new PendingRows('rows', 256 * 1024).pieceBytes, 4 * MIN_TASK_BYTES);
    assert.equal(new PendingRows('rows', 8 * 1024).pieceBytes, 8 * 1024);
  });

  it('gives back, when cleared, exactly what its pushes added, and holds nothing after', () => {
    const pending = new PendingRows('rows', 64 * 1024);
    let added = 0;
    for (const bytes of [10, 2_000, 30, 5_000]) added += pending.push([piece(bytes)]);
    assert.equal(pending.clear(), added);
    assert.deepEqual([pending.bytes, pending.rows, pending.clear()], [0, 0, 0]);
  });
});
