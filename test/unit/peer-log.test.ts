/** FirstCallPerHost: one info line per host, in bounded memory and at a bounded rate. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { FirstCallPerHost, hostOf } from '../../src/grpc/peer-log';

describe('hostOf', () => {
  test('drops the port of IPv4 and IPv6 peers as grpc-js writes them, keeps anything else whole', () => {
    assert.equal(hostOf('127.0.0.1:50123'), '127.0.0.1');
    assert.equal(hostOf('[::1]:50123'), '[::1]');
    assert.equal(hostOf('[2001:db8::7]:443'), '[2001:db8::7]');
    // grpc-js 1.14 writes IPv6 peers unbracketed: every connection of one host is still one host.
    assert.equal(hostOf('2001:db8::7:443'), '2001:db8::7');
    assert.equal(hostOf('::1:50123'), '::1');
    assert.equal(hostOf('::ffff:10.0.0.1:5000'), '10.0.0.1');
    assert.equal(hostOf('unknown'), 'unknown');
  });
});

describe('FirstCallPerHost', () => {
  test('first call per host only, whatever the port', () => {
    const first = new FirstCallPerHost();
    assert.deepEqual(
      ['10.0.0.1:1', '10.0.0.1:2', '10.0.0.2:1', '10.0.0.1:3'].map((peer) => first.isFirst(peer)),
      [true, false, true, false],
    );
  });

  test('remembers at most maxHosts, forgetting the least recently seen', () => {
    const first = new FirstCallPerHost(3, 1_000, () => 0);
    for (const host of ['a', 'b', 'c']) first.isFirst(`${host}:1`);
    assert.equal(first.isFirst('a:2'), false); // a is now the most recent
    assert.equal(first.isFirst('d:1'), true); // evicts b
    assert.equal(first.rememberedHosts, 3);
    assert.equal(first.isFirst('a:3'), false);
    assert.equal(first.isFirst('b:2'), true);
    for (let i = 0; i < 10_000; i++) first.isFirst(`10.1.${i >> 8}.${i & 255}:9`);
    assert.equal(first.rememberedHosts, 3);
  });

  test('at most maxLinesPerMinute first-seen lines a minute', () => {
    let nowMs = 0;
    const first = new FirstCallPerHost(1_000, 2, () => nowMs);
    assert.deepEqual(
      ['a', 'b', 'c', 'd'].map((host) => first.isFirst(`${host}:1`)),
      [true, true, false, false],
    );
    nowMs = 60_000;
    assert.deepEqual(
      ['e', 'f', 'g'].map((host) => first.isFirst(`${host}:1`)),
      [true, true, false],
    );
  });
});
