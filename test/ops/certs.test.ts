/**
 * `npm run certs` makes a set the plugin and a C-core client (the core of Qlik's engine) accept as it
 * is: the plugin started on the folder serves the engine's files, refuses a client certificate of
 * another root, and the private keys are their owner's only.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';

import { CERT_FILES } from '../../src/ops/certs';
import { loadTlsFiles } from '../../src/ops/tls';
import { ccoreCall, NO_CCORE } from '../helpers/ccore';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';

const CERTS_JS = path.join(__dirname, '..', '..', 'src', 'cli', 'certs.js');

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function certs(args: readonly string[]): Promise<Run> {
  try {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [CERTS_JS, ...args], { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

describe('npm run certs', () => {
  let dir: string;
  let good: string;
  let other: string;
  let plugin: TestPlugin;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'sse-certs-tool-'));
    good = path.join(dir, 'good');
    other = path.join(dir, 'other');
    const made = await Promise.all([
      certs(['--out', good, '--host', 'localhost,127.0.0.1', '--host', 'sse.example.com']),
      certs(['--out', other, '--host', 'localhost,127.0.0.1']),
    ]);
    for (const run of made) assert.equal(run.code, 0, run.stderr);
    plugin = await startTestPlugin({ SSE_TLS_DIR: good });
  });

  after(async () => {
    await plugin?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("writes the five files of Qlik's guide, keys readable by their owner only", () => {
    const modes = Object.fromEntries(Object.values(CERT_FILES).map((name) => [name, statSync(path.join(good, name)).mode & 0o777]));
    assert.deepEqual(modes, {
      'root_cert.pem': 0o644,
      'sse_server_cert.pem': 0o644,
      'sse_server_key.pem': 0o600,
      'sse_client_cert.pem': 0o644,
      'sse_client_key.pem': 0o600,
    });
    const files = loadTlsFiles(good);
    assert.equal(files.server.subjectAltName, 'DNS:localhost, IP Address:127.0.0.1, DNS:sse.example.com');
  });

  test('the plugin on the folder serves a C-core client presenting the client files', { skip: NO_CCORE }, async () => {
    const outcome = await ccoreCall(plugin.plugin.port, 0, 20, 'args[0] + 41', good);
    assert.deepEqual({ code: outcome.code, rows: outcome.rows }, { code: 'OK', rows: 1 });
  });

  test('a client certificate from another root is refused', { skip: NO_CCORE }, async () => {
    // Trusts the plugin's root, so only its own certificate (signed by the other root) can be why.
    const mixed = path.join(dir, 'mixed');
    mkdirSync(mixed);
    copyFileSync(path.join(good, CERT_FILES.root), path.join(mixed, CERT_FILES.root));
    copyFileSync(path.join(other, CERT_FILES.clientCert), path.join(mixed, CERT_FILES.clientCert));
    copyFileSync(path.join(other, CERT_FILES.clientKey), path.join(mixed, CERT_FILES.clientKey));
    const refused = await ccoreCall(plugin.plugin.port, 0, 5, 'args[0] + 41', mixed);
    assert.equal(refused.code, 'UNAVAILABLE');
    const served = await ccoreCall(plugin.plugin.port, 0, 20, 'args[0] + 41', good);
    assert.equal(served.code, 'OK');
  });

  test('a folder that already holds the files is left alone', async () => {
    const before = statSync(path.join(good, CERT_FILES.serverKey)).mtimeMs;
    const run = await certs(['--out', good, '--host', 'localhost']);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /already holds root_cert\.pem, sse_server_cert\.pem, sse_server_key\.pem/);
    assert.equal(statSync(path.join(good, CERT_FILES.serverKey)).mtimeMs, before);
  });

  test('a name that is neither a DNS name nor an IP address is refused before any file is written', async () => {
    const target = path.join(dir, 'typo');
    const run = await certs(['--out', target, '--host', 'sse example.com']);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /--host "sse example\.com" is neither a DNS name nor an IP address/);
    assert.throws(() => statSync(target), /ENOENT/);
  });
});
