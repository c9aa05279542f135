/**
 * A grpc.health.v1 client for the tests, and a hostile one: run as its own process
 * (`node health-client.js <port> <calls> <nameBytes>`), it makes watch-and-cancel calls with
 * distinct names and prints one JSON line of outcomes. Its own process, because a grpc-js client
 * keeps the unsent part of a refused request in memory: measured in the plugin's process, that would
 * hide what the plugin itself keeps.
 */
import { spawn } from 'node:child_process';

import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';

const HealthClient = grpc.makeGenericClientConstructor(healthService as grpc.ServiceDefinition, 'Health');
export type HealthStub = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

export function healthClient(address: string): HealthStub {
  return new HealthClient(address, grpc.credentials.createInsecure()) as HealthStub;
}

export interface CheckOutcome {
  readonly code: grpc.status;
  readonly details: string;
  readonly status?: string;
}

export function check(client: HealthStub, service: string): Promise<CheckOutcome> {
  return new Promise((resolve) => {
    client['Check']?.({ service }, { deadline: Date.now() + 10_000 }, (error: grpc.ServiceError | null, response?: { status: string }) => {
      resolve(
        error ? { code: error.code, details: error.details } : { code: grpc.status.OK, details: '', status: response?.status ?? 'UNKNOWN' },
      );
    });
  });
}

export interface WatchOutcome {
  readonly first?: string;
  readonly code?: grpc.status;
  readonly details?: string;
}

/** Opens a Watch, waits for its first message (or its error), then cancels it. */
export function watchOnce(client: HealthStub, service: string): Promise<WatchOutcome> {
  return new Promise((resolve) => {
    const call = client['Watch']?.({ service }) as grpc.ClientReadableStream<{ status: string }>;
    call.once('data', (message: { status: string }) => {
      call.cancel();
      resolve({ first: message.status });
    });
    call.on('error', (error: grpc.ServiceError) => {
      if (error.code !== grpc.status.CANCELLED) resolve({ code: error.code, details: error.details });
    });
  });
}

export const distinctName = (i: number, bytes: number): string => `${i}:`.padEnd(bytes, 'x');

/** Outcome counts by first message or status code, e.g. { SERVICE_UNKNOWN: 3, RESOURCE_EXHAUSTED: 2 }. */
export type Tally = Record<string, number>;

/** Runs the hostile client in a child process and returns its tally. */
export function watchFlood(port: number, calls: number, nameBytes: number): Promise<Tally> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [__filename, String(port), String(calls), String(nameBytes)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    child.once('exit', (code) =>
      code === 0 ? resolve(JSON.parse(out) as Tally) : reject(new Error(`health flood exited ${code}: ${out}`)),
    );
  });
}

async function floodMain(port: number, calls: number, nameBytes: number): Promise<void> {
  const client = healthClient(`127.0.0.1:${port}`);
  const tally: Tally = {};
  for (let i = 0; i < calls; i++) {
    const outcome = await watchOnce(client, distinctName(i, nameBytes));
    const key = outcome.first ?? grpc.status[outcome.code ?? grpc.status.UNKNOWN] ?? 'UNKNOWN';
    tally[key] = (tally[key] ?? 0) + 1;
  }
  client.close();
  process.stdout.write(`${JSON.stringify(tally)}\n`);
}

if (require.main === module) {
  const [port, calls, nameBytes] = process.argv.slice(2).map(Number);
  floodMain(port ?? 0, calls ?? 0, nameBytes ?? 0).catch((error: unknown) => {
    process.stderr.write(`${String(error)}\n`);
    process.exitCode = 1;
  });
}
