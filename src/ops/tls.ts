/**
 * TLS settings. With SSE_TLS_DIR set: mutual TLS with the files Qlik's certificate guide produces;
 * every client must present a certificate signed by root_cert.pem.
 *
 * The files are checked at start because a TLS mistake otherwise shows up only as "the engine
 * cannot connect" with nothing in the plugin's log: each problem stops the start with the file
 * and the reason.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { TlsOptions } from 'node:tls';

import type { Config } from './config';
import { ConfigError } from './config';

export const TLS_FILES = { root: 'root_cert.pem', cert: 'sse_server_cert.pem', key: 'sse_server_key.pem' } as const;

/** A certificate that expires within this many days gets a warning at start. */
export const EXPIRY_WARNING_DAYS = 30;

const DAY_MS = 86_400_000;
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

export interface TlsFiles {
  readonly root: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
  /** The server certificate (first of sse_server_cert.pem), for the start-up log. */
  readonly server: X509Certificate;
  readonly rootCertificate: X509Certificate;
}

function fail(file: string, reason: string): never {
  throw new ConfigError(`SSE_TLS_DIR: ${file} ${reason}`);
}

function readTlsFile(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    const code = error instanceof Error && 'code' in error ? String(error.code) : '';
    if (code === 'ENOENT')
      fail(
        file,
        "does not exist (the folder must hold root_cert.pem, sse_server_cert.pem and sse_server_key.pem, named as Qlik's certificate guide names them)",
      );
    if (code === 'EACCES' || code === 'EPERM') fail(file, `cannot be read by the user running the plugin (${code})`);
    if (code === 'EISDIR') fail(file, 'is a folder, not a file');
    fail(file, `cannot be read (${code || String(error)})`);
  }
}

/** Every certificate in a PEM file, in order (a chain file may hold intermediates after the leaf). */
function parseCertificates(file: string, pem: Buffer): X509Certificate[] {
  const blocks = pem.toString('latin1').match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) {
    const hint = /PRIVATE KEY-----/.test(pem.toString('latin1')) ? ' (it holds a private key: are the files swapped?)' : '';
    fail(file, `holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)${hint}`);
  }
  return blocks.map((block) => {
    try {
      return new X509Certificate(block);
    } catch (error) {
      return fail(file, `holds a certificate that cannot be parsed (${error instanceof Error ? error.message : String(error)})`);
    }
  });
}

function parsePrivateKey(file: string, pem: Buffer): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (error) {
    const text = pem.toString('latin1');
    if (/BEGIN CERTIFICATE/.test(text)) fail(file, 'holds a certificate, not a private key: are the files swapped?');
    if (/ENCRYPTED/.test(text)) fail(file, "is encrypted with a passphrase; the plugin needs the unencrypted key Qlik's guide produces");
    return fail(file, `holds no readable PEM private key (${error instanceof Error ? error.message : String(error)})`);
  }
}

function checkDates(file: string, certificate: X509Certificate, now: Date): void {
  const notBefore = new Date(certificate.validFrom);
  const notAfter = new Date(certificate.validTo);
  if (now < notBefore) fail(file, `is not valid yet: valid from ${notBefore.toISOString()} (check this machine's clock)`);
  if (now > notAfter) fail(file, `expired on ${notAfter.toISOString()}; generate new certificates and give the client files to Qlik too`);
}

/** Each certificate of the chain is signed by the next one, and the last one by the root. */
function checkSignedByRoot(certFile: string, rootFile: string, chain: readonly X509Certificate[], root: X509Certificate): void {
  for (let i = 0; i < chain.length; i++) {
    const subject = chain[i] as X509Certificate;
    const issuer = chain[i + 1] ?? root;
    if (subject.fingerprint256 === root.fingerprint256) return;
    if (!subject.verify(issuer.publicKey)) {
      const by = i + 1 < chain.length ? `the next certificate in ${certFile}` : rootFile;
      fail(
        certFile,
        `is not signed by ${by} (certificate ${i + 1}: ${oneLineName(subject.subject)}, issued by ${oneLineName(subject.issuer)}; root: ${oneLineName(root.subject)}); use the root_cert.pem generated together with this certificate`,
      );
    }
  }
}

/** Reads and checks the three files; throws ConfigError naming the file and the reason. */
export function loadTlsFiles(dir: string, now: Date = new Date()): TlsFiles {
  if (!existsSync(dir)) throw new ConfigError(`SSE_TLS_DIR=${dir}: the folder does not exist`);
  const rootFile = path.join(dir, TLS_FILES.root);
  const certFile = path.join(dir, TLS_FILES.cert);
  const keyFile = path.join(dir, TLS_FILES.key);
  const root = readTlsFile(rootFile);
  const cert = readTlsFile(certFile);
  const key = readTlsFile(keyFile);

  const rootCertificate = parseCertificates(rootFile, root)[0] as X509Certificate;
  const chain = parseCertificates(certFile, cert);
  const server = chain[0] as X509Certificate;
  const privateKey = parsePrivateKey(keyFile, key);
  checkDates(rootFile, rootCertificate, now);
  for (const certificate of chain) checkDates(certFile, certificate, now);
  if (!server.checkPrivateKey(privateKey)) {
    fail(
      keyFile,
      `does not match ${certFile} (the key belongs to another certificate); use the key generated together with this certificate`,
    );
  }
  checkSignedByRoot(certFile, rootFile, chain, rootCertificate);
  return { root, cert, key, server, rootCertificate };
}

/**
 * What the handshake needs (src/grpc/admission.ts runs it): a client certificate signed by root_cert.pem
 * or no connection, and HTTP/2 by ALPN, as grpc-js's createSsl(root, [pair], true) asked for.
 */
export function tlsServerOptions(config: Pick<Config, 'tlsDir'>): TlsOptions | undefined {
  if (config.tlsDir === undefined) return undefined;
  const files = loadTlsFiles(config.tlsDir);
  return { ca: files.root, cert: files.cert, key: files.key, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'] };
}

export interface TlsSummary {
  readonly serverSubject: string;
  readonly serverNames: readonly string[];
  readonly validTo: string;
  readonly daysLeft: number;
  readonly rootSubject: string;
}

/** What the start-up log says about the certificates. */
export function summarizeTls(files: TlsFiles, now: Date = new Date()): TlsSummary {
  const validTo = new Date(files.server.validTo);
  return {
    serverSubject: oneLineName(files.server.subject),
    serverNames: (files.server.subjectAltName ?? '')
      .split(',')
      .map((name) => name.trim())
      .filter((name) => name !== ''),
    validTo: validTo.toISOString(),
    daysLeft: Math.floor((validTo.getTime() - now.getTime()) / DAY_MS),
    rootSubject: oneLineName(files.rootCertificate.subject),
  };
}

/** True when a TLS client connecting to `host` would accept the server certificate's names. */
export function certificateNamesHost(certificate: X509Certificate, host: string): boolean {
  const isIp = /^[\d.]+$/.test(host) || host.includes(':');
  return isIp ? certificate.checkIP(host) !== undefined : certificate.checkHost(host) !== undefined;
}

function oneLineName(name: string): string {
  return name
    .split('\n')
    .filter((part) => part !== '')
    .join(', ');
}
