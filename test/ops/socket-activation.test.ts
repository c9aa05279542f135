/**
 * Socket activation as systemd does it (systemd-socket-activate speaks the same LISTEN_FDS protocol):
 * the plugin serves Qlik's calls and /metrics on the sockets it was handed, also from a network
 * namespace of its own with no interface (the unit's PrivateNetwork=yes), where it can connect nowhere.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { after, before, describe, test } from 'node:test';

import { num, numbers, QlikClient } from '../helpers/qlik-client';
import { httpGet, type PluginProcess, sampleValue, spawnMain } from './process';

const ACTIVATE = '/usr/bin/systemd-socket-activate';
const UNSHARE = '/usr/bin/unshare';
const isRoot = process.platform === 'linux' && process.getuid?.() === 0;
const skip = !existsSync(ACTIVATE) ? 'systemd-socket-activate is not installed' : !isRoot ? 'a network namespace needs root' : false;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return typeof address === 'object' && address !== null ? address.port : 0;
}

/** systemd-socket-activate starts the program on the first connection, as a socket unit may. */
function knock(port: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.destroy();
      resolve();
    });
    socket.on('error', () => setTimeout(() => resolve(knock(port)), 50));
  });
}

describe('socket activation, in a network namespace of its own', { skip }, () => {
  let grpcPort: number;
  let metricsPort: number;
  let plugin: Omit<PluginProcess, 'port' | 'metricsPort'>;

  before(async () => {
    grpcPort = await freePort();
    metricsPort = await freePort();
    const env = { SSE_WORKERS: '1', SSE_LOG_FORMAT: 'json', SSE_PORT: '1', SSE_HOST: '127.0.0.1' };
    plugin = spawnMain(env, {
      execThrough: [
        ACTIVATE,
        `--listen=127.0.0.1:${grpcPort}`,
        `--listen=127.0.0.1:${metricsPort}`,
        '--fdname=grpc:metrics',
        ...Object.keys(env).map((name) => `--setenv=${name}`),
        '--setenv=PATH',
        // The unit's PrivateNetwork=yes: only a loopback of its own, which is down.
        UNSHARE,
        '--net',
        '--',
      ],
    });
    await knock(grpcPort);
    await plugin.waitForLine((line) => typeof line.msg === 'string' && line.msg.startsWith('listening on'));
  });

  after(() => plugin?.kill());

  test('serves a Qlik call on the gRPC socket it was handed', async () => {
    const client = new QlikClient(`127.0.0.1:${grpcPort}`);
    try {
      const result = await client.evaluate({
        script: 'args[0] * 2',
        params: [{ dataType: 1 }],
        bundles: [[[num(21)]]],
        deadlineMs: 30_000,
      });
      assert.deepEqual(numbers(result), [42]);
    } finally {
      client.close();
    }
    const listening = plugin.lines.find((line) => typeof line.msg === 'string' && line.msg.startsWith('listening on'));
    assert.equal(listening?.['port'], grpcPort);
  });

  test('serves /metrics on the metrics socket it was handed', async () => {
    const response = await httpGet(`http://127.0.0.1:${metricsPort}/metrics`);
    assert.equal(response.status, 200);
    assert.equal(sampleValue(response.body, 'sse_calls_in_flight'), 0);
  });

  test('the front has no network of its own: only a loopback', () => {
    const devices = readFileSync(`/proc/${plugin.child.pid}/net/dev`, 'latin1')
      .split('\n')
      .slice(2)
      .map((line) => line.trim().split(':')[0])
      .filter((name) => name !== '');
    assert.deepEqual(devices, ['lo']);
  });
});
