/**
 * `npm run try -- --target HOST:PORT [--tls-dir DIR] …`: calls a plugin that is already running, as
 * Qlik's engine would (GetCapabilities, then the script), with the engine's files of Qlik's guide.
 * It is the check an administrator runs from the engine's machine, so when the connection fails it
 * says which of the usual causes it is: nothing listening, a server certificate without the name
 * dialled, a server certificate from another root, a client certificate missing or refused, TLS on
 * one side only. grpc-js folds all of these into UNAVAILABLE ("error 14" in Qlik's log); so before
 * the gRPC calls, one TLS (or plain TCP) connection with node's own sockets reads the real cause.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isIP, Socket } from 'node:net';
import path from 'node:path';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';

import * as grpc from '@grpc/grpc-js';

import { QlikClient } from './qlik-client';

/** The engine's side of Qlik's guide: the plugin's root and the client pair. */
export const CLIENT_FILES = { root: 'root_cert.pem', cert: 'sse_client_cert.pem', key: 'sse_client_key.pem' } as const;

/** A host that drops packets (firewall) answers nothing: give up after this. */
const CONNECT_TIMEOUT_MS = 10_000;
/** What a client sends first on HTTP/2: the preface and an empty SETTINGS frame; the server answers with its SETTINGS. */
const HTTP2_PREFACE = Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);
const HTTP2_SETTINGS_TYPE = 4;

export interface Target {
  readonly host: string;
  readonly port: number;
  /** Folder of the engine's files; undefined: plaintext, as Qlik's analytic connection without certificates. */
  readonly tlsDir: string | undefined;
}

export class TargetError extends Error {
  override readonly name = 'TargetError';
}

/** HOST:PORT, [IPv6]:PORT. Throws with what is accepted. */
export function parseTarget(text: string, tlsDir: string | undefined): Target {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text.trim());
  const port = Number(match?.[3]);
  const host = match?.[1] ?? match?.[2];
  if (host === undefined || !(port >= 1 && port <= 65_535))
    throw new TargetError(`--target ${text}: expected HOST:PORT, e.g. sse.example.com:50051 or [::1]:50051`);
  return { host, port, tlsDir: tlsDir === undefined ? undefined : path.resolve(tlsDir) };
}

interface ClientFiles {
  readonly root: Buffer;
  readonly cert: Buffer | undefined;
  readonly key: Buffer | undefined;
}

