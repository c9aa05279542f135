/**
 * grpc.health.v1.Health for the names this plugin serves, and nothing else.
 *
 * Written here rather than taken from grpc-health-check's HealthImplementation: in 2.1.0 its Watch
 * adds a map entry for every service name a client asks about and never deletes it (removeWatcher
 * empties the entry's set but leaves the entry), and a name may be as large as a request message
 * (SSE_MAX_MESSAGE_BYTES). Watch-and-cancel calls with 15 MiB names filled the heap and aborted the
 * plugin in 24 s. Here:
 * - the names are fixed ('' and qlik.sse.Connector); an unknown name keeps no state beyond its own
 *   call: Check answers NOT_FOUND, Watch sends SERVICE_UNKNOWN once and holds only the open call,
 *   which grpc-js releases when the client cancels;
 * - a health request is one short name, so requests over MAX_HEALTH_REQUEST_BYTES are refused from
 *   their 5-byte gRPC length prefix, before the body is buffered: a server interceptor lowers
 *   grpc-js's per-call receive limit for this service's paths. That reaches grpc-js internals
 *   (pinned 1.14; test/ops/health.test.ts fails if they change), so the request deserializer refuses
 *   an over-large request again.
 * The library still supplies the service definition (its proto), which the probe client shares.
 */
import * as grpc from '@grpc/grpc-js';
import { service as librarySchema } from 'grpc-health-check';

export type ServingStatus = 'SERVING' | 'NOT_SERVING';
type WatchStatus = ServingStatus | 'SERVICE_UNKNOWN';

/** A HealthCheckRequest is a service name; 512 bytes is far above the longest name served here. */
export const MAX_HEALTH_REQUEST_BYTES = 512;

export const HEALTH_PATH_PREFIX = '/grpc.health.v1.Health/';
export const HEALTH_WATCH_PATH = `${HEALTH_PATH_PREFIX}Watch`;

interface HealthRequest {
  readonly service: string;
}

type Watcher = (status: ServingStatus) => void;

export class PluginHealth {
  private readonly statuses: ReadonlyMap<string, { status: ServingStatus; readonly watchers: Set<Watcher> }>;

  constructor(serviceNames: readonly string[]) {
    this.statuses = new Map(serviceNames.map((name) => [name, { status: 'NOT_SERVING' as ServingStatus, watchers: new Set<Watcher>() }]));
  }

  /** Sets every served name (the plugin is one unit: its service is up exactly when it is). */
  setAll(status: ServingStatus): void {
    for (const entry of this.statuses.values()) {
      if (entry.status === status) continue;
      entry.status = status;
      for (const watcher of entry.watchers) watcher(status);
    }
  }

  /** For tests: how many service names hold state, and how many Watch calls are registered. */
  stateSize(): { names: number; watchers: number } {
    let watchers = 0;
    for (const entry of this.statuses.values()) watchers += entry.watchers.size;
    return { names: this.statuses.size, watchers };
  }

  addToServer(server: grpc.Server): void {
    server.addService(boundedHealthService(), {
      Check: (call: grpc.ServerUnaryCall<HealthRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const entry = this.statuses.get(call.request.service);
        if (entry) callback(null, { status: entry.status });
        else callback({ code: grpc.status.NOT_FOUND, details: 'unknown service name: this plugin serves "" and "qlik.sse.Connector"' });
      },
      Watch: (call: grpc.ServerWritableStream<HealthRequest, unknown>) => this.watch(call),
      List: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        callback(null, { statuses: Object.fromEntries([...this.statuses].map(([name, entry]) => [name, { status: entry.status }])) });
      },
    });
  }

  private watch(call: grpc.ServerWritableStream<HealthRequest, unknown>): void {
    const send = (status: WatchStatus): void => void call.write({ status });
    const entry = this.statuses.get(call.request.service);
    if (!entry) {
      // The standard keeps the call open in case the name becomes known; ours never do.
      send('SERVICE_UNKNOWN');
      return;
    }
    entry.watchers.add(send);
    call.once('cancelled', () => entry.watchers.delete(send));
    send(entry.status);
  }
}

/** The library's service definition with a request deserializer that refuses over-large requests. */
function boundedHealthService(): grpc.ServiceDefinition {
  const schema = librarySchema as unknown as grpc.ServiceDefinition;
  return Object.fromEntries(
    Object.entries(schema).map(([name, method]) => [
      name,
      { ...method, requestDeserialize: (bytes: Buffer) => method.requestDeserialize(checkedRequestBytes(bytes)) as unknown },
    ]),
  );
}

function checkedRequestBytes(bytes: Buffer): Buffer {
  if (bytes.length > MAX_HEALTH_REQUEST_BYTES) {
    throw new Error(`a health request of ${bytes.length} bytes is larger than ${MAX_HEALTH_REQUEST_BYTES} bytes`);
  }
  return bytes;
}

/**
 * A server interceptor that lowers grpc-js's receive limit to MAX_HEALTH_REQUEST_BYTES for health
 * calls. It runs when the call is created, before any of its data is read, so grpc-js refuses an
 * over-large request (RESOURCE_EXHAUSTED "Received message larger than max") from its length prefix.
 */
export const boundHealthRequests: grpc.ServerInterceptor = (method, call) => {
  if (method.path.startsWith(HEALTH_PATH_PREFIX)) lowerReceiveLimit(call, MAX_HEALTH_REQUEST_BYTES);
  // Other calls pass through untouched: grpc-js only uses the call interface this value has.
  return call as grpc.ServerInterceptingCall;
};

/** grpc-js 1.14 BaseServerInterceptingCall: `maxReceiveMessageSize` and its StreamDecoder's limit. */
export function lowerReceiveLimit(call: object, maxBytes: number): void {
  const base = call as { maxReceiveMessageSize?: unknown; decoder?: { maxReadMessageLength?: unknown } };
  const decoder = base.decoder;
  if (typeof base.maxReceiveMessageSize !== 'number' || decoder === undefined || typeof decoder.maxReadMessageLength !== 'number') return;
  base.maxReceiveMessageSize = maxBytes;
  decoder.maxReadMessageLength = maxBytes;
}
