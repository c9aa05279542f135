/**
 * The front-wide budget of held bytes (src/calls/held-bytes.ts) on its own: what an account counts,
 * the two busy messages (the front is full, or this call alone passes the budget), that a refused hold
 * leaves the total unchanged, that releasing never gives back more than was held, and that a call's one
 * account is closed by the first of its stream's end events, once. Pure: no server, no clock.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';

import { HeldBytes, heldLimitError, openCallAccount } from '../../src/calls/held-bytes';
import { PluginError } from '../../src/contract/errors';

const MB = 1024 * 1024;

function busy(read: () => unknown, message: string): void {
  assert.throws(read, (error: unknown) => {
    assert.ok(error instanceof PluginError, String(error));
    assert.equal(error.code, 'RESOURCE_EXHAUSTED');
    assert.equal(error.message, message);
    return true;
  });
}

describe('HeldBytes and HeldAccount', () => {
  it('counts what each account holds, in total and at its peak', () => {
    const held = new HeldBytes(1);
    const a = held.open();
    const b = held.open();
    a.hold(300);
    b.hold(500);
    a.release(100);
    assert.equal(a.bytes, 200);
    assert.equal(b.bytes, 500);
    assert.equal(held.bytes, 700);
    assert.equal(held.peakBytes, 800);
    assert.equal(held.accounts, 2);
  });

  it('refuses a hold past the budget with the "already hold" message while others hold, leaving the total as it was', () => {
    const held = new HeldBytes(1);
    const other = held.open();
    other.hold(MB - 10);
    const call = held.open();
    call.hold(5);
    busy(
      () => call.hold(6),
      'the plugin is busy: its calls already hold close to 1 MB of rows and results waiting (SSE_MAX_HELD_MB); try again shortly',
    );
    assert.equal(held.bytes, MB - 5);
    assert.equal(call.bytes, 5);
  });

  it('says so when the call alone passes the budget: waiting would not help', () => {
    const held = new HeldBytes(1);
    const call = held.open();
    call.hold(MB - 1);
    busy(
      () => call.hold(2),
      "the plugin is busy: this call's rows and results waiting in the plugin pass the 1 MB it holds for all calls together (SSE_MAX_HELD_MB)",
    );
    assert.deepEqual(
      heldLimitError(1, true).message,
      "the plugin is busy: this call's rows and results waiting in the plugin pass the 1 MB it holds for all calls together (SSE_MAX_HELD_MB)",
    );
  });

  it('never gives back more than an account holds, nor a negative amount', () => {
    const held = new HeldBytes(1);
    const other = held.open();
    other.hold(1_000);
    const call = held.open();
    call.hold(100);
    call.release(-50);
    assert.equal(call.bytes, 100);
    call.release(10_000);
    assert.equal(call.bytes, 0);
    assert.equal(held.bytes, 1_000, "another account's bytes are untouched");
  });

  it('gives back all it holds when closed, once, and counts nothing held after that', () => {
    const held = new HeldBytes(1);
    const call = held.open();
    call.hold(400);
    call.close();
    call.close();
    call.hold(400);
    assert.equal(held.bytes, 0);
    assert.equal(held.accounts, 0);
    assert.equal(call.bytes, 0);
  });
});

describe('openCallAccount', () => {
  for (const event of ['close', 'cancelled', 'finish']) {
    it(`closes the call's account at its stream's '${event}'`, () => {
      const held = new HeldBytes(1);
      const stream = new EventEmitter();
      const account = openCallAccount(held, stream);
      account.hold(1_000);
      assert.equal(held.accounts, 1);
      stream.emit(event, new Error('gone'));
      assert.equal(held.bytes, 0);
      assert.equal(held.accounts, 0);
    });
  }

  it("keeps it open at 'error': grpc-js then ends the stream, and replies already written are still on their way", () => {
    const held = new HeldBytes(1);
    const stream = new EventEmitter();
    stream.on('error', () => undefined);
    openCallAccount(held, stream).hold(10);
    stream.emit('error', new Error('failed'));
    assert.equal(held.bytes, 10);
    stream.emit('finish');
    assert.equal(held.bytes, 0);
    assert.equal(held.accounts, 0);
  });

  it('closes it once however many end events follow, and leaves no listeners behind on those that fired', () => {
    const held = new HeldBytes(1);
    const stream = new EventEmitter();
    openCallAccount(held, stream).hold(10);
    stream.emit('finish');
    stream.emit('close');
    stream.emit('cancelled');
    assert.equal(held.accounts, 0);
    assert.equal(stream.listenerCount('finish') + stream.listenerCount('close') + stream.listenerCount('cancelled'), 0);
  });
});