function readClientFiles(dir: string): ClientFiles {
  const file = (name: string): string => path.join(dir, name);
  if (!existsSync(file(CLIENT_FILES.root)))
    throw new TargetError(`--tls-dir ${dir} holds no ${CLIENT_FILES.root}: it needs the root the plugin's certificate was signed with`);
  const hasCert = existsSync(file(CLIENT_FILES.cert));
  if (hasCert !== existsSync(file(CLIENT_FILES.key)))
    throw new TargetError(`--tls-dir ${dir} holds only one of ${CLIENT_FILES.cert} and ${CLIENT_FILES.key}: the client needs both`);
  const read = (name: string): Buffer => {
    try {
      return readFileSync(file(name));
    } catch (error) {
      throw new TargetError(`${file(name)} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
    }
  };
  return {
    root: read(CLIENT_FILES.root),
    cert: hasCert ? read(CLIENT_FILES.cert) : undefined,
    key: hasCert ? read(CLIENT_FILES.key) : undefined,
  };
}

const where = (target: Target): string => (isIP(target.host) === 6 ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`);

/** One sentence per cause an administrator can act on; undefined: not one of them. */
function diagnose(error: NodeJS.ErrnoException & { reason?: string }, target: Target, files: ClientFiles | undefined): string {
  const at = where(target);
  const dir = target.tlsDir ?? '';
  switch (error.code) {
    case 'ECONNREFUSED':
      return `refused: nothing listens on ${at} (is the plugin running, on this SSE_PORT, with SSE_HOST=0.0.0.0 for remote engines, and does a firewall let the port through?)`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `the name ${target.host} cannot be resolved from this machine (DNS, hosts file)`;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ETIMEDOUT':
      return `${at} cannot be reached from this machine (${error.code}: routing or a firewall)`;
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
      return `TLS name mismatch: the plugin's certificate does not name ${target.host} (${error.reason ?? error.message}); connect with a name it lists, or make a certificate for this name (npm run certs -- --host ${target.host},…)`;
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'CERT_SIGNATURE_FAILURE':
      return `unknown root: the plugin's certificate is not signed by ${path.join(dir, CLIENT_FILES.root)} (${error.code}); use the root_cert.pem made together with the plugin's certificates`;
    case 'CERT_HAS_EXPIRED':
      return `the plugin's certificate has expired: make new certificates for both sides`;
    case 'CERT_NOT_YET_VALID':
      return `the plugin's certificate is not valid yet: check the clocks of both machines`;
    case 'ERR_SSL_WRONG_VERSION_NUMBER':
    case 'ERR_SSL_PACKET_LENGTH_TOO_LONG':
      return `${at} does not speak TLS: the plugin runs without SSE_TLS_DIR, so connect without --tls-dir (or set SSE_TLS_DIR on the plugin)`;
    default:
      return clientCertificateRefused(error, files, dir) ?? `could not connect to ${at}: ${error.code ?? ''} ${error.message}`.trim();
  }
}

/**
 * The plugin judges the client certificate after the handshake (TLS 1.3): its alert arrives as an
 * error on the first read. Without a certificate: "certificate required"; with one it does not
 * trust: "unknown ca" or "bad certificate".
 */
function clientCertificateRefused(error: NodeJS.ErrnoException, files: ClientFiles | undefined, dir: string): string | undefined {
  const code = error.code ?? '';
  const alert = /CERTIFICATE_REQUIRED|HANDSHAKE_FAILURE|UNKNOWN_CA|BAD_CERTIFICATE|DECRYPT_ERROR|ECONNRESET/.test(code);
  if (!alert || files === undefined) return undefined;
  if (files.cert === undefined)
    return `no client certificate: the plugin requires one (mutual TLS); put ${CLIENT_FILES.cert} and ${CLIENT_FILES.key} in ${dir}`;
  return `the plugin refused the client certificate ${path.join(dir, CLIENT_FILES.cert)} (${code}): it is not signed by the plugin's root_cert.pem; use the client files made together with the plugin's certificates`;
}

/** Opens one connection, sends the HTTP/2 preface and waits for the server's SETTINGS: the plugin answers there. */
function probe(target: Target, files: ClientFiles | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const socket: Socket | TLSSocket =
      files === undefined
        ? new Socket().connect(target.port, target.host)
        : tlsConnect({
            host: target.host,
            port: target.port,
            ...(isIP(target.host) === 0 ? { servername: target.host } : {}),
            ca: files.root,
            ...(files.cert === undefined ? {} : { cert: files.cert, key: files.key }),
            ALPNProtocols: ['h2'],
          });
    const fail = (message: string): void => {
      socket.destroy();
      reject(new TargetError(message));
    };
    socket.setTimeout(CONNECT_TIMEOUT_MS, () =>
      fail(`${where(target)} did not answer within ${CONNECT_TIMEOUT_MS / 1000} s (a firewall dropping packets?)`),
    );
    socket.once(files === undefined ? 'connect' : 'secureConnect', () => socket.write(HTTP2_PREFACE));
    socket.once('data', (chunk: Buffer) => {
      socket.destroy();
      if (chunk[3] === HTTP2_SETTINGS_TYPE) return resolve();
      // A TLS server answering plaintext bytes: an alert record (content type 21) or nothing at all.
      reject(new TargetError(notHttp2(target, files)));
    });
    socket.once('error', (error: NodeJS.ErrnoException) => fail(diagnose(error, target, files)));
    socket.once('close', () => reject(new TargetError(notHttp2(target, files))));
  });
}

/**
 * A TLS server given plaintext closes; the plugin closes without an alert when the root did not sign
 * the client certificate (src/grpc/admission.ts ends the socket), so the close says that much.
 */
function notHttp2(target: Target, files: ClientFiles | undefined): string {
  if (files === undefined)
    return `${where(target)} closed the connection without an HTTP/2 answer: the plugin probably requires TLS (SSE_TLS_DIR); pass --tls-dir with the engine's certificate files`;
  if (files.cert !== undefined && target.tlsDir !== undefined)
    return `the plugin refused the client certificate ${path.join(target.tlsDir, CLIENT_FILES.cert)} (closed after the handshake): it is not signed by the plugin's root_cert.pem; use the client files made together with the plugin's certificates`;
  return `${where(target)} accepted TLS but gave no HTTP/2 answer: is it the plugin?`;
}

function credentials(files: ClientFiles | undefined): grpc.ChannelCredentials {
  if (files === undefined) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(files.root, files.key ?? null, files.cert ?? null);
}

/** A connection to the target, checked first so that a failure names its cause, and what GetCapabilities said. */
export async function connectTarget(target: Target): Promise<{ client: QlikClient; capabilities: Record<string, unknown> }> {
  const files = target.tlsDir === undefined ? undefined : readClientFiles(target.tlsDir);
  await probe(target, files);
  // grpc-js sets the TLS ServerName to the address when the target is one, and Node warns about it
  // (DEP0123): a line about a library, not about the administrator's set-up, so it is not printed.
  if (isIP(target.host) !== 0) process.noDeprecation = true;
  const client = new QlikClient(where(target), credentials(files));
  try {
    const capabilities = await client.getCapabilities().catch((error: grpc.ServiceError) => {
      throw new TargetError(`GetCapabilities failed on ${where(target)}: ${grpc.status[error.code]} ${error.details}`);
    });
    return { client, capabilities };
  } catch (error) {
    client.close();
    throw error;
  }
}

/** One line on stderr: who answered, so the administrator sees which plugin and settings the engine reaches. */
export function describeCapabilities(target: Target, capabilities: Record<string, unknown>): string {
  const functions = Array.isArray(capabilities['functions']) ? capabilities['functions'].length : 0;
  return `connected to ${where(target)} (${target.tlsDir === undefined ? 'plaintext' : 'mutual TLS'}): ${String(capabilities['pluginIdentifier'])} ${String(capabilities['pluginVersion'])}, allowScript ${String(capabilities['allowScript'])}, ${functions} plugin function(s)`;
}
