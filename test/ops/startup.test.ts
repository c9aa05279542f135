/**
 * The first log lines of the real process answer "why can't the engine connect?": where it
 * listens, TLS, the limits, the exact Settings.ini line and QMC fields, and warnings for loopback,
 * certificate names and expiry. GetCapabilities calls are logged with the peer address.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';

import { certificatesForSuite } from '../helpers/certs';
import { QlikClient } from '../helpers/qlik-client';
import { type LogLine, type PluginProcess, spawnMain, startMain } from './process';

const DEBUG = 20;
const INFO = 30;
const WARN = 40;

function message(line: LogLine | undefined): string {
  return String(line?.msg);
}

function startsWith(prefix: string): (line: LogLine) => boolean {
  return (line) => message(line).startsWith(prefix);
}

/** Runs `body` while another socket holds a loopback port. */
async function withBusyPort(body: (port: number) => Promise<void>): Promise<void> {
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  try {
    await body((blocker.address() as net.AddressInfo).port);
  } finally {
    blocker.close();
  }
}

async function stopped(plugin: PluginProcess): Promise<void> {
  plugin.child.kill('SIGTERM');
  assert.deepEqual(await plugin.exited, { code: 0, signal: null });
}

describe('start-up diagnostics of the real process', () => {
  const certificates = certificatesForSuite();

  test('plaintext on loopback: listening line first, limits, Settings.ini, QMC, loopback warning', async () => {
    const plugin = await startMain({ SSE_WORKERS: '2', SSE_SCRIPT_TIMEOUT_MS: '1500', SSE_MEMORY_LIMIT_MB: '64', SSE_METRICS_PORT: '0' });
    try {
      await plugin.waitForLine(startsWith('listening on loopback only'));
      const [listening, limits, settings, qmc, loopback] = plugin.lines;
      assert.equal(message(listening), `listening on 127.0.0.1:${plugin.port} (plaintext, no TLS)`);
      assert.equal(listening?.level, INFO);
      assert.equal(listening?.['tls'], false);
      assert.equal(listening?.['node'], process.version);
      assert.equal(listening?.['metrics'], `http://127.0.0.1:${plugin.metricsPort}/metrics`);
      assert.ok(plugin.port > 0);

      assert.equal(
        message(limits),
        'limits: SSE_WORKERS=2 SSE_SCRIPT_TIMEOUT_MS=1500 SSE_MEMORY_LIMIT_MB=64 SSE_MAX_SCRIPT_BYTES=32768 SSE_MAX_QUEUE=512 SSE_MAX_MESSAGE_BYTES=16777216 SSE_SHUTDOWN_GRACE_MS=10000 SSE_ALLOW_SCRIPT=true',
      );
      assert.equal(settings?.['settingsIni'], `SSEPlugin=JS,127.0.0.1:${plugin.port}`);
      assert.match(message(settings), /^Qlik Settings\.ini, section \[Settings 7\]/);
      assert.deepEqual(qmc?.['qmc'], { Name: 'JS', Host: '127.0.0.1', Port: plugin.port, 'Certificate file path': '(empty: no TLS)' });
      assert.equal(loopback?.level, WARN);
      assert.match(
        message(loopback),
        /^listening on loopback only \(SSE_HOST=127\.0\.0\.1\): a Qlik engine on another machine cannot connect/,
      );
      assert.equal(plugin.lines.filter((line) => line.level !== INFO && line.level !== WARN).length, 0);
    } finally {
      await stopped(plugin);
    }
  });

  test('the first GetCapabilities call from a host is logged at info with the peer address, later ones at debug', async () => {
    const plugin = await startMain({ SSE_LOG_LEVEL: 'debug' });
    // Two connections: the same host from two ports.
    const first = new QlikClient(`127.0.0.1:${plugin.port}`);
    const second = new QlikClient(`127.0.0.1:${plugin.port}`, undefined, { 'grpc.use_local_subchannel_pool': 1 });
    try {
      const capabilities = await first.getCapabilities();
      assert.equal(capabilities['allowScript'], true);
      for (let i = 0; i < 5; i++) await first.getCapabilities();
      for (let i = 0; i < 4; i++) await second.getCapabilities();
      const lines = () => plugin.lines.filter((l) => l.msg === 'GetCapabilities');
      await plugin.waitForLine(() => lines().length === 10);
      const ports = new Set(lines().map((l) => String(l['peer'])));
      assert.equal(ports.size, 2, `two connections: ${[...ports].join(', ')}`);
      for (const peer of ports) assert.match(peer, /^127\.0\.0\.1:\d+$/);
      assert.deepEqual(
        lines().map((l) => l.level),
        [INFO, ...new Array<number>(9).fill(DEBUG)],
      );
    } finally {
      first.close();
      second.close();
      await stopped(plugin);
    }
  });

  test('listening beyond 127.0.0.1 with no SSE_PRIORITY_HOSTS: a warning to list the engines; none once they are listed', async () => {
    const unlisted = await startMain({ SSE_HOST: '127.0.0.2' });
    try {
      const warning = unlisted.lines.find(startsWith('no SSE_PRIORITY_HOSTS'));
      assert.equal(warning?.level, WARN);
      assert.match(
        message(warning),
        new RegExp(`^no SSE_PRIORITY_HOSTS: other clients that reach 127\\.0\\.0\\.2:${unlisted.port} from many networks`),
      );
    } finally {
      await stopped(unlisted);
    }
    const listed = await startMain({ SSE_HOST: '127.0.0.2', SSE_PRIORITY_HOSTS: '127.0.0.1' });
    try {
      assert.equal(listed.lines.some(startsWith('no SSE_PRIORITY_HOSTS')), false);
    } finally {
      await stopped(listed);
    }
  });

  test('mutual TLS: the certificate line, and the Settings.ini line names the client certificate folder', async () => {
    const plugin = await startMain({ SSE_TLS_DIR: certificates().serverDir });
    try {
      assert.equal(
        message(plugin.lines[0]),
        `listening on 127.0.0.1:${plugin.port} (mutual TLS: clients must present a certificate signed by root_cert.pem)`,
      );
      const certificate = plugin.lines.find(startsWith('server certificate'));
      assert.match(
        message(certificate),
        /^server certificate CN=sse_server for DNS:localhost, IP Address:127\.0\.0\.1, valid until \d{4}-.*\(36\d\d days\); clients must present a certificate signed by CN=sse_root$/,
      );
      const settings = plugin.lines.find((line) => line['settingsIni'] !== undefined);
      assert.equal(
        settings?.['settingsIni'],
        `SSEPlugin=JS,127.0.0.1:${plugin.port},<folder on the Qlik machine with root_cert.pem, sse_client_cert.pem, sse_client_key.pem>`,
      );
      assert.equal(plugin.lines.some(startsWith('the server certificate')), false);
    } finally {
      await stopped(plugin);
    }
  });

  test('TLS warnings: a certificate that does not name the host, and one that expires soon', async () => {
    const remote = await startMain({ SSE_TLS_DIR: certificates().tlsDir({ cert: 'remote_server_cert.pem' }) });
    try {
      const warning = remote.lines.find(startsWith('the server certificate does not name'));
      assert.equal(warning?.level, WARN);
      assert.match(
        message(warning),
        /^the server certificate does not name 127\.0\.0\.1: a Qlik engine connecting to 127\.0\.0\.1 will refuse it/,
      );
      assert.deepEqual(warning?.['serverNames'], ['DNS:plugin.example.com']);
    } finally {
      await stopped(remote);
    }
    const expiring = await startMain({ SSE_TLS_DIR: certificates().tlsDir({ cert: 'expiring_server_cert.pem' }) });
    try {
      const warning = expiring.lines.find(startsWith('the server certificate expires in'));
      assert.equal(warning?.level, WARN);
      assert.match(message(warning), /^the server certificate expires in (9|10) days: generate new certificates before /);
    } finally {
      await stopped(expiring);
    }
  });

  test('a port already in use stops the start with a hint', async () => {
    await withBusyPort(async (port) => {
      const started = spawnMain({ SSE_PORT: String(port) });
      assert.deepEqual(await started.exited, { code: 1, signal: null });
      assert.match(
        started.stderr(),
        /^failed to start: .*EADDRINUSE.*another process already uses that port: stop it or choose another SSE_PORT$/m,
      );
    });
  });

  test('a metrics port already in use stops the start (the gRPC port and the workers are released)', async () => {
    await withBusyPort(async (port) => {
      const started = spawnMain({ SSE_METRICS_PORT: String(port) });
      assert.deepEqual(await started.exited, { code: 1, signal: null });
      assert.match(
        started.stderr(),
        new RegExp(
          `^failed to start: cannot serve metrics on 127\\.0\\.0\\.1:${port} \\(SSE_METRICS_PORT\\): .*EADDRINUSE.* choose another SSE_METRICS_PORT$`,
          'm',
        ),
      );
    });
  });

  test('an invalid variable stops the start with exit code 2', async () => {
    const started = spawnMain({ SSE_WORKERS: 'many' });
    assert.deepEqual(await started.exited, { code: 2, signal: null });
    assert.match(started.stderr(), /^configuration error: SSE_WORKERS="many" is invalid: expected an integer from 1 to 256$/m);
  });
});
