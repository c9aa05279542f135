/** ClientHosts: which host an address counts as for the per-host shares. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ClientHosts, isAddressOrNetwork, priorityCheck } from '../../src/grpc/client-hosts';
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

  test('an address SSE_PRIORITY_HOSTS lists is a host of its own, named by the address, and a priority host; its neighbours are not', () => {
    const entries = ['10.1.2.7', '10.9.0.0/28', '2001:db8::/64', '::ffff:10.8.0.0/120'];
    const hosts = new ClientHosts({ clientPrefixV4: 24, clientPrefixV6: 48, priorityHosts: entries });
    const isPriority = priorityCheck(entries);
    for (const [address, host] of [
      ['10.1.2.7', '10.1.2.7'],
      ['::ffff:10.1.2.7', '10.1.2.7'],
      ['10.9.0.15', '10.9.0.15'],
      ['2001:db8::5', '2001:db8::5'],
      ['10.8.0.200', '10.8.0.200'],
    ]) {
      assert.equal(hosts.of(address as string), host);
      assert.equal(isPriority(host as string), true, `${host} is not a priority host`);
    }
    for (const [address, host] of [
      ['10.1.2.8', '10.1.2.0/24'],
      ['10.9.0.16', '10.9.0.0/24'],
      ['2001:db8:0:1::5', '2001:db8::/48'],
      ['10.8.1.1', '10.8.1.0/24'],
    ]) {
      assert.equal(hosts.of(address as string), host);
      assert.equal(isPriority(host as string), false, `${host} is a priority host`);
    }
    assert.equal(priorityCheck([])('10.1.2.7'), false);
    assert.equal(isAddressOrNetwork('10.0.0.0/24'), true);
    assert.equal(isAddressOrNetwork('fe80::1'), true);
    assert.equal(isAddressOrNetwork('10.0.0.0/33'), false);
    assert.equal(isAddressOrNetwork('qlik.example'), false);
  });

  test('answers the same once its memory of addresses is full', () => {
    const hosts = new ClientHosts({ clientPrefixV4: 24, clientPrefixV6: 64 });
    for (let i = 0; i < 3000; i++) assert.equal(hosts.of(`10.${i >> 8}.${i & 255}.1`), `10.${i >> 8}.${i & 255}.0/24`);
    assert.equal(hosts.of('10.0.0.9'), '10.0.0.0/24');
  });
});
