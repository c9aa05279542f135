/**
 * Scale-out through a real gRPC load balancer: nginx (from PATH, installed by .ci/run) runs the
 * repo's deploy/nginx/nginx.conf, with only its listen address, upstream servers and file paths
 * moved to loopback and a temp folder, in front of two real plugin processes.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { MAX_SCRIPT_BYTES_CEILING } from '../../src/ops/config';
import { checkHealth } from '../../src/ops/healthcheck';
import { DataType, type Dual, num, numbers, QlikClient } from '../helpers/qlik-client';
import { metricsText, type PluginProcess, sampleValue, startMain, until } from './process';

const NGINX_CONF = path.join(__dirname, '..', '..', '..', 'deploy', 'nginx', 'nginx.conf');

function findNginx(): string | undefined {
  const dirs = [...(process.env['PATH'] ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  return dirs.map((dir) => path.join(dir, 'nginx')).find((file) => existsSync(file));
}

/** Replaces what `pattern` matches, and fails when it matches a different number of times than expected. */
function swap(text: string, pattern: RegExp, replace: (match: string, ...groups: string[]) => string, times = 1): string {
  const found = text.match(new RegExp(pattern.source, 'gm'))?.length ?? 0;
  assert.equal(found, times, `deploy/nginx/nginx.conf changed shape: ${pattern} matched ${found} times`);
  return text.replace(new RegExp(pattern.source, 'gm'), replace as (substring: string, ...args: unknown[]) => string);
}

