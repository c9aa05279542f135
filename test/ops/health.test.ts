/**
 * grpc.health.v1.Health on the gRPC port: SERVING once started, NOT_SERVING while draining (the
 * port stays open while calls in flight finish, so the state can be read), unreachable after.
 * Also the probe CLI the container HEALTHCHECK runs, plaintext and with mutual TLS.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { checkHealth } from '../../src/ops/healthcheck';
import { certificatesForSuite } from '../helpers/certs';
import { startTestPlugin } from '../helpers/plugin';
import { DataType, num, numbers } from '../helpers/qlik-client';
import { SLOW_SCRIPT, startMain, until } from './process';

const insecure = grpc.credentials.createInsecure();
const HEALTHCHECK_JS = path.join(__dirname, '..', '..', 'src', 'ops', 'healthcheck.js');

describe('grpc.health.v1.Health', () => {
  test('SERVING after start, NOT_SERVING while a call drains, unreachable once stopped', async () => {
    const { plugin, client, address } = await startTestPlugin({ SSE_SCRIPT_TIMEOUT_MS: '5000' });
    try {
      assert.equal(await checkHealth(address, insecure), 'SERVING');
      assert.equal(await checkHealth(address, insecure, 'qlik.sse.Connector'), 'SERVING');
      await assert.rejects(checkHealth(address, insecure, 'no.such.Service'), { code: grpc.status.NOT_FOUND });

      const slow = client.evaluate({ script: SLOW_SCRIPT, params: [{ dataType: DataType.NUMERIC }], bundles: [[[num(7)]]] });
      await until(
        async () => plugin.pool.busyWorkers,
        (busy) => busy === 1,
      );
      const stopping = plugin.stop(10_000);

      assert.equal(await checkHealth(address, insecure), 'NOT_SERVING');
      assert.equal(await checkHealth(address, insecure, 'qlik.sse.Connector'), 'NOT_SERVING');
      const refused = await client.evaluate({ script: 'args[0]', params: [{ dataType: DataType.NUMERIC }], bundles: [[[num(1)]]] });
      assert.equal(refused.code, grpc.status.UNAVAILABLE);
      assert.match(refused.details, /shutting down/);

      const finished = await slow;
      assert.equal(finished.code, grpc.status.OK, finished.details);
      assert.deepEqual(numbers(finished), [7]);
      await stopping;
      await assert.rejects(checkHealth(address, insecure, '', 1_000), { code: grpc.status.UNAVAILABLE });
    } finally {
      client.close();
      await plugin.stop(1_000);
    }
  });
});

function probe(env: Record<string, string>, args: readonly string[] = []): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [HEALTHCHECK_JS, ...args], { env: { PATH: process.env['PATH'] ?? '', ...env } }, (error, stdout) => {
      resolve({ code: error ? Number(error.code) : 0, stdout });
    });
  });
}

describe('the HEALTHCHECK probe (node dist/src/ops/healthcheck.js)', () => {
  const certificates = certificatesForSuite();

  test('plaintext: exit 0 and SERVING; exit 1 when nothing listens', async () => {
    const plugin = await startMain({});
    try {
      assert.deepEqual(await probe({ SSE_HOST: '127.0.0.1', SSE_PORT: String(plugin.port) }), { code: 0, stdout: 'SERVING\n' });
    } finally {
      plugin.child.kill('SIGTERM');
      assert.deepEqual(await plugin.exited, { code: 0, signal: null });
    }
    const down = await probe({ SSE_HOST: '127.0.0.1', SSE_PORT: String(plugin.port) });
    assert.equal(down.code, 1);
    assert.match(down.stdout, /^unhealthy: 14 UNAVAILABLE/);
  });

  test('mutual TLS: the probe presents the client certificate Qlik would use', async () => {
    const certs = certificates();
    const plugin = await startMain({ SSE_TLS_DIR: certs.serverDir });
    // The folder Qlik's guide gives the engine: root_cert.pem, sse_client_cert.pem, sse_client_key.pem.
    const clientDir = certs.tlsDir({});
    copyFileSync(certs.file('client_cert.pem'), path.join(clientDir, 'sse_client_cert.pem'));
    copyFileSync(certs.file('client_key.pem'), path.join(clientDir, 'sse_client_key.pem'));
    const env = { SSE_HOST: '127.0.0.1', SSE_PORT: String(plugin.port), SSE_TLS_DIR: certs.serverDir };
    try {
      assert.deepEqual(await probe(env, [clientDir]), { code: 0, stdout: 'SERVING\n' });
      const withoutCertificate = await probe(env);
      assert.equal(withoutCertificate.code, 1);
      assert.match(
        withoutCertificate.stdout,
        /^unhealthy: SSE_TLS_DIR is set: pass a folder with root_cert\.pem, sse_client_cert\.pem, sse_client_key\.pem/,
      );
    } finally {
      plugin.child.kill('SIGTERM');
      assert.deepEqual(await plugin.exited, { code: 0, signal: null });
    }
  });
});
