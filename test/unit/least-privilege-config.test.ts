/**
 * The pure parts of least privilege: which capability sets may switch users, and how the sockets
 * systemd hands over (LISTEN_FDS) are told apart and tied to this process.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { loadConfig } from '../../src/ops/config';
import { isFrontGroup, maySwitchUsers } from '../../src/sandboxes/sandbox-confinement';

describe('switching users needs both CAP_SETUID and CAP_SETGID', () => {
  const cases: [string, bigint | undefined, boolean][] = [
    ['root (every capability)', 0x1fffeffffffn, true],
    ['CAP_SETUID and CAP_SETGID only (the systemd unit)', 0xc0n, true],
    ['CAP_SETUID alone', 0x80n, false],
    ['CAP_SETGID alone', 0x40n, false],
    ['none (an ordinary user)', 0n, false],
    ['unknown (no /proc)', undefined, false],
  ];
  for (const [name, capEff, expected] of cases) test(name, () => assert.equal(maySwitchUsers(capEff), expected));
});

describe('sockets from systemd (LISTEN_FDS)', () => {
  const pid = String(process.pid);
  test('none without LISTEN_FDS, or when they are meant for another process', () => {
    assert.equal(loadConfig({}).inheritedSockets, undefined);
    assert.equal(loadConfig({ LISTEN_FDS: '1', LISTEN_PID: String(process.pid + 1) }).inheritedSockets, undefined);
  });

  test('one socket: gRPC on fd 3, no metrics', () => {
    const config = loadConfig({ LISTEN_FDS: '1', LISTEN_PID: pid });
    assert.deepEqual(config.inheritedSockets, { grpcFd: 3, metricsFd: undefined });
    assert.equal(config.metricsPort, undefined);
  });

  test('two sockets: gRPC then metrics, in the order of the socket unit; metrics served without SSE_METRICS_PORT', () => {
    const config = loadConfig({ LISTEN_FDS: '2', LISTEN_PID: pid, LISTEN_FDNAMES: 'qlik-sse-js.socket:qlik-sse-js.socket' });
    assert.deepEqual(config.inheritedSockets, { grpcFd: 3, metricsFd: 4 });
    assert.equal(config.metricsPort, 0);
  });

  test('a socket named "metrics" is the metrics one, wherever it comes', () => {
    const config = loadConfig({ LISTEN_FDS: '2', LISTEN_PID: pid, LISTEN_FDNAMES: 'metrics:grpc' });
    assert.deepEqual(config.inheritedSockets, { grpcFd: 4, metricsFd: 3 });
  });

  test('a count other than 1 or 2, or only the metrics socket, stops the start naming the variable', () => {
    assert.throws(() => loadConfig({ LISTEN_FDS: '3', LISTEN_PID: pid }), /LISTEN_FDS="3" is invalid: expected 1 \(gRPC\) or 2/);
    assert.throws(
      () => loadConfig({ LISTEN_FDS: '1', LISTEN_PID: pid, LISTEN_FDNAMES: 'metrics' }),
      /LISTEN_FDNAMES: systemd passed only the metrics socket/,
    );
  });
});

describe('SSE_SANDBOX_USER and SSE_SANDBOX_GROUP', () => {
  test('unset by default; a name or a number is taken as given, checked at start', () => {
    assert.deepEqual([loadConfig({}).sandboxUser, loadConfig({}).sandboxGroup], [undefined, undefined]);
    const config = loadConfig({ SSE_SANDBOX_USER: 'qlik-sse-js-sandbox', SSE_SANDBOX_GROUP: '998' });
    assert.deepEqual([config.sandboxUser, config.sandboxGroup], ['qlik-sse-js-sandbox', '998']);
  });
});

describe("the sandbox processes' group", () => {
  test("is refused when the front holds it: a key file readable by the front's group would be theirs too", () => {
    assert.equal(isFrontGroup(998, [998]), true);
    assert.equal(isFrontGroup(998, [1000, 998, 4]), true);
    assert.equal(isFrontGroup(999, [998, 4]), false);
  });
});
