/**
 * Server credentials. With SSE_TLS_DIR set: mutual TLS with the files Qlik's certificate guide
 * produces; every client must present a certificate signed by root_cert.pem.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { ServerCredentials } from '@grpc/grpc-js';

import type { Config } from './config';
import { ConfigError } from './config';

export const TLS_FILES = { root: 'root_cert.pem', cert: 'sse_server_cert.pem', key: 'sse_server_key.pem' } as const;

function readTlsFile(dir: string, name: string): Buffer {
  const file = path.join(dir, name);
  try {
    return readFileSync(file);
  } catch (error) {
    const reason = error instanceof Error && 'code' in error ? String(error.code) : String(error);
    throw new ConfigError(`SSE_TLS_DIR: cannot read ${file} (${reason})`);
  }
}

export function serverCredentials(config: Pick<Config, 'tlsDir'>): ServerCredentials {
  if (config.tlsDir === undefined) return ServerCredentials.createInsecure();
  const root = readTlsFile(config.tlsDir, TLS_FILES.root);
  const cert = readTlsFile(config.tlsDir, TLS_FILES.cert);
  const key = readTlsFile(config.tlsDir, TLS_FILES.key);
  return ServerCredentials.createSsl(root, [{ cert_chain: cert, private_key: key }], true);
}
