/**
 * A grpc.health.v1 client: `node dist/src/ops/healthcheck.js [client-cert-folder]` exits 0 when the
 * plugin on SSE_HOST:SSE_PORT answers SERVING, 1 otherwise (the container HEALTHCHECK).
 *
 * With SSE_TLS_DIR set the plugin demands a client certificate, so the probe needs a folder with
 * root_cert.pem, sse_client_cert.pem and sse_client_key.pem (the files Qlik gets). The probe
 * trusts that root but skips the host-name check: it talks to its own machine, whatever names
 * the server certificate lists.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';

import { loadConfig } from './config';

export type HealthStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

const PROBE_DEADLINE_MS = 3_000;

export const CLIENT_CERT_FILES = { root: 'root_cert.pem', cert: 'sse_client_cert.pem', key: 'sse_client_key.pem' } as const;

const HealthClient = grpc.makeGenericClientConstructor(healthService as grpc.ServiceDefinition, 'Health');

export function clientCredentials(clientCertDir: string | undefined): grpc.ChannelCredentials {
  if (clientCertDir === undefined) return grpc.credentials.createInsecure();
  const read = (name: string): Buffer => readFileSync(path.join(clientCertDir, name));
  return grpc.credentials.createSsl(read(CLIENT_CERT_FILES.root), read(CLIENT_CERT_FILES.key), read(CLIENT_CERT_FILES.cert), {
    checkServerIdentity: () => undefined,
  });
}

/** Asks grpc.health.v1.Health/Check; rejects when the plugin cannot be reached. */
export function checkHealth(
  address: string,
  credentials: grpc.ChannelCredentials,
  serviceName = '',
  deadlineMs = PROBE_DEADLINE_MS,
): Promise<HealthStatus> {
  const client = new HealthClient(address, credentials);
  return new Promise<HealthStatus>((resolve, reject) => {
    const check = client['Check'] as (
      request: unknown,
      options: grpc.CallOptions,
      callback: grpc.requestCallback<{ status: HealthStatus }>,
    ) => void;
    check.call(client, { service: serviceName }, { deadline: Date.now() + deadlineMs }, (error, response) => {
      client.close();
      if (error) reject(error);
      else resolve(response?.status ?? 'UNKNOWN');
    });
  });
}

/** The address to probe: this machine, on the port the plugin listens on. */
export function probeAddress(host: string, port: number): string {
  const local = ['0.0.0.0', '::', '[::]'].includes(host) ? '127.0.0.1' : host;
  return local.includes(':') && !local.startsWith('[') ? `[${local}]:${port}` : `${local}:${port}`;
}

async function main(): Promise<void> {
  const config = loadConfig();
  const clientCertDir = process.argv[2];
  if (config.tlsDir !== undefined && clientCertDir === undefined) {
    throw new Error('SSE_TLS_DIR is set: pass a folder with root_cert.pem, sse_client_cert.pem, sse_client_key.pem as the first argument');
  }
  const status = await checkHealth(probeAddress(config.host, config.port), clientCredentials(clientCertDir));
  process.stdout.write(`${status}\n`);
  process.exitCode = status === 'SERVING' ? 0 : 1;
}

if (require.main === module) {
  main().catch((error: unknown) => {
    process.stdout.write(`unhealthy: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
