/**
 * What a call's request messages hold in SSE_MAX_HELD_MB while grpc-js receives them
 * (src/grpc/incoming.ts): the bytes arrived so far, not the size a prefix declares; a compressed
 * message the size it may inflate to; all of it given back as the handler takes each message, or
 * when the stream closes. Pure: a real HeldBytes, no server.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { HeldBytes } from '../../src/calls/held-bytes';
import { IncomingMessages } from '../../src/grpc/incoming';

const MAX_MESSAGE = 1_000_000;

function framed(body: number, compressed = false): Buffer {
  const message = Buffer.alloc(5 + body);
  message[0] = compressed ? 1 : 0;
  message.writeUInt32BE(body, 1);
  return message;
}

describe('IncomingMessages', () => {
  it('holds the bytes of a message as they arrive, then the whole message until it is taken', () => {
    const held = new HeldBytes(16);
    const incoming = new IncomingMessages(held.open(), MAX_MESSAGE);
    incoming.received([], 1_000);
    assert.equal(held.bytes, 1_000, 'what arrived, not what the prefix declares');
    incoming.received([], 5_000);
    assert.equal(held.bytes, 5_000);
    incoming.received([framed(10_000)], 0);
    assert.equal(held.bytes, 10_005);
    incoming.taken();
    assert.equal(held.bytes, 0);
  });

  it('holds a finished compressed message at the size it may inflate to', () => {
    const held = new HeldBytes(16);
    const incoming = new IncomingMessages(held.open(), MAX_MESSAGE);
    incoming.received([framed(300, true), framed(200)], 50);
    assert.equal(held.bytes, MAX_MESSAGE + 205 + 50);
    incoming.taken();
    assert.equal(held.bytes, 205 + 50);
    incoming.close();
    assert.deepEqual([held.bytes, held.accounts], [0, 0]);
  });

  it('refuses as busy what passes the budget, and keeps what it held before', () => {
    const held = new HeldBytes(16);
    const incoming = new IncomingMessages(held.open(), MAX_MESSAGE);
    incoming.received([], 10 * 1024 * 1024);
    assert.throws(() => incoming.received([], 17 * 1024 * 1024), /^PluginError: the plugin is busy: .*SSE_MAX_HELD_MB/);
    assert.equal(held.bytes, 10 * 1024 * 1024);
    incoming.close();
    assert.equal(held.bytes, 0);
  });
});
