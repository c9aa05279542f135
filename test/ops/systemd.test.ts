/**
 * deploy/systemd/: the unit and its socket pass `systemd-analyze verify`, the unit's exposure rating
 * (`systemd-analyze security --offline=yes`) stays at or below 1.5 with its two users, and its settings
 * agree with the code: env names the plugin reads, the sandbox user set, only CAP_SETUID and
 * CAP_SETGID, the socket unit's ports in the order the plugin takes them, a stop timeout above the drain.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';

import { loadConfig } from '../../src/ops/config';

const DIR = path.join(__dirname, '..', '..', '..', 'deploy', 'systemd');
const SERVICE = path.join(DIR, 'qlik-sse-js.service');
const SOCKET = path.join(DIR, 'qlik-sse-js.socket');
/** Today's rating before the two users, in tenths (systemd-analyze --threshold takes tenths). */
const MAX_EXPOSURE_TENTHS = 15;

const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' });
const NO_ANALYZE = analyze.status !== 0 && 'systemd-analyze is not installed';

/** Every value of a key in the unit, in order (keys repeat: Environment=, SystemCallFilter=…). */
function values(file: string, key: string): string[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.startsWith(`${key}=`))
    .map((line) => line.slice(key.length + 1));
}

const environment: Record<string, string> = Object.fromEntries(
  values(SERVICE, 'Environment').map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]),
);

describe('the systemd unit', () => {
  test('systemd-analyze verify accepts the service and its socket', { skip: NO_ANALYZE }, () => {
    const verify = spawnSync('systemd-analyze', ['verify', SERVICE, SOCKET], { encoding: 'utf8' });
    assert.equal(verify.status, 0, verify.stderr);
    assert.equal(verify.stderr.trim(), '');
  });

  test('the exposure rating with two users is no worse than 1.5', { skip: NO_ANALYZE }, () => {
    const security = spawnSync('systemd-analyze', ['security', '--offline=yes', `--threshold=${MAX_EXPOSURE_TENTHS}`, SERVICE], {
      encoding: 'utf8',
    });
    const rating = /Overall exposure level for \S+: ([\d.]+)/.exec(security.stdout)?.[1];
    assert.equal(security.status, 0, `rating ${rating}: above ${MAX_EXPOSURE_TENTHS / 10}\n${security.stdout}`);
  });

  test('its settings are variables the plugin reads and accepts; the sandbox processes get their own user', () => {
    const read = new Set<string>();
    const watched = new Proxy(environment, {
      get(target, name) {
        if (typeof name === 'string') read.add(name);
        return Reflect.get(target, name);
      },
    });
    const config = loadConfig(watched);
    for (const name of Object.keys(environment).filter((n) => n.startsWith('SSE_')))
      assert.ok(read.has(name), `${name} is not read by src/ops/config.ts`);
    assert.equal(config.sandboxUser, 'qlik-sse-js-sandbox');
    assert.notEqual(values(SERVICE, 'User')[0], config.sandboxUser);
    const stopMs = Number(values(SERVICE, 'TimeoutStopSec')[0]) * 1000;
    assert.ok(stopMs > config.shutdownGraceMs + config.scriptTimeoutMs, `TimeoutStopSec ${stopMs} ms`);
  });

  test('the front holds only CAP_SETUID and CAP_SETGID, ambient, and no network of its own', () => {
    assert.deepEqual(values(SERVICE, 'CapabilityBoundingSet'), ['CAP_SETUID CAP_SETGID']);
    assert.deepEqual(values(SERVICE, 'AmbientCapabilities'), ['CAP_SETUID CAP_SETGID']);
    assert.deepEqual(values(SERVICE, 'PrivateNetwork'), ['yes']);
    assert.deepEqual(values(SERVICE, 'Sockets'), ['qlik-sse-js.socket']);
  });

  test("the socket unit's ports are, in order, the gRPC and metrics ports the unit names", () => {
    const ports = values(SOCKET, 'ListenStream').map((address) => Number(address.split(':').pop()));
    const config = loadConfig(environment);
    assert.deepEqual(ports, [config.port, config.metricsPort]);
  });
});
