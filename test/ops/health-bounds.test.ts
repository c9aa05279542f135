/**
 * The health service under a hostile client: grpc-health-check 2.1.0 kept a map entry for every name
 * a Watch asked about, and names could be 16 MiB; watch-and-cancel calls with large names aborted the
 * plugin. Now names are bounded (512-byte requests, refused from the length
 * prefix) and unknown names keep no state. Scaled down: tens of MiB instead of gigabytes.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

import * as grpc from '@grpc/grpc-js';

import { boundHealthRequests, MAX_HEALTH_REQUEST_BYTES, PluginHealth } from '../../src/grpc/health';
import { check, distinctName, healthClient, watchFlood, watchOnce } from '../helpers/health-client';
import { startTestPlugin } from '../helpers/plugin';
import { DataType, num, numbers } from '../helpers/qlik-client';
import { until } from './process';

setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

function heapUsedBytes(): number {
  collectGarbage();
  collectGarbage();
  return process.memoryUsage().heapUsed;
}

const MIB = 1024 * 1024;

describe('health requests from a hostile client', () => {
  test("watch-and-cancel with 40 distinct 1 MiB names: each refused, the plugin's heap as it was", async () => {
    const t = await startTestPlugin();
    try {
      assert.deepEqual(await watchFlood(t.plugin.port, 1, 16), { SERVICE_UNKNOWN: 1 });
      const before = heapUsedBytes();
      const tally = await watchFlood(t.plugin.port, 40, MIB);
      const grownBytes = heapUsedBytes() - before;
      // 40 MiB of names would stay if they were kept; allow noise well below that.
      assert.ok(grownBytes < 8 * MIB, `heap grew by ${grownBytes} bytes`);
      assert.deepEqual(tally, { RESOURCE_EXHAUSTED: 40 });
    } finally {
      await t.stop();
    }
  });

  test("a 15 MiB health request is refused from its length prefix while another client's script call answers", async () => {
    const t = await startTestPlugin();
    const attacker = healthClient(t.address);
    try {
      const [refused, evaluated] = await Promise.all([
        check(attacker, 'x'.repeat(15 * MIB)),
        t.client.evaluate({ script: 'args[0] * 2', params: [{ dataType: DataType.NUMERIC }], bundles: [[[num(21)]]] }),
      ]);
      assert.equal(refused.code, grpc.status.RESOURCE_EXHAUSTED, refused.details);
      // grpc-js's own message: the interceptor's lower limit applied (src/grpc/health.ts reaches grpc-js
      // internals). grpc-js says it from the 5-byte length prefix, before reading the message: that,
      // not how soon the refusal came, is what shows the 15 MiB were never taken in.
      assert.match(refused.details, new RegExp(`^Received message larger than max \\(\\d+ vs ${MAX_HEALTH_REQUEST_BYTES}\\)$`));
      assert.equal(evaluated.code, grpc.status.OK, evaluated.details);
      assert.deepEqual(numbers(evaluated), [42]);
      assert.deepEqual(await check(attacker, 'qlik.sse.Connector'), { code: grpc.status.OK, details: '', status: 'SERVING' });
    } finally {
      attacker.close();
      await t.stop();
    }
  });
});

describe('PluginHealth keeps state only for the names it serves', () => {
  test('300 watch-and-cancel calls with distinct names: SERVICE_UNKNOWN once each, no state left', async () => {
    const health = new PluginHealth(['', 'qlik.sse.Connector']);
    health.setAll('SERVING');
    const server = new grpc.Server({ interceptors: [boundHealthRequests] });
    health.addToServer(server);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound))),
    );
    const client = healthClient(`127.0.0.1:${port}`);
    try {
      for (let i = 0; i < 300; i++)
        assert.deepEqual(await watchOnce(client, distinctName(i, MAX_HEALTH_REQUEST_BYTES - 8)), { first: 'SERVICE_UNKNOWN' });
      assert.deepEqual(health.stateSize(), { names: 2, watchers: 0 });
      assert.deepEqual(await check(client, 'no.such.Service'), {
        code: grpc.status.NOT_FOUND,
        details: 'unknown service name: this plugin serves "" and "qlik.sse.Connector"',
      });

      // A watcher of a served name sees changes, and is gone once cancelled.
      const call = client['Watch']?.({ service: '' }) as grpc.ClientReadableStream<{ status: string }>;
      call.on('error', () => undefined);
      const seen: string[] = [];
      await new Promise<void>((resolve) => {
        call.on('data', (message: { status: string }) => {
          seen.push(message.status);
          if (seen.length === 1) health.setAll('NOT_SERVING');
          else resolve();
        });
      });
      assert.deepEqual(seen, ['SERVING', 'NOT_SERVING']);
      assert.deepEqual(health.stateSize(), { names: 2, watchers: 1 });
      call.cancel();
      assert.equal(
        await until(
          () => health.stateSize().watchers,
          (watchers) => watchers === 0,
        ),
        0,
      );
    } finally {
      client.close();
      server.forceShutdown();
    }
  });
});
