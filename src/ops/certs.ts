/**
 * Makes the certificate set of Qlik's SSE certificate guide in one step: a root, a server certificate
 * for the names the engine dials, and the client certificate the engine presents. An administrator's
 * most frequent trouble with SSE plugins is this set (names missing from the server certificate,
 * files from two different roots, keys other users can read), so it is made here with node's WebCrypto
 * and @peculiar/x509 (no openssl on the path needed, no shell, the same on Windows) and written with
 * the guide's file names, private keys readable by their owner only.
 */
import { webcrypto } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';

import 'reflect-metadata'; // @peculiar/x509's dependency injection (tsyringe) needs it loaded first

import * as x509 from '@peculiar/x509';

/** The file names of Qlik's guide: the plugin reads the first three, the engine the root and the client pair. */
export const CERT_FILES = {
  root: 'root_cert.pem',
  serverCert: 'sse_server_cert.pem',
  serverKey: 'sse_server_key.pem',
  clientCert: 'sse_client_cert.pem',
  clientKey: 'sse_client_key.pem',
} as const;

/** RSA 2048 with SHA-256, as the guide's openssl commands make: every gRPC core and Qlik release accepts it. */
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
type X509Crypto = Parameters<typeof x509.cryptoProvider.set>[0];

const KEY_ALGORITHM: webcrypto.RsaHashedKeyGenParams = {
  name: 'RSASSA-PKCS1-v1_5',
  hash: 'SHA-256',
  publicExponent: new Uint8Array([1, 0, 1]),
  modulusLength: 2048,
};
const DAY_MS = 86_400_000;
export const ROOT_DAYS = 3_650;
/** 825 days: the longest validity macOS and most TLS stacks still accept for a leaf certificate. */
export const DEFAULT_LEAF_DAYS = 825;
/** A clock a few minutes behind on the engine's machine must not see the new certificates as not valid yet. */
const CLOCK_SKEW_MS = 5 * 60_000;
const PRIVATE_KEY_MODE = 0o600;
const PUBLIC_FILE_MODE = 0o644;
const FOLDER_MODE = 0o700;

export interface CertRequest {
  readonly outDir: string;
  /** DNS names and IP addresses the engine uses to reach the plugin (the server certificate's subjectAltName). */
  readonly hosts: readonly string[];
  readonly leafDays: number;
  readonly now?: Date;
}

export class CertRequestError extends Error {
  override readonly name = 'CertRequestError';
}

/** The names as the server certificate will carry them: IP addresses as IP entries, the rest as DNS names. */
export function subjectAltNames(hosts: readonly string[]): x509.JsonGeneralName[] {
  return hosts.map((host) => ({ type: isIP(host) === 0 ? 'dns' : 'ip', value: host }));
}

/** Checks the names before any key is made: a typo here is "error 14" on the engine later. */
export function checkHosts(hosts: readonly string[]): void {
  if (hosts.length === 0) throw new CertRequestError('--host needs at least one name, e.g. --host sse.example.com,10.0.0.5');
  for (const host of hosts) {
    if (isIP(host) !== 0) continue;
    if (!/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(host))
      throw new CertRequestError(`--host ${JSON.stringify(host)} is neither a DNS name nor an IP address`);
  }
}

async function keyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

function validity(now: Date, days: number): { notBefore: Date; notAfter: Date } {
  return { notBefore: new Date(now.getTime() - CLOCK_SKEW_MS), notAfter: new Date(now.getTime() + days * DAY_MS) };
}

async function makeRoot(now: Date): Promise<{ cert: x509.X509Certificate; keys: CryptoKeyPair }> {
  const keys = await keyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=qlik-sse-js root',
    keys,
    ...validity(now, ROOT_DAYS),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys };
}

async function makeLeaf(
  root: { cert: x509.X509Certificate; keys: CryptoKeyPair },
  subject: string,
  usage: x509.ExtendedKeyUsage,
  names: x509.JsonGeneralName[] | undefined,
  now: Date,
  days: number,
): Promise<{ cert: x509.X509Certificate; keys: CryptoKeyPair }> {
  const keys = await keyPair();
  const cert = await x509.X509CertificateGenerator.create({
    subject,
    issuer: root.cert.subject,
    publicKey: keys.publicKey,
    signingKey: root.keys.privateKey,
    ...validity(now, days),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([usage]),
      ...(names === undefined ? [] : [new x509.SubjectAlternativeNameExtension(names)]),
      await x509.AuthorityKeyIdentifierExtension.create(root.keys.publicKey),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys };
}

/**
 * Writes the five files; refuses a folder that already holds any of them (an existing set may be in
 * use by a running engine, and a new root would lock it out).
 */
export async function writeCertificates(request: CertRequest): Promise<readonly string[]> {
  checkHosts(request.hosts);
  const existing = Object.values(CERT_FILES).filter((name) => existsSync(path.join(request.outDir, name)));
  if (existing.length > 0)
    throw new CertRequestError(`${request.outDir} already holds ${existing.join(', ')}: choose an empty folder or remove them first`);
  x509.cryptoProvider.set(webcrypto as unknown as X509Crypto);
  const now = request.now ?? new Date();
  const root = await makeRoot(now);
  const server = await makeLeaf(
    root,
    `CN=${request.hosts[0]}`,
    x509.ExtendedKeyUsage.serverAuth,
    subjectAltNames(request.hosts),
    now,
    request.leafDays,
  );
  const client = await makeLeaf(root, 'CN=qlik-sse-js client', x509.ExtendedKeyUsage.clientAuth, undefined, now, request.leafDays);
  mkdirSync(request.outDir, { recursive: true, mode: FOLDER_MODE });
  const files: [string, string, number][] = [
    [CERT_FILES.root, root.cert.toString('pem'), PUBLIC_FILE_MODE],
    [CERT_FILES.serverCert, server.cert.toString('pem'), PUBLIC_FILE_MODE],
    [CERT_FILES.serverKey, await privateKeyPem(server.keys.privateKey), PRIVATE_KEY_MODE],
    [CERT_FILES.clientCert, client.cert.toString('pem'), PUBLIC_FILE_MODE],
    [CERT_FILES.clientKey, await privateKeyPem(client.keys.privateKey), PRIVATE_KEY_MODE],
  ];
  return files.map(([name, pem, mode]) => {
    const file = path.join(request.outDir, name);
    // flag wx: never through a file (or link) someone placed there since the check above.
    writeFileSync(file, `${pem.trim()}\n`, { mode, flag: 'wx' });
    chmodSync(file, mode); // the umask may have taken bits away from the public files; never adds any to the keys
    return file;
  });
}
