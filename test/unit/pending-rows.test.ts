/**
 * Rows waiting for a task (src/calls/pending-rows.ts): small pieces, such as one-row messages, are copied
 * together instead of each keeping its gRPC message and objects alive, and what the pieces hold is
 * what the call's account counts, objects included.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { PendingRows, PIECE_OBJECT_BYTES } from '../../src/calls/pending-rows';
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
