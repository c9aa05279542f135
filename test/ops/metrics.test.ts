/**
 * /metrics on SSE_METRICS_PORT: Prometheus text with the named metrics, and the counters move with
 * real calls (OK, script error, timeout, memory limit).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { METRICS_MAX_CONNECTIONS } from '../../src/grpc/admission';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, FunctionType, num, numbers, str } from '../helpers/qlik-client';
import { httpGet, metricsText, SLOW_SCRIPT, sampleValue, until } from './process';

const METRICS = [
  ['sse_calls_total', 'counter'],
  ['sse_rows_in_total', 'counter'],
  ['sse_rows_out_total', 'counter'],
  ['sse_call_duration_seconds', 'histogram'],
  ['sse_script_timeouts_total', 'counter'],
  ['sse_memory_limit_disposals_total', 'counter'],
  ['sse_isolate_rebuilds_total', 'counter'],
  ['sse_busy_refusals_total', 'counter'],
  ['sse_queue_depth', 'gauge'],
  ['sse_busy_workers', 'gauge'],
  ['sse_workers', 'gauge'],
  ['sse_sandbox_resident_bytes', 'gauge'],
  ['sse_sandbox_processes', 'gauge'],
  ['sse_sandbox_restarts_total', 'counter'],
  ['sse_calls_in_flight', 'gauge'],
] as const;

describe('Prometheus metrics', () => {
  let plugin: TestPlugin;
  let port: number;

  before(async () => {
    plugin = await startTestPlugin({ SSE_METRICS_PORT: '0', SSE_SCRIPT_TIMEOUT_MS: '2000', SSE_MEMORY_LIMIT_MB: '16' });
    port = plugin.plugin.metricsPort ?? 0;
  });

  after(() => plugin.stop());

  test('GET /metrics answers Prometheus text with every named metric; other paths 404', async () => {
    assert.ok(port > 0 && port !== plugin.plugin.port);
    const response = await httpGet(`http://127.0.0.1:${port}/metrics`);
    assert.equal(response.status, 200);
    assert.match(response.contentType, /^text\/plain; version=0\.0\.4/);
    for (const [name, type] of METRICS) assert.match(response.body, new RegExp(`^# TYPE ${name} ${type}$`, 'm'), name);
    assert.equal(sampleValue(response.body, 'sse_workers'), 2);
    assert.ok(sampleValue(response.body, 'sse_sandbox_resident_bytes', { sandbox: '0' }) > 10 * 1048576);
    // The default spare, numbered after the one process of 2 workers, is ready and not among sse_workers.
    assert.ok(sampleValue(response.body, 'sse_sandbox_resident_bytes', { sandbox: '1' }) > 10 * 1048576);
    assert.equal(sampleValue(response.body, 'sse_sandbox_processes', { role: 'slot', state: 'ready' }), 1);
    assert.equal(sampleValue(response.body, 'sse_sandbox_processes', { role: 'spare', state: 'ready' }), 1);
    assert.match(response.body, /^process_resident_memory_bytes \d+/m);
    assert.equal((await httpGet(`http://127.0.0.1:${port}/`)).status, 404);
  });

  test('connections that never finish a request cannot keep a scrape out: the oldest of them gives way', async () => {
    // Twice as many as the endpoint keeps, each sending one byte of a request and nothing more.
    const slow = await Promise.all(
      Array.from(
        { length: 2 * METRICS_MAX_CONNECTIONS },
        () =>
          new Promise<net.Socket>((resolve, reject) => {
            const socket = net.connect(port, '127.0.0.1', () => {
              socket.write('G');
              resolve(socket);
            });
            socket.once('error', reject);
          }),
      ),
    );
    try {
      const response = await httpGet(`http://127.0.0.1:${port}/metrics`);
      assert.equal(response.status, 200);
      assert.match(response.body, /^# TYPE sse_calls_total counter$/m);
    } finally {
      for (const socket of slow) socket.destroy();
    }
  });

  test('a connection that pipelines more requests than a connection may make is closed, not answered 503 for each', async () => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.once('error', () => undefined);
    socket.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(200));
    await closed;
    // Answered one by one, the 184 requests past the 16 a connection may make were 184 responses.
    assert.equal(received.split('HTTP/1.1 503').length - 1, 0);
    const response = await httpGet(`http://127.0.0.1:${port}/metrics`);
    assert.equal(response.status, 200);
  });

  test('an OK call moves calls, rows and the duration histogram', async () => {
    const before = await metricsText(port);
    const result = await plugin.client.evaluate({
      script: 'args[0] + 1',
      params: [{ dataType: DataType.NUMERIC }],
      bundles: [[[num(1)], [num(2)]], [[num(3)]]],
    });
    assert.deepEqual(numbers(result), [2, 3, 4]);
    const text = await metricsText(port);
    const delta = (name: string, labels: Record<string, string> = {}): number =>
      sampleValue(text, name, labels) - sampleValue(before, name, labels);
    assert.equal(delta('sse_calls_total', { function: 'ScriptEval', status: 'OK' }), 1);
    assert.equal(delta('sse_rows_in_total'), 3);
    assert.equal(delta('sse_rows_out_total'), 3);
    assert.equal(delta('sse_call_duration_seconds_count', { function: 'ScriptEval' }), 1);
    assert.equal(delta('sse_call_duration_seconds_bucket', { function: 'ScriptEval', le: '+Inf' }), 1);
    assert.ok(delta('sse_call_duration_seconds_sum', { function: 'ScriptEval' }) > 0);
  });

  test('failures are counted by function and status: script error, timeout, memory limit', async () => {
    const before = await metricsText(port);
    const thrown = await plugin.client.evaluate({
      script: 'throw new Error("no")',
      returnType: DataType.STRING,
      params: [{ dataType: DataType.STRING }],
      bundles: [[[str('a')]]],
    });
    assert.equal(thrown.code, grpc.status.INVALID_ARGUMENT);
    const timedOut = await plugin.client.evaluate({
      script: 'while (true) {}',
      functionType: FunctionType.AGGREGATION,
      params: [{ dataType: DataType.NUMERIC }],
      bundles: [[[num(1)]]],
    });
    assert.equal(timedOut.code, grpc.status.DEADLINE_EXCEEDED);
    const tooBig = await plugin.client.evaluate({
      script: 'const a = []; for (;;) a.push(new Array(100000).fill(args[0]));',
      params: [{ dataType: DataType.NUMERIC }],
      bundles: [[[num(1)]]],
    });
    assert.equal(tooBig.code, grpc.status.RESOURCE_EXHAUSTED, tooBig.details);

    const text = await metricsText(port);
    const delta = (name: string, labels: Record<string, string> = {}): number =>
      sampleValue(text, name, labels) - sampleValue(before, name, labels);
    assert.equal(delta('sse_calls_total', { function: 'ScriptEvalStr', status: 'INVALID_ARGUMENT' }), 1);
    assert.equal(delta('sse_calls_total', { function: 'ScriptAggr', status: 'DEADLINE_EXCEEDED' }), 1);
    assert.equal(delta('sse_calls_total', { function: 'ScriptEval', status: 'RESOURCE_EXHAUSTED' }), 1);
    assert.equal(delta('sse_script_timeouts_total'), 1);
    assert.equal(delta('sse_memory_limit_disposals_total'), 1);
    assert.equal(delta('sse_isolate_rebuilds_total'), 1);
  });

  test('busy workers and calls in flight while a call runs, back to 0 after', async () => {
    const slow = plugin.client.evaluate({ script: SLOW_SCRIPT, params: [{ dataType: DataType.NUMERIC }], bundles: [[[num(9)]]] });
    const during = await until(
      () => metricsText(port),
      (text) => sampleValue(text, 'sse_busy_workers') === 1,
    );
    assert.equal(sampleValue(during, 'sse_busy_workers'), 1);
    assert.equal(sampleValue(during, 'sse_calls_in_flight'), 1);
    assert.equal(sampleValue(during, 'sse_queue_depth'), 0);
    assert.deepEqual(numbers(await slow), [9]);
    const afterwards = await metricsText(port);
    assert.equal(sampleValue(afterwards, 'sse_busy_workers'), 0);
    assert.equal(sampleValue(afterwards, 'sse_calls_in_flight'), 0);
  });

  test('a sandbox process that dies is counted by reason and replaced', async () => {
    const pid = plugin.plugin.pool.processes()[0]?.pid as number;
    process.kill(pid, 'SIGKILL');
    const text = await until(
      () => metricsText(port),
      (body) => sampleValue(body, 'sse_sandbox_restarts_total', { reason: 'crash' }) === 1,
    );
    assert.equal(sampleValue(text, 'sse_sandbox_restarts_total', { reason: 'crash' }), 1);
    const ready = await until(
      () => metricsText(port),
      (body) => sampleValue(body, 'sse_workers') === 2,
    );
    assert.equal(sampleValue(ready, 'sse_workers'), 2);
  });
});
