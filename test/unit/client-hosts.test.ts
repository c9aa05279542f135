/** ClientHosts: which host an address counts as for the per-host shares. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ClientHosts } from '../../src/grpc/client-hosts';
import { DEFAULT_CLIENT_PREFIX_V4, DEFAULT_CLIENT_PREFIX_V6 } from '../../src/ops/config';

const defaults = new ClientHosts({ clientPrefixV4: DEFAULT_CLIENT_PREFIX_V4, clientPrefixV6: DEFAULT_CLIENT_PREFIX_V6 });

describe('ClientHosts', () => {
  test('by default an IPv4 /24 and an IPv6 /64 are one host', () => {
    assert.equal(defaults.of('10.1.2.3'), '10.1.2.0/24');
    assert.equal(defaults.of('10.1.2.250'), '10.1.2.0/24');
    assert.equal(defaults.of('10.1.3.3'), '10.1.3.0/24');
    assert.equal(defaults.of('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), '2001:db8:1:2::/64');
    assert.equal(defaults.of('2001:db8:1:2::7'), '2001:db8:1:2::/64');
    assert.equal(defaults.of('[2001:db8:1:3::7]'), '2001:db8:1:3::/64');
    assert.equal(defaults.of('::1'), '::/64');
  });

  test('an IPv4 address seen through an IPv6 socket is that IPv4 address; what is not an address is kept whole', () => {
    assert.equal(defaults.of('::ffff:10.1.2.3'), '10.1.2.0/24');
    assert.equal(defaults.of('unknown'), 'unknown');
    assert.equal(defaults.of(''), '');
  });

  test('prefixes of the whole address give one host per address; prefixes off a byte boundary mask inside it', () => {
    const perAddress = new ClientHosts({ clientPrefixV4: 32, clientPrefixV6: 128 });
    assert.equal(perAddress.of('10.1.2.3'), '10.1.2.3');
    assert.equal(perAddress.of('::ffff:10.1.2.3'), '10.1.2.3');
    assert.equal(perAddress.of('2001:db8::7'), '2001:db8::7');
    const odd = new ClientHosts({ clientPrefixV4: 20, clientPrefixV6: 0 });
    assert.equal(odd.of('10.1.31.3'), '10.1.16.0/20');
    assert.equal(odd.of('2001:db8::7'), '::/0');
  });

  test('answers the same once its memory of addresses is full', () => {
    const hosts = new ClientHosts({ clientPrefixV4: 24, clientPrefixV6: 64 });
    for (let i = 0; i < 3000; i++) assert.equal(hosts.of(`10.${i >> 8}.${i & 255}.1`), `10.${i >> 8}.${i & 255}.0/24`);
    assert.equal(hosts.of('10.0.0.9'), '10.0.0.0/24');
  });
});
