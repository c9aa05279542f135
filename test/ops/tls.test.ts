/**
 * Mutual TLS with certificates shaped like Qlik's certificate guide makes them: only clients with a
 * certificate signed by root_cert.pem get in, and every broken certificate folder stops the start
 * (of the real process) with the file and the reason.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { loadTlsFiles } from '../../src/ops/tls';
import { type ClientFiles, certificatesForSuite } from '../helpers/certs';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { num, numbers, QlikClient } from '../helpers/qlik-client';
import { spawnMain } from './process';

const certificates = certificatesForSuite();

function tlsClient(address: string, files: ClientFiles | { root: Buffer }): QlikClient {
  const credentials =
    'cert' in files ? grpc.credentials.createSsl(files.root, files.key, files.cert) : grpc.credentials.createSsl(files.root);
  return new QlikClient(address, credentials);
}

async function doubled(client: QlikClient): Promise<{ code: grpc.status; values: number[]; details: string }> {
  const result = await client.evaluate({ script: 'args[0] * 2', params: [{ dataType: 1 }], bundles: [[[num(21)]]], deadlineMs: 5_000 });
  return { code: result.code, values: numbers(result), details: result.details };
}

describe('mutual TLS on the gRPC port', () => {
  let plugin: TestPlugin;

  before(async () => {
    plugin = await startTestPlugin({ SSE_TLS_DIR: certificates().serverDir });
  });

  after(() => plugin.stop());

  test('a client with a certificate signed by root_cert.pem is served', async () => {
    for (const host of ['127.0.0.1', 'localhost']) {
      const client = tlsClient(`${host}:${plugin.plugin.port}`, certificates().client);
      try {
        const capabilities = await client.getCapabilities();
        assert.equal(capabilities['allowScript'], true);
        assert.deepEqual(await doubled(client), { code: grpc.status.OK, values: [42], details: 'OK' });
      } finally {
        client.close();
      }
    }
  });

  const refused: [string, () => QlikClient][] = [
    ['a plaintext client', () => new QlikClient(`127.0.0.1:${plugin.plugin.port}`)],
    ['a TLS client without a certificate', () => tlsClient(`127.0.0.1:${plugin.plugin.port}`, { root: certificates().client.root })],
    // It trusts the plugin's root, so only its own certificate can be the reason for the refusal.
    [
      'a client whose certificate another CA signed',
      () => tlsClient(`127.0.0.1:${plugin.plugin.port}`, { ...certificates().rogueClient, root: certificates().client.root }),
    ],
  ];
  for (const [name, connect] of refused) {
    test(`${name} is refused, and the plugin keeps serving good clients`, async () => {
      const client = connect();
      try {
        const result = await doubled(client);
        assert.equal(result.code, grpc.status.UNAVAILABLE, `code ${result.code}: ${result.details}`);
        assert.deepEqual(result.values, []);
      } finally {
        client.close();
      }
      const good = tlsClient(`127.0.0.1:${plugin.plugin.port}`, certificates().client);
      try {
        assert.deepEqual(await doubled(good), { code: grpc.status.OK, values: [42], details: 'OK' });
      } finally {
        good.close();
      }
    });
  }
});

describe('a broken certificate folder stops the start, naming the file and the reason', () => {
  const cases: [string, () => string, RegExp][] = [
    ['a folder that does not exist', () => path.join(certificates().dir, 'nowhere'), /=.*nowhere: the folder does not exist/],
    ['root_cert.pem missing', () => certificates().tlsDir({ root: null }), /root_cert\.pem does not exist/],
    ['sse_server_cert.pem missing', () => certificates().tlsDir({ cert: null }), /sse_server_cert\.pem does not exist/],
    ['sse_server_key.pem missing', () => certificates().tlsDir({ key: null }), /sse_server_key\.pem does not exist/],
    ['an unreadable key (a folder in its place)', () => unreadableKeyDir(), /sse_server_key\.pem is a folder, not a file/],
    [
      'an expired server certificate',
      () => certificates().tlsDir({ cert: 'expired_server_cert.pem' }),
      /sse_server_cert\.pem expired on 2020-01-02T00:00:00\.000Z/,
    ],
    [
      'a key that does not match the certificate',
      () => certificates().tlsDir({ key: 'other_key.pem' }),
      /sse_server_key\.pem does not match .*sse_server_cert\.pem/,
    ],
    [
      'a server certificate another CA signed',
      () => certificates().tlsDir({ cert: 'rogue_server_cert.pem' }),
      /sse_server_cert\.pem is not signed by .*root_cert\.pem .*issued by CN=rogue_root; root: CN=sse_root/,
    ],
    [
      'the key and the certificate swapped',
      () => certificates().tlsDir({ cert: 'server_key.pem', key: 'server_cert.pem' }),
      /sse_server_cert\.pem holds no PEM certificate .*are the files swapped/,
    ],
    ['a root file that is not PEM', () => garbageRootDir(), /root_cert\.pem holds no PEM certificate/],
  ];
  for (const [name, makeDir, reason] of cases) {
    test(name, async () => {
      const started = spawnMain({ SSE_TLS_DIR: makeDir() });
      const exit = await started.exited;
      assert.deepEqual(exit, { code: 2, signal: null });
      assert.match(started.stderr(), new RegExp(`^configuration error: SSE_TLS_DIR.*${reason.source}`, 'm'));
      const fatal = started.lines.find((line) => line.level === 60);
      assert.match(String(fatal?.msg), reason);
      assert.equal(
        started.lines.some((line) => String(line.msg).startsWith('listening')),
        false,
      );
    });
  }

  test('a key file the user running the plugin may not read', async () => {
    const dir = certificates().tlsDir({});
    const keyFile = path.join(dir, 'sse_server_key.pem');
    // Root reads any file: as root (CI), the plugin becomes nobody before it reads the certificates,
    // the way a service runs as an unprivileged user. Only the certificate folders must be open to
    // nobody, not the checkout (test/ops/become-user.ts says why).
    const asRoot = process.getuid?.() === 0;
    chmodSync(certificates().dir, 0o755);
    chmodSync(dir, 0o755);
    for (const name of ['root_cert.pem', 'sse_server_cert.pem']) chmodSync(path.join(dir, name), 0o644);
    chmodSync(keyFile, asRoot ? 0o600 : 0o000);
    const started = spawnMain({ SSE_TLS_DIR: dir }, asRoot ? { becomeUser: { uid: 65_534, gid: 65_534 } } : {});
    assert.deepEqual(await started.exited, { code: 2, signal: null });
    assert.match(
      started.stderr(),
      /^configuration error: SSE_TLS_DIR: .*sse_server_key\.pem cannot be read by the user running the plugin \(EACCES\)/m,
    );
  });

  test('a certificate that is not valid yet', () => {
    const dir = certificates().tlsDir({});
    assert.throws(
      () => loadTlsFiles(dir, new Date('2001-01-01T00:00:00Z')),
      /root_cert\.pem is not valid yet: valid from .*check this machine's clock/,
    );
  });

  test('the good folder passes, and the summary names the certificate', () => {
    const files = loadTlsFiles(certificates().serverDir);
    assert.match(files.server.subject, /CN=sse_server/);
    assert.equal(files.server.checkHost('localhost'), 'localhost');
  });
});

function unreadableKeyDir(): string {
  const dir = certificates().tlsDir({ key: null });
  mkdirSync(path.join(dir, 'sse_server_key.pem'));
  return dir;
}

function garbageRootDir(): string {
  const dir = certificates().tlsDir({});
  rmSync(path.join(dir, 'root_cert.pem'));
  writeFileSync(path.join(dir, 'root_cert.pem'), 'not a certificate\n');
  return dir;
}
