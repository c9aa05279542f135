/**
 * The gRPC server: the qlik.sse.Connector service with raw-bytes (de)serialisers for the row
 * streams (rows are decoded in the workers, not here), the health service (src/grpc/health.ts), message-size
 * limits, and the connection rules: src/grpc/admission.ts owns the port (connection limit, TLS handshake,
 * handshake deadline) and hands connections to grpc-js, which closes those with no call open for
 * SSE_IDLE_TIMEOUT_MS and those whose peer stops answering pings.
 */
import type http2 from 'node:http2';

import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { evaluateScript, type HandlerDeps } from '../calls/evaluate-script';
import { executeFunction } from '../calls/execute-function';
import { MAX_REPLY_BYTES } from '../contract/replies';
import { tlsServerOptions } from '../ops/tls';
import { admitConnections, countCallsPerConnection, type DescriptorBudget } from './admission';
import { capabilities } from './capabilities';
import {
  ConnectionTable,
  connectionKey,
  MAX_CONCURRENT_STREAMS,
  MAX_RESETS_PER_HOST_PER_SECOND,
  MIN_RESETS_TO_CLOSE,
} from './connection-table';
import { guardHeaderLimits } from './header-guard';
import { boundHealthRequests, PluginHealth, type ServingStatus } from './health';
import { countIncomingMessages, holdStreamCost } from './incoming';
import { FirstCallPerHost, hostOf } from './peer-log';
import { encodeMessage, messages, PROTO_PATH } from './proto';
import { handOverLiveStreams } from './stream-handover';
import { endUnreadReplies } from './unread-replies';

export const SERVICE_NAME = 'qlik.sse.Connector';

const identity = (value: Buffer | Uint8Array): Buffer =>
  Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);

/** The Connector service as proto-loader describes it, with the streaming methods moving raw bytes. */
export function connectorService(): grpc.ServiceDefinition {
  const definition = loadSync(PROTO_PATH, { keepCase: true, enums: Number, longs: Number, defaults: true })[
    SERVICE_NAME
  ] as grpc.ServiceDefinition;
  const raw = (method: grpc.MethodDefinition<unknown, unknown>): grpc.MethodDefinition<Buffer, Uint8Array> => ({
    ...method,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  });
  return {
    GetCapabilities: {
      ...definition['GetCapabilities'],
      responseSerialize: (value: Record<string, unknown>) => encodeMessage(messages.Capabilities, value),
    } as grpc.MethodDefinition<unknown, unknown>,
    ExecuteFunction: raw(definition['ExecuteFunction'] as grpc.MethodDefinition<unknown, unknown>),
    EvaluateScript: raw(definition['EvaluateScript'] as grpc.MethodDefinition<unknown, unknown>),
  };
}

/**
 * A connection whose peer does not answer a ping within KEEPALIVE_TIMEOUT_MS is closed: a client
 * that vanished without a FIN (a half-open connection) while a call was open. Every HTTP/2 stack
 * answers pings by itself, mid-call included, and flow control keeps the socket's buffer clear for
 * them, so only a dead or hung peer fails it.
 */
export const KEEPALIVE_INTERVAL_MS = 60_000;
export const KEEPALIVE_TIMEOUT_MS = 20_000;

export interface RunningServer {
  readonly server: grpc.Server;
  readonly port: number;
  setServing(status: ServingStatus): void;
  /** Stops accepting connections; the ones open go on until the server shuts down. */
  stopListening(): void;
  /** Ends every connection still open, within a second (those closing by themselves first): after tryShutdown/forceShutdown. */
  destroyConnections(): void;
}

/**
 * The http2 server behind the connection injector: grpc-js keeps it in a private map, the newest entry
 * is the injector's. test/ops/connections.test.ts fails if that changes.
 */
function injectedHttp2Server(server: grpc.Server): http2.Http2Server {
  const servers = (server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> }).http2Servers;
  const injected = servers === undefined ? undefined : [...servers.keys()].at(-1);
  if (injected === undefined)
    throw new Error('grpc-js internals changed: no http2 server behind the injector; re-check src/grpc/server.ts');
  return injected;
}

/**
 * Gives each connection's HTTP/2 session to the table as it is made (before it reads a frame), so that
 * the table can lower the streams it allows when its host opens more connections (connection-table.ts),
 * and counts the streams a client reset before they were handled (stream-handover.ts) as its rapid
 * resets.
 */
