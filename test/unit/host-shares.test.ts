/**
 * Each client host's share of the held bytes and of the open calls (src/calls/host-shares.ts,
 * src/calls/held-bytes.ts, src/calls/open-calls.ts) on their own: a host past its share is refused
 * naming SSE_HOST_SHARE_PERCENT while another host is served, what a host gives back makes room for it
 * again, the front-wide bound still applies beside the shares, and a host's entry goes with its last
 * call. Pure: no server, no clock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { HeldBytes } from '../../src/calls/held-bytes';
import { HostShares, shareOf } from '../../src/calls/host-shares';
import { OpenCallSlots } from '../../src/calls/open-calls';
import { PluginError } from '../../src/contract/errors';

const MB = 1024 * 1024;

function refusedWith(read: () => unknown, pattern: RegExp): void {
  assert.throws(read, (error: unknown) => {
    assert.ok(error instanceof PluginError, String(error));
    assert.equal(error.code, 'RESOURCE_EXHAUSTED');
    assert.match(error.message, pattern);
    return true;
  });
}

describe('held bytes per client host', () => {
  it("refuses a host past its half, naming the setting, while another host's hold is served", () => {
    let refusals = 0;
    const held = new HeldBytes(16, 50, () => refusals++);
    const a = held.open('10.0.1.0/24');
    const a2 = held.open('10.0.1.0/24');
    const b = held.open('10.0.2.0/24');
    a.hold(4 * MB);
    a2.hold(4 * MB - 10);
    refusedWith(
      () => a2.hold(100),
      /^the plugin is busy: calls from 10\.0\.1\.0\/24 already hold close to their host's share, 50% of the 16 MB .*\(SSE_HOST_SHARE_PERCENT of SSE_MAX_HELD_MB\); try again shortly$/,
    );
    assert.equal(held.bytesOf('10.0.1.0/24'), 8 * MB - 10);
    b.hold(8 * MB);
    assert.deepEqual([held.bytes, held.bytesOf('10.0.2.0/24'), refusals], [16 * MB - 10, 8 * MB, 1]);
    // Given back, it fits again; closed, the host's entry is gone.
    a.release(MB);
    a2.hold(100);
    a.close();
    a2.close();
    assert.equal(held.bytesOf('10.0.1.0/24'), 0);
  });

  it('says when one call alone passes its host share', () => {
    const held = new HeldBytes(16, 25);
    refusedWith(() => held.open('h').hold(5 * MB), /this call's rows and results waiting in the plugin pass one client host's share, 25%/);
  });

  it('at 100 percent a host may use the whole budget, and the front-wide refusal is the one said', () => {
    const held = new HeldBytes(16, 100);
    const a = held.open('h');
    a.hold(16 * MB);
    refusedWith(() => held.open('other').hold(1), /its calls already hold close to 16 MB .*\(SSE_MAX_HELD_MB\)/);
  });
});

describe('open calls per client host', () => {
  it("refuses a host's call past its share naming the setting, serves another host, and the bound for all", () => {
    let refusals = 0;
    const slots = new OpenCallSlots(4, 50, () => refusals++);
    const a1 = slots.admit('a');
    slots.admit('a');
    refusedWith(
      () => slots.admit('a'),
      /^the plugin is busy: calls from a hold 2 of the 4 calls it keeps open, their host's share \(SSE_HOST_SHARE_PERCENT=50\)/,
    );
    slots.admit('b');
    slots.admit('c');
    refusedWith(() => slots.admit('d'), /^the plugin is busy: 4 calls are open at once/);
    assert.deepEqual([slots.size, slots.callsOf('a'), refusals], [4, 2, 2]);
    a1.release();
    a1.release();
    assert.deepEqual([slots.size, slots.callsOf('a')], [3, 1]);
    slots.admit('a');
    assert.equal(slots.callsOf('a'), 2);
  });
});

describe('HostShares', () => {
  it('keeps a host while it has members, forgets idle ones past a few hundred, and a share is never below 1', () => {
    const shares = new HostShares();
    const first = shares.join('h');
    const second = shares.join('h');
    assert.equal(first, second);
    first.used += 5;
    shares.leave(first);
    assert.deepEqual([shares.size, shares.usedBy('h')], [1, 5]);
    first.used -= 5;
    shares.leave(second);
    assert.equal(shares.usedBy('h'), 0);
    // Idle hosts are forgotten past a few hundred: a client cycling networks cannot grow the map.
    for (let i = 0; i < 1_000; i++) shares.leave(shares.join(`10.${i >> 8}.${i & 255}.0/24`));
    assert.ok(shares.size <= 257, `${shares.size} hosts kept`);
    assert.deepEqual([shareOf(4, 50), shareOf(1, 1), shareOf(4096, 50)], [2, 1, 2048]);
  });
});
