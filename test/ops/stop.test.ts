/**
 * Graceful stop of the real process: on SIGTERM/SIGINT it refuses new calls, lets the call in
 * flight finish, disposes the sandboxes, closes the pool and exits 0 by itself (no signal, no
 * segfault); past SSE_SHUTDOWN_GRACE_MS the calls still running are cancelled.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { checkHealth } from '../../src/ops/healthcheck';
import { DataType, num, numbers, QlikClient } from '../helpers/qlik-client';
import { metricsText, type PluginProcess, SLOW_SCRIPT, sampleValue, startMain, until } from './process';

const ONE_NUMBER = { params: [{ dataType: DataType.NUMERIC }], bundles: [[[num(5)]]] };

async function oneCallRunning(plugin: PluginProcess): Promise<void> {
  const running = await until(
    async () => sampleValue(await metricsText(plugin.metricsPort ?? 0), 'sse_busy_workers'),
    (busy) => busy === 1,
  );
  assert.equal(running, 1);
}

describe('graceful stop of the real process', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal}: the call in flight completes, new calls are refused, exit 0 without a signal`, async () => {
      const plugin = await startMain({ SSE_WORKERS: '2', SSE_SCRIPT_TIMEOUT_MS: '5000', SSE_METRICS_PORT: '0' });
      const address = `127.0.0.1:${plugin.port}`;
      const client = new QlikClient(address);
      try {
        const slow = client.evaluate({ script: SLOW_SCRIPT, ...ONE_NUMBER });
        await oneCallRunning(plugin);
        plugin.child.kill(signal);
        await plugin.waitForLine((line) => String(line.msg).startsWith('stopping'));

        const refused = await client.evaluate({ script: 'args[0]', ...ONE_NUMBER });
        assert.equal(refused.code, grpc.status.UNAVAILABLE);
        assert.equal(refused.details, 'the plugin is shutting down; try again on another instance');
        assert.equal(await checkHealth(address, grpc.credentials.createInsecure()), 'NOT_SERVING');

        const finished = await slow;
        assert.equal(finished.code, grpc.status.OK, finished.details);
        assert.deepEqual(numbers(finished), [5]);
        const exit = await plugin.exited;
        assert.deepEqual(exit, { code: 0, signal: null }, plugin.stderr());

        const stopping = plugin.lines.find((line) => String(line.msg).startsWith('stopping'));
        assert.equal(stopping?.['reason'], signal);
        assert.equal(stopping?.['graceMs'], 10_000);
        assert.ok(plugin.lines.some((line) => line.msg === 'stopped: sandbox processes ended'));
        // It exited by itself once the call finished: not at the end of its 10 s grace, nor forced by
        // its exit watchdog; either would have said so (events, not a time).
        assert.equal(
          plugin.lines.some((line) => String(line.msg).startsWith('grace period over')),
          false,
        );
        assert.equal(
          plugin.lines.some((line) => String(line.msg).startsWith('still running after stop')),
          false,
        );
        assert.doesNotMatch(plugin.stderr(), /segmentation|fatal|abort/i);
      } finally {
        client.close();
        await plugin.kill();
      }
    });
  }

  test('Ctrl+C in a terminal (SIGINT to the whole process group): the call in flight still completes', async () => {
    const plugin = await startMain({ SSE_WORKERS: '2', SSE_SCRIPT_TIMEOUT_MS: '5000', SSE_METRICS_PORT: '0' }, { ownGroup: true });
    const client = new QlikClient(`127.0.0.1:${plugin.port}`);
    try {
      const slow = client.evaluate({ script: SLOW_SCRIPT, ...ONE_NUMBER });
      await oneCallRunning(plugin);
      process.kill(-(plugin.child.pid ?? 0), 'SIGINT');
      const finished = await slow;
      assert.equal(finished.code, grpc.status.OK, finished.details);
      assert.deepEqual(numbers(finished), [5]);
      assert.deepEqual(await plugin.exited, { code: 0, signal: null }, plugin.stderr());
    } finally {
      client.close();
      await plugin.kill();
    }
  });

  test('past SSE_SHUTDOWN_GRACE_MS the call still running is cancelled and the process still exits 0', async () => {
    const plugin = await startMain({
      SSE_WORKERS: '1',
      SSE_SCRIPT_TIMEOUT_MS: '5000',
      SSE_SHUTDOWN_GRACE_MS: '200',
      SSE_METRICS_PORT: '0',
    });
    const client = new QlikClient(`127.0.0.1:${plugin.port}`);
    try {
      const slow = client.evaluate({ script: SLOW_SCRIPT, ...ONE_NUMBER });
      await oneCallRunning(plugin);
      plugin.child.kill('SIGTERM');
      const cut = await slow;
      assert.notEqual(cut.code, grpc.status.OK);
      assert.deepEqual(numbers(cut), []);
      assert.deepEqual(await plugin.exited, { code: 0, signal: null }, plugin.stderr());
      const warning = plugin.lines.find((line) => String(line.msg).startsWith('grace period over'));
      assert.deepEqual({ calls: warning?.['calls'], graceMs: warning?.['graceMs'] }, { calls: 1, graceMs: 200 });
    } finally {
      client.close();
      await plugin.kill();
    }
  });

  test('a second signal exits at once with code 1', async () => {
    const plugin = await startMain({ SSE_WORKERS: '1', SSE_SCRIPT_TIMEOUT_MS: '5000', SSE_METRICS_PORT: '0' });
    const client = new QlikClient(`127.0.0.1:${plugin.port}`);
    try {
      const slow = client.evaluate({ script: SLOW_SCRIPT, ...ONE_NUMBER });
      await oneCallRunning(plugin);
      plugin.child.kill('SIGTERM');
      await plugin.waitForLine((line) => String(line.msg).startsWith('stopping'));
      plugin.child.kill('SIGTERM');
      assert.deepEqual(await plugin.exited, { code: 1, signal: null });
      assert.ok(plugin.lines.some((line) => String(line.msg).startsWith('second signal: exiting without waiting')));
      assert.notEqual((await slow).code, grpc.status.OK);
    } finally {
      client.close();
      await plugin.kill();
    }
  });
});