function trackSessions(injected: http2.Http2Server, table: ConnectionTable, onResets: (key: string, closed: number) => void): void {
  const keys = new WeakMap<http2.ServerHttp2Session, string>();
  injected.on('session', (session: http2.ServerHttp2Session) => {
    const key = connectionKey(session.socket.remoteAddress, session.socket.remotePort);
    keys.set(session, key);
    table.sessionOpened(key, session);
  });
  handOverLiveStreams(injected, (session) => {
    const key = keys.get(session);
    if (key === undefined) return;
    const closed = table.streamReset(key);
    if (closed > 0) onResets(key, closed);
  });
}

/**
 * One warning line per RESET_WARNING_EVERY_MS at most, counting the connections closed since the
 * last: the rule fires many times a second under a storm (2,043 lines in one 25 s burst).
 */
const RESET_WARNING_EVERY_MS = 10_000;

function resetWarnings(logger: HandlerDeps['logger']): (key: string, closed: number) => void {
  let lastMs = Number.NEGATIVE_INFINITY;
  let unlogged = 0;
  return (key, closed) => {
    unlogged += closed;
    const now = performance.now();
    if (now - lastMs < RESET_WARNING_EVERY_MS) return;
    lastMs = now;
    logger.warn(
      { peer: key.replace('|', ':'), closed: unlogged, maxResetsPerSecond: MAX_RESETS_PER_HOST_PER_SECOND },
      `clients of one host reset more than ${MAX_RESETS_PER_HOST_PER_SECOND} streams in a second before they were handled (rapid reset): closed ${unlogged} connections that reset ${MIN_RESETS_TO_CLOSE} or more since the last such line`,
    );
    unlogged = 0;
  };
}

export async function startServer(
  deps: HandlerDeps,
  connections: Pick<DescriptorBudget, 'maxConnections' | 'maxConnectionsPerHost'>,
): Promise<RunningServer> {
  const { config, logger } = deps;
  const table = new ConnectionTable(connections.maxConnections, connections.maxConnectionsPerHost);
  const server = new grpc.Server({
    'grpc.max_receive_message_length': config.maxMessageBytes,
    'grpc.max_send_message_length': MAX_REPLY_BYTES,
    // GOAWAY for a connection with no call open: Qlik's engines reconnect on their next call.
    'grpc.max_connection_idle_ms': config.idleTimeoutMs,
    'grpc.keepalive_time_ms': KEEPALIVE_INTERVAL_MS,
    'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
    // Calls at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS): a client may not open
    // hundreds of thousands of streams; clients queue past it, as gRPC clients do.
    'grpc.max_concurrent_streams': MAX_CONCURRENT_STREAMS,
    interceptors: [
      boundHealthRequests,
      countIncomingMessages(deps.held, config.handshakeTimeoutMs, (peer) => deps.clientHosts.of(hostOf(peer))),
      endUnreadReplies(config.unreadReplyTimeoutMs, logger),
      countCallsPerConnection(table),
      holdStreamCost(),
    ],
  });
  const firstCalls = new FirstCallPerHost();
  server.addService(connectorService(), {
    GetCapabilities: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const functions = deps.functions?.definitions() ?? [];
      const peer = call.getPeer();
      logger[firstCalls.isFirst(peer) ? 'info' : 'debug'](
        { peer, allowScript: config.allowScript, functions: functions.length },
        'GetCapabilities',
      );
      callback(null, capabilities(config.allowScript, functions));
    },
    ExecuteFunction: executeFunction(deps),
    EvaluateScript: evaluateScript(deps),
  });
  const health = new PluginHealth(['', SERVICE_NAME]);
  health.addToServer(server);
  // TLS, when on, is done before grpc-js sees the socket (src/grpc/admission.ts).
  const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  trackSessions(injectedHttp2Server(server), table, resetWarnings(logger));
  guardHeaderLimits(server);
  const admission = await admitConnections(
    injector,
    {
      host: config.host,
      port: config.port,
      table,
      clientHosts: deps.clientHosts,
      listenFd: config.inheritedSockets?.grpcFd,
      handshakeTimeoutMs: config.handshakeTimeoutMs,
      tls: tlsServerOptions(config),
    },
    logger,
  );
  return {
    server,
    port: admission.port,
    setServing: (status) => health.setAll(status),
    stopListening: () => admission.stopListening(),
    destroyConnections: () => admission.destroyConnections(),
  };
}
