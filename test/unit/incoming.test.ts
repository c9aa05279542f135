/**
 * What a call's request messages hold in SSE_MAX_HELD_MB while grpc-js receives them
 * (src/grpc/incoming.ts): the bytes arrived so far, not the size a prefix declares; a compressed
 * message the size it may inflate to; all of it given back as the handler takes each message, or
 * when the stream closes. Pure: a real HeldBytes, no server.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { StreamDecoder } from '@grpc/grpc-js/build/src/stream-decoder';
import { HeldBytes } from '../../src/calls/held-bytes';

import { IncomingMessages, MAX_SMALL_PIECES, PieceJoiner } from '../../src/grpc/incoming';

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

describe('PieceJoiner: the pieces of a message grpc-js keeps until its last byte', () => {
  /** grpc-js's own decoder, with the joiner after each write as src/grpc/incoming.ts wires it. */
  function decoderWithJoiner(): { write(data: Buffer): Buffer[]; pieces(): number } {
    const decoder = new StreamDecoder(MAX_MESSAGE);
    const joiner = new PieceJoiner();
    const internal = decoder as unknown as { readPartialMessage: Buffer[] };
    return {
      write(data) {
        const finished = decoder.write(data);
        joiner.compact(decoder as unknown as Parameters<PieceJoiner['compact']>[0]);
        return finished;
      },
      pieces: () => internal.readPartialMessage.length,
    };
  }

  function message(bytes: number): Buffer {
    const framedMessage = framed(bytes);
    for (let i = 0; i < bytes; i++) framedMessage[5 + i] = i % 251;
    return framedMessage;
  }

  it('joins tiny pieces into few buffers, and the message comes out byte for byte', () => {
    const whole = message(3_000);
    const decoder = decoderWithJoiner();
    for (let i = 0; i < 2_000; i++) assert.deepEqual(decoder.write(whole.subarray(i, i + 1)), []);
    // 1,995 one-byte pieces of the body so far, kept in joined buffers of 1, 2 KiB.
    assert.ok(decoder.pieces() <= 2, `${decoder.pieces()} pieces kept`);
    const [out] = decoder.write(whole.subarray(2_000));
    assert.deepEqual(out, whole);
  });

  it('keeps pieces of whole frames as they are', () => {
    const whole = message(64 * 1024);
    const decoder = decoderWithJoiner();
    for (let offset = 0; offset < 48 * 1024; offset += 16 * 1024) decoder.write(whole.subarray(offset, offset + 16 * 1024));
    assert.equal(decoder.pieces(), 3);
    assert.deepEqual(decoder.write(whole.subarray(48 * 1024)), [whole]);
  });

  it('refuses a message that keeps coming in tiny pieces', () => {
    const whole = message(MAX_SMALL_PIECES + 100);
    const decoder = decoderWithJoiner();
    assert.throws(() => {
      for (let i = 0; i < whole.length; i++) decoder.write(whole.subarray(i, i + 1));
    }, /arrived in more than 4096 pieces of 1 bytes on average/);
  });
});
