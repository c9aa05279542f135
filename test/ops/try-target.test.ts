/**
 * `npm run try -- --target`: the built command calls real running plugins on 127.0.0.1 as the engine
 * would and, when it cannot, names the cause an administrator acts on (refused, TLS name mismatch,
 * unknown root, no or a refused client certificate, TLS on one side only) instead of gRPC's
 * UNAVAILABLE.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { CERT_FILES, DEFAULT_LEAF_DAYS, writeCertificates } from '../../src/ops/certs';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { runTry } from '../helpers/try-command';

/** A loopback port nothing listens on: one the kernel gave a server that is closed again. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return typeof address === 'object' && address !== null ? address.port : 0;
}

describe('npm run try -- --target: a running plugin, as the engine reaches it', () => {
  let dir: string;
  const sets: Record<'good' | 'other' | 'remote', string> = { good: '', other: '', remote: '' };
  let tlsPlugin: TestPlugin;
  let remoteNamePlugin: TestPlugin;
  let plainPlugin: TestPlugin;

  /** An engine folder of the given files, each from one of the sets. */
  function engineDir(name: string, files: Partial<Record<'root' | 'clientCert' | 'clientKey', string>>): string {
    const target = path.join(dir, name);
    mkdirSync(target);
    for (const [file, set] of Object.entries(files))
      copyFileSync(path.join(set, CERT_FILES[file as keyof typeof files]), path.join(target, CERT_FILES[file as keyof typeof files]));
    return target;
  }

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'sse-try-target-'));
    for (const name of ['good', 'other'] as const) {
      sets[name] = path.join(dir, name);
      await writeCertificates({ outDir: sets[name], hosts: ['localhost', '127.0.0.1'], leafDays: DEFAULT_LEAF_DAYS });
    }
    sets.remote = path.join(dir, 'remote');
    await writeCertificates({ outDir: sets.remote, hosts: ['plugin.example.com'], leafDays: DEFAULT_LEAF_DAYS });
    [tlsPlugin, remoteNamePlugin, plainPlugin] = await Promise.all([
      startTestPlugin({ SSE_TLS_DIR: sets.good, SSE_WORKERS: '1' }),
      startTestPlugin({ SSE_TLS_DIR: sets.remote, SSE_WORKERS: '1' }),
      startTestPlugin({ SSE_WORKERS: '1' }),
    ]);
  });

  after(async () => {
    await Promise.all([tlsPlugin?.stop(), remoteNamePlugin?.stop(), plainPlugin?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  test("mutual TLS with the engine's files: capabilities, then the script's rows", async () => {
    for (const host of ['127.0.0.1', 'localhost']) {
      const ran = await runTry(['--target', `${host}:${tlsPlugin.plugin.port}`, '--tls-dir', sets.good, 'args[0] * 2', '21', '5']);
      assert.equal(ran.code, 0, ran.stderr);
      assert.equal(ran.stdout, 'ScriptEval\n----------\n42\n10\n');
      assert.match(
        ran.stderr,
        new RegExp(`^connected to ${host}:${tlsPlugin.plugin.port} \\(mutual TLS\\): qlik-sse-js-sandbox \\S+, allowScript true`),
      );
    }
  });

  test('plaintext, as an analytic connection without certificates', async () => {
    const ran = await runTry(['--target', `127.0.0.1:${plainPlugin.plugin.port}`, '--fn', 'ScriptEvalStr', "args[0] + '!'", 'a']);
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(ran.stdout, 'ScriptEvalStr\n-------------\na!\n');
    assert.match(ran.stderr, /\(plaintext\)/);
  });

  test('a script error comes back as the plugin says it', async () => {
    const ran = await runTry(['--target', `127.0.0.1:${plainPlugin.plugin.port}`, 'nope(', '1']);
    assert.equal(ran.code, 1);
    assert.match(ran.stderr, /INVALID_ARGUMENT: /);
  });

  const failures: [string, () => Promise<string[]>, RegExp][] = [
    [
      'nothing listening: refused',
      async () => ['--target', `127.0.0.1:${await closedPort()}`, '1'],
      /^try: failed: refused: nothing listens on 127\.0\.0\.1:\d+ \(is the plugin running/,
    ],
    [
      'a server certificate without the name dialled: TLS name mismatch',
      async () => ['--target', `localhost:${remoteNamePlugin.plugin.port}`, '--tls-dir', sets.remote, '1'],
      /^try: failed: TLS name mismatch: the plugin's certificate does not name localhost \(.*plugin\.example\.com.*\); connect with a name it lists/,
    ],
    [
      'a server certificate from another root: unknown root',
      async () => ['--target', `127.0.0.1:${tlsPlugin.plugin.port}`, '--tls-dir', sets.other, '1'],
      /^try: failed: unknown root: the plugin's certificate is not signed by .*other\/root_cert\.pem/,
    ],
    [
      'no client certificate in the folder',
      async () => ['--target', `127.0.0.1:${tlsPlugin.plugin.port}`, '--tls-dir', engineDir('root-only', { root: sets.good }), '1'],
      /^try: failed: no client certificate: the plugin requires one \(mutual TLS\); put sse_client_cert\.pem and sse_client_key\.pem in /,
    ],
    [
      'a client certificate of another root',
      async () => [
        '--target',
        `127.0.0.1:${tlsPlugin.plugin.port}`,
        '--tls-dir',
        engineDir('mixed', { root: sets.good, clientCert: sets.other, clientKey: sets.other }),
        '1',
      ],
      /^try: failed: the plugin refused the client certificate .*mixed\/sse_client_cert\.pem \(.*\): it is not signed by the plugin's root_cert\.pem/,
    ],
    [
      'plaintext to a plugin that requires TLS',
      async () => ['--target', `127.0.0.1:${tlsPlugin.plugin.port}`, '1'],
      /^try: failed: 127\.0\.0\.1:\d+ closed the connection without an HTTP\/2 answer: the plugin probably requires TLS/,
    ],
    [
      'TLS to a plaintext plugin',
      async () => ['--target', `127.0.0.1:${plainPlugin.plugin.port}`, '--tls-dir', sets.good, '1'],
      /^try: failed: 127\.0\.0\.1:\d+ does not speak TLS: the plugin runs without SSE_TLS_DIR/,
    ],
  ];
  for (const [name, args, message] of failures) {
    test(`${name}: says so, exit code 1`, async () => {
      const ran = await runTry(await args());
      assert.equal(ran.code, 1, ran.stderr);
      assert.equal(ran.stdout, '');
      assert.match(ran.stderr, message);
    });
  }

  test('the plugins still serve after every refused attempt', async () => {
    const ran = await runTry(['--target', `127.0.0.1:${tlsPlugin.plugin.port}`, '--tls-dir', sets.good, 'args[0] + 1', '1']);
    assert.equal(ran.stdout, 'ScriptEval\n----------\n2\n');
  });

  test('--tls-dir without --target is a usage mistake', async () => {
    const ran = await runTry(['--tls-dir', sets.good, 'args[0]', '1']);
    assert.equal(ran.code, 2);
    assert.match(ran.stderr, /^try: --tls-dir is for --target/);
  });
});