/** The repo's config with loopback addresses and every file in `dir`; every other directive as shipped. */
function loopbackConfig(source: string, dir: string, listenPort: number, upstreamPorts: readonly number[]): string {
  let text = swap(source, /^pid .*;$/, () => `pid ${dir}/nginx.pid;`);
  text = swap(text, /^error_log .*;$/, () => `error_log ${dir}/error.log info;`);
  text = swap(text, /^(\s*)access_log \S+ sse_grpc;$/, (_m, indent = '') => `${indent}access_log ${dir}/access.log sse_grpc;`);
  text = swap(text, /^(\s*)listen 50051 http2;$/, (_m, indent = '') => `${indent}listen 127.0.0.1:${listenPort} http2;`);
  let next = 0;
  text = swap(
    text,
    /^(\s*)server 10\.0\.0\.\d+:50051 (.*);$/,
    (_m, indent = '', options = '') => `${indent}server 127.0.0.1:${upstreamPorts[next++]} ${options};`,
    upstreamPorts.length,
  );
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((name) => `    ${name}_temp_path ${dir}/${name};`).join('\n');
  return swap(text, /^http \{$/, () => `http {\n${temp}`);
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

const nginx = findNginx();

describe('nginx (deploy/nginx/nginx.conf) in front of two plugin processes', {
  skip: nginx ? false : 'nginx is not installed (.ci/run installs it)',
}, () => {
  let dir: string;
  let plugins: PluginProcess[];
  let balancer: ChildProcess;
  let client: QlikClient;
  let address: string;

  const callsServed = async (plugin: PluginProcess): Promise<number> =>
    sampleValue(await metricsText(plugin.metricsPort ?? 0), 'sse_calls_total', { status: 'OK' });

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'sse-nginx-'));
    // nginx workers run as an unprivileged user when the test runs as root.
    chmodSync(dir, 0o755);
    const env = { SSE_WORKERS: '1', SSE_METRICS_PORT: '0', SSE_MAX_SCRIPT_BYTES: String(MAX_SCRIPT_BYTES_CEILING) };
    plugins = await Promise.all([startMain(env), startMain(env)]);
    const port = await freePort();
    const config = path.join(dir, 'nginx.conf');
    writeFileSync(
      config,
      loopbackConfig(
        readFileSync(NGINX_CONF, 'utf8'),
        dir,
        port,
        plugins.map((p) => p.port),
      ),
    );
    const checked = spawnSync(nginx as string, ['-t', '-p', dir, '-c', config, '-e', path.join(dir, 'error.log')], { encoding: 'utf8' });
    assert.equal(checked.status, 0, checked.stderr);
    balancer = spawn(nginx as string, ['-p', dir, '-c', config, '-e', path.join(dir, 'error.log'), '-g', 'daemon off;'], {
      stdio: 'ignore',
    });
    assert.equal(
      await until(
        () => listening(port),
        (up) => up,
      ),
      true,
      'nginx did not start listening',
    );
    address = `127.0.0.1:${port}`;
    client = new QlikClient(address);
  });

  after(async () => {
    client?.close();
    if (balancer && balancer.exitCode === null) {
      const exited = new Promise((resolve) => balancer.once('exit', resolve));
      balancer.kill('SIGQUIT');
      await exited;
    }
    await Promise.all((plugins ?? []).map((p) => p.kill()));
    rmSync(dir, { recursive: true, force: true });
  });

  test('calls through nginx succeed and spread over both plugins', async () => {
    const before = await Promise.all(plugins.map(callsServed));
    const calls = 20;
    const results = await Promise.all(
      Array.from({ length: calls }, (_, i) =>
        client.evaluate({ script: 'args[0] * 10 + 1', params: [{ dataType: DataType.NUMERIC }], bundles: [[[num(i)], [num(i + 1)]]] }),
      ),
    );
    results.forEach((result, i) => {
      assert.equal(result.code, grpc.status.OK, result.details);
      assert.deepEqual(numbers(result), [i * 10 + 1, (i + 1) * 10 + 1]);
    });
    const served = (await Promise.all(plugins.map(callsServed))).map((n, i) => n - (before[i] ?? 0));
    assert.equal(
      served.reduce((a, b) => a + b, 0),
      calls,
    );
    for (const n of served) assert.ok(n >= 3, `each plugin served some of the calls: ${served.join(' / ')}`);

    const accessLog = readFileSync(path.join(dir, 'access.log'), 'utf8');
    for (const plugin of plugins)
      assert.match(
        accessLog,
        new RegExp(`"POST /qlik\\.sse\\.Connector/EvaluateScript HTTP/2\\.0" http=200 grpc=0 upstream=127\\.0\\.0\\.1:${plugin.port} `),
      );
  });

  test('the largest script the plugin accepts, and more than 1 MiB of rows in several bundles, pass through', async () => {
    const body = 'return args[0] * 2;';
    const script = `/*${'x'.repeat(MAX_SCRIPT_BYTES_CEILING - body.length - 4)}*/${body}`;
    assert.equal(Buffer.byteLength(script), MAX_SCRIPT_BYTES_CEILING);
    // About 2 MiB of request body: past nginx's default client_max_body_size of 1 MiB.
    const rowsPerBundle = 40_000;
    const bundles = [0, 1, 2].map((b) => Array.from({ length: rowsPerBundle }, (_, i): Dual[] => [num(b * rowsPerBundle + i + 0.5)]));
    const result = await client.evaluate({ script, params: [{ dataType: DataType.NUMERIC }], bundles });
    assert.equal(result.code, grpc.status.OK, result.details);
    const got = numbers(result);
    assert.equal(got.length, 3 * rowsPerBundle);
    assert.deepEqual([got[0], got[rowsPerBundle + 1], got[3 * rowsPerBundle - 1]], [1, 2 * rowsPerBundle + 3, 6 * rowsPerBundle - 1]);
  });

  test('GetCapabilities and the health service answer through nginx', async () => {
    const capabilities = await client.getCapabilities();
    assert.equal(capabilities['pluginIdentifier'], 'qlik-sse-js-sandbox');
    assert.equal(await checkHealth(address, grpc.credentials.createInsecure()), 'SERVING');
  });

  test('when one plugin is gone, nginx sends the calls to the other', async () => {
    const [gone, left] = plugins as [PluginProcess, PluginProcess];
    gone.child.kill('SIGTERM');
    assert.deepEqual(await gone.exited, { code: 0, signal: null });
    const before = await callsServed(left);
    for (let i = 0; i < 6; i++) {
      const result = await client.evaluate({ script: 'args[0] + 1', params: [{ dataType: DataType.NUMERIC }], bundles: [[[num(i)]]] });
      assert.equal(result.code, grpc.status.OK, result.details);
      assert.deepEqual(numbers(result), [i + 1]);
    }
    assert.equal((await callsServed(left)) - before, 6);
  });
});
