/**
 * Certificates for the mutual-TLS tests, made with the openssl command line in a temp folder, in
 * the shape Qlik's certificate guide produces (root, server cert, client cert; RSA 2048), plus the
 * broken variants an administrator runs into: another CA's client, an expired server certificate,
 * a key that belongs to another certificate.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';

export interface ClientFiles {
  readonly root: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

export interface Certificates {
  /** Holds every generated file; remove() deletes it. */
  readonly dir: string;
  /** root_cert.pem, sse_server_cert.pem, sse_server_key.pem: a good server folder for SSE_TLS_DIR. */
  readonly serverDir: string;
  /** Qlik's side: a client certificate signed by the root. */
  readonly client: ClientFiles;
  /** A client certificate from another CA (with that CA as `root`, which the plugin does not trust). */
  readonly rogueClient: ClientFiles;
  /**
   * Path of a generated file: root_cert.pem, server_cert.pem, server_key.pem, client_*, rogue_*,
   * expired_server_cert.pem (2020), expiring_server_cert.pem (10 days left),
   * remote_server_cert.pem (names only plugin.example.com), other_key.pem (matches nothing).
   */
  file(name: string): string;
  /** A fresh SSE_TLS_DIR whose three files are copies of the named generated files (null: left out). */
  tlsDir(files: { root?: string | null; cert?: string | null; key?: string | null }): string;
  remove(): void;
}

function serverExtensions(names: string): string {
  return [
    'basicConstraints=CA:FALSE',
    'keyUsage=digitalSignature,keyEncipherment',
    'extendedKeyUsage=serverAuth',
    `subjectAltName=${names}`,
  ].join('\n');
}

const SERVER_EXTENSIONS = serverExtensions('DNS:localhost,IP:127.0.0.1');

const CLIENT_EXTENSIONS = ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature,keyEncipherment', 'extendedKeyUsage=clientAuth'].join(
  '\n',
);

function openssl(cwd: string, args: readonly string[]): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeRoot(cwd: string, name: string, commonName: string): void {
  writeFileSync(path.join(cwd, `${name}.cnf`), `[req]\ndistinguished_name=dn\nprompt=no\n[dn]\nCN=${commonName}\n`);
  openssl(cwd, [
    'req',
    '-x509',
    '-config',
    `${name}.cnf`,
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    `${name}_key.pem`,
    '-out',
    `${name}_cert.pem`,
    '-days',
    '3650',
  ]);
}

function makeRequest(cwd: string, name: string, commonName: string): void {
  openssl(cwd, [
    'req',
    '-new',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    `${name}_key.pem`,
    '-out',
    `${name}.csr`,
    '-subj',
    `/CN=${commonName}`,
  ]);
}

function sign(cwd: string, request: string, out: string, ca: string, extensions: string, serial: number, days = 3650): void {
  writeFileSync(path.join(cwd, `${out}.ext`), extensions);
  openssl(cwd, [
    'x509',
    '-req',
    '-in',
    `${request}.csr`,
    '-CA',
    `${ca}_cert.pem`,
    '-CAkey',
    `${ca}_key.pem`,
    '-set_serial',
    String(serial),
    '-days',
    String(days),
    '-sha256',
    '-extfile',
    `${out}.ext`,
    '-out',
    `${out}_cert.pem`,
  ]);
}

/** `openssl ca` is the one OpenSSL 3.0 command that takes explicit start and end dates. */
function signExpired(cwd: string, name: string, ca: string): void {
  mkdirSync(path.join(cwd, 'ca'), { recursive: true });
  writeFileSync(path.join(cwd, 'ca', 'index.txt'), '');
  writeFileSync(path.join(cwd, 'ca', 'serial'), '1000\n');
  writeFileSync(path.join(cwd, `${name}.ext`), SERVER_EXTENSIONS);
  writeFileSync(
    path.join(cwd, 'ca.cnf'),
    [
      '[ca]',
      'default_ca=test_ca',
      '[test_ca]',
      'database=ca/index.txt',
      'new_certs_dir=ca',
      'serial=ca/serial',
      'default_md=sha256',
      'policy=any',
      'unique_subject=no',
      '[any]',
      'commonName=supplied',
      '',
    ].join('\n'),
  );
  openssl(cwd, [
    'ca',
    '-batch',
    '-config',
    'ca.cnf',
    '-cert',
    `${ca}_cert.pem`,
    '-keyfile',
    `${ca}_key.pem`,
    '-in',
    'server.csr',
    '-extfile',
    `${name}.ext`,
    '-startdate',
    '20200101000000Z',
    '-enddate',
    '20200102000000Z',
    '-notext',
    '-out',
    `${name}_cert.pem`,
  ]);
}

export function makeCertificates(): Certificates {
  const dir = mkdtempSync(path.join(tmpdir(), 'sse-certs-'));
  makeRoot(dir, 'root', 'sse_root');
  makeRequest(dir, 'server', 'sse_server');
  sign(dir, 'server', 'server', 'root', SERVER_EXTENSIONS, 2);
  makeRequest(dir, 'client', 'sse_client');
  sign(dir, 'client', 'client', 'root', CLIENT_EXTENSIONS, 3);
  makeRoot(dir, 'rogue_root', 'rogue_root');
  makeRequest(dir, 'rogue_client', 'sse_client');
  sign(dir, 'rogue_client', 'rogue_client', 'rogue_root', CLIENT_EXTENSIONS, 4);
  // The server's own key, certified by the rogue CA: valid, but not signed by root_cert.pem.
  sign(dir, 'server', 'rogue_server', 'rogue_root', SERVER_EXTENSIONS, 5);
  signExpired(dir, 'expired_server', 'root');
  sign(dir, 'server', 'expiring_server', 'root', SERVER_EXTENSIONS, 6, 10);
  // Names only a remote host, as a certificate made for the production host name would.
  sign(dir, 'server', 'remote_server', 'root', serverExtensions('DNS:plugin.example.com'), 7);
  // other_key.pem: a valid key that belongs to no certificate here.
  makeRequest(dir, 'other', 'other');

  const file = (name: string): string => path.join(dir, name);
  const read = (name: string): Buffer => readFileSync(file(name));
  let dirs = 0;
  const tlsDir: Certificates['tlsDir'] = (files) => {
    const target = file(`tls-${++dirs}`);
    mkdirSync(target);
    const copy = (source: string | null | undefined, fallback: string, name: string): void => {
      if (source !== null) copyFileSync(file(source ?? fallback), path.join(target, name));
    };
    copy(files.root, 'root_cert.pem', 'root_cert.pem');
    copy(files.cert, 'server_cert.pem', 'sse_server_cert.pem');
    copy(files.key, 'server_key.pem', 'sse_server_key.pem');
    return target;
  };
  return {
    dir,
    serverDir: tlsDir({}),
    client: { root: read('root_cert.pem'), cert: read('client_cert.pem'), key: read('client_key.pem') },
    rogueClient: { root: read('rogue_root_cert.pem'), cert: read('rogue_client_cert.pem'), key: read('rogue_client_key.pem') },
    file,
    tlsDir,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** For a test file or suite: certificates made before its tests and removed after them. */
export function certificatesForSuite(): () => Certificates {
  let certs: Certificates | undefined;
  before(() => {
    certs = makeCertificates();
  });
  after(() => certs?.remove());
  return () => {
    if (!certs) throw new Error('certificates are made in the before hook');
    return certs;
  };
}
