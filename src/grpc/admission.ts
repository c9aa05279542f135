/**
 * Connection admission: the plugin owns the listening socket of the gRPC port and hands a connection
 * to grpc-js (Server.createConnectionInjector) itself, because grpc-js's own listener has no
 * connection limit and no way to shorten Node's 120 s TLS handshake timeout. Connections that sent
 * nothing once filled the descriptor table, and the next sandbox spawn failed with EMFILE.
 *
 * - At most maxConnections open at once, a number derived from the descriptor limit so that connections
 *   can never take the descriptors sandbox spawns need. When all are taken, a newcomer takes the slot
 *   of a host holding more than its own (src/grpc/connection-table.ts says which) or is closed as soon
 *   as it is accepted, before it costs more than a moment's descriptor. A host is an address's network
 *   (src/grpc/client-hosts.ts): a client with many addresses holds one host's share.
 * - TLS: the handshake runs in a tls.Server of ours (the same root, certificate and key; a client
 *   certificate signed by the root is required; ALPN h2), and the verified socket goes to an
 *   injector with insecure credentials: the encryption is already in place.
 * - The TLS handshake must end within handshakeTimeoutMs of the accept, and the HTTP/2 connection
 *   preface must arrive within handshakeTimeoutMs of the accept (plaintext) or of the handshake's end
 *   (TLS), or the connection is closed: a client that sends nothing holds a descriptor that long.
 * - Later, a connection with no call open is closed after SSE_IDLE_TIMEOUT_MS by grpc-js
 *   (grpc.max_connection_idle_ms, set in src/grpc/server.ts); a connection with a call open never is.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

import type * as grpc from '@grpc/grpc-js';
import type { ConnectionInjector } from '@grpc/grpc-js';

import { heldHeaderBytes } from '../calls/held-bytes';
import { ConfigError } from '../ops/config';
import type { Logger } from '../ops/log';
import type { ClientHosts } from './client-hosts';
import {
  type CallKind,
  type ConnectionTable,
  connectionKey,
  MAX_HEADER_BYTES_PER_CONNECTION,
  MAX_WATCHES_PER_CONNECTION,
  worthOf,
} from './connection-table';
import { halfClosedPeers, peerKey } from './half-closed';
import { HEALTH_PATH_PREFIX, HEALTH_WATCH_PATH } from './health';
import { refusedBusy } from './incoming';

/** Connections when neither SSE_MAX_CONNECTIONS nor a low descriptor limit says less: a few engines, health checks, a balancer. */
export const DEFAULT_MAX_CONNECTIONS = 256;
/** Open connections to the metrics endpoint at most (it is reserved in the descriptor budget). */
export const METRICS_MAX_CONNECTIONS = 8;
/**
 * The front's own descriptors besides its sandbox processes, with room to spare: 21 measured at
 * idle (stdio, epoll, eventfds, libuv's pipes, the listening socket), plus files it opens now and
 * then (plugin functions, certificates, /proc).
 */
const FRONT_DESCRIPTORS = 64;
/**
 * Per sandbox process: 4 while it runs (stderr, channel, results, its statm file) and 8 while it is
 * being started (three socket pairs and libuv's exec pipe), all of them at once when every process
 * is replaced together.
 */
const DESCRIPTORS_PER_SANDBOX = 12;
/** Below this many connections the plugin is not worth starting: raise the descriptor limit. */
const MIN_CONNECTIONS = 4;
/** "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": a client that sent less has not started HTTP/2. */
const HTTP2_PREFACE_BYTES = 24;
/** Refused connections and failed handshakes are logged once, then at most once per this many ms. */
const WARNING_INTERVAL_MS = 10_000;

export interface DescriptorBudget {
  /** The soft RLIMIT_NOFILE (Node raises it to the hard limit at start); undefined when unknown (not Linux). */
  readonly descriptorLimit: number | undefined;
  /** Descriptors kept for the front itself, its sandbox processes and the metrics endpoint. */
  readonly reserved: number;
  readonly maxConnections: number;
  /** Of those, from one client address: a host that opens many cannot lock the others out. */
  readonly maxConnectionsPerHost: number;
}

/** The soft "Max open files" of /proc/self/limits; undefined if the text has none (or says unlimited). */
export function softDescriptorLimit(limitsText: string): number | undefined {
  const match = /^Max open files\s+(\d+)\s/m.exec(limitsText);
  return match ? Number(match[1]) : undefined;
}

export function readDescriptorLimit(): number | undefined {
  try {
    return softDescriptorLimit(readFileSync('/proc/self/limits', 'latin1'));
  } catch {
    return undefined;
  }
}

const RAISE_HINT = 'raise the limit (ulimit -n; LimitNOFILE= in a systemd unit; --ulimit nofile= for docker)';

/** How many connections fit; throws ConfigError when SSE_MAX_CONNECTIONS (or the limit itself) does not fit. */
export function descriptorBudget(
  descriptorLimit: number | undefined,
  needs: {
    readonly sandboxProcesses: number;
    readonly metrics: boolean;
    readonly maxConnections: number | undefined;
    readonly maxConnectionsPerHost?: number | undefined;
  },
): DescriptorBudget {
  const reserved = FRONT_DESCRIPTORS + needs.sandboxProcesses * DESCRIPTORS_PER_SANDBOX + (needs.metrics ? METRICS_MAX_CONNECTIONS + 1 : 0);
  const fit = descriptorLimit === undefined ? Number.POSITIVE_INFINITY : descriptorLimit - reserved;
  const limitText = `this process may open ${descriptorLimit} files and keeps ${reserved} for itself and its sandbox processes`;
  if (needs.maxConnections !== undefined && needs.maxConnections > fit)
    throw new ConfigError(
      `SSE_MAX_CONNECTIONS=${needs.maxConnections} does not fit the descriptor limit: ${limitText}, which leaves ${Math.max(0, fit)} for connections; lower SSE_MAX_CONNECTIONS or ${RAISE_HINT}`,
    );
  if (fit < MIN_CONNECTIONS)
    throw new ConfigError(`the descriptor limit is too low: ${limitText}, which leaves ${Math.max(0, fit)} for connections; ${RAISE_HINT}`);
  const maxConnections = needs.maxConnections ?? Math.min(DEFAULT_MAX_CONNECTIONS, fit);
  // Half by default: one host (a scanner, a client gone wrong) leaves the other half to Qlik's engines.
  const perHost = needs.maxConnectionsPerHost ?? Math.ceil(maxConnections / 2);
  return { descriptorLimit, reserved, maxConnections, maxConnectionsPerHost: Math.min(perHost, maxConnections) };
}

export interface AdmissionSettings {
  readonly host: string;
  readonly port: number;
  /** Its limits are SSE_MAX_CONNECTIONS and SSE_MAX_CONNECTIONS_PER_HOST; calls are counted in it by countCallsPerConnection. */
  readonly table: ConnectionTable;
  /** Which host a client address counts as for SSE_MAX_CONNECTIONS_PER_HOST (SSE_CLIENT_PREFIX_V4/V6). */
  readonly clientHosts: ClientHosts;
  /** A listening socket systemd passed (socket activation): used instead of binding host:port. */
  readonly listenFd?: number | undefined;
  readonly handshakeTimeoutMs: number;
  /** Mutual TLS (src/ops/tls.ts tlsServerOptions); undefined: plaintext. */
  readonly tls: tls.TlsOptions | undefined;
}

export interface Admission {
  readonly port: number;
  /** Stops accepting; connections already open go on (grpc-js closes its sessions on shutdown). */
  stopListening(): void;
  /** Ends every connection still open, handed to grpc-js or not, within CONNECTION_CLOSE_WAIT_MS: the last step of a stop. */
  destroyConnections(): void;
}

/** Listens on host:port and hands each admitted connection to the injector. */
export async function admitConnections(injector: ConnectionInjector, settings: AdmissionSettings, logger: Logger): Promise<Admission> {
  const { table } = settings;
  const open = new Set<net.Socket>();
  const refused = rateLimitedWarning(logger);
  const refusedHost = rateLimitedWarning(logger);
  const evicted = rateLimitedWarning(logger);
  const unverified = rateLimitedWarning(logger);
  const handOver = (socket: net.Socket): void => {
    watchPreface(socket, settings.handshakeTimeoutMs, logger);
    injector.injectConnection(socket);
  };
  const handshakes = settings.tls === undefined ? undefined : tlsHandshakes(settings, handOver, unverified, logger);
  const halfClosed = reaperOfHalfClosed(table, () => (listener.address() as net.AddressInfo | null)?.port, logger);
  const listener = net.createServer((socket) => {
    const host = settings.clientHosts.of(addressOf(socket));
    // A full table first gives up connections whose clients are gone, before it takes a live one.
    if (table.size >= table.maxConnections) halfClosed();
    const admission = table.admit(host);
    if (!admission.admit) {
      socket.on('error', () => undefined);
      socket.destroy();
      if (admission.reason === 'host')
        refusedHost.warn(
          { maxConnectionsPerHost: table.maxConnectionsPerHost, host },
          `connection refused: ${table.countOf(host)} connections from ${host} are open (SSE_MAX_CONNECTIONS_PER_HOST)`,
        );
      else
        refused.warn(
          { maxConnections: table.maxConnections, host },
          `connection refused: ${table.maxConnections} connections are open, none of them from a host with more than ${host} (SSE_MAX_CONNECTIONS)`,
        );
      return;
    }
    if (admission.evict) {
      const victim = admission.evict;
      evicted.warn(
        { maxConnections: table.maxConnections, closed: victim.host, worth: worthOf(victim), host },
        `${table.maxConnections} connections are open (SSE_MAX_CONNECTIONS): closed one of ${victim.host}'s ${table.countOf(victim.host)} to let ${host} in`,
      );
      table.closed(victim);
      victim.close();
    }
    const tracked = table.add(host, connectionKey(socket.remoteAddress, socket.remotePort), () => socket.destroy());
    open.add(socket);
    socket.once('close', () => {
      open.delete(socket);
      table.closed(tracked);
    });
    // A reset from a client that went away ends the socket; there is nothing more to do.
    socket.on('error', (error) => logger.debug({ err: error, peer: peerOf(socket) }, 'connection error'));
    if (handshakes) handshakes.emit('connection', socket);
    else handOver(socket);
  });
  await listen(
    listener,
    settings.listenFd === undefined ? { port: settings.port, host: settings.host.replace(/^\[(.*)\]$/, '$1') } : { fd: settings.listenFd },
  );
  // Past the listen, an error is a failed accept (EMFILE…): libuv keeps listening; say so, do not end the front.
  listener.on('error', (error) => logger.error({ err: error }, 'accepting a connection failed'));
  return {
    port: (listener.address() as net.AddressInfo).port,
    stopListening: () => listener.close(),
    destroyConnections() {
      // grpc-js's sessions are closing (tryShutdown) and may still be writing a call's trailers:
      // destroyed at once, 4 of 12 graceful stops on Node 24 cut the call in flight ("Connection
      // dropped"). Whatever has not closed by itself within the wait is destroyed then.
      for (const socket of open) setTimeout(() => socket.destroy(), CONNECTION_CLOSE_WAIT_MS).unref();
    },
  };
}

/** At the end of a stop, how long a connection may take to close by itself before it is destroyed. */
const CONNECTION_CLOSE_WAIT_MS = 1_000;

/** How often a full table may look for connections whose client is gone (a read of /proc/net/tcp). */
const HALF_CLOSED_CHECK_MS = 1_000;

/**
 * When every slot is taken: closes the connections whose client already closed its side (CLOSE-WAIT,
 * src/grpc/half-closed.ts), at most once every HALF_CLOSED_CHECK_MS; true when it closed any.
 */
function reaperOfHalfClosed(table: ConnectionTable, localPort: () => number | undefined, logger: Logger): () => boolean {
  let lastMs = Number.NEGATIVE_INFINITY;
  return () => {
    const port = localPort();
    const now = performance.now();
    if (port === undefined || now - lastMs < HALF_CLOSED_CHECK_MS) return false;
    lastMs = now;
    const gone = halfClosedPeers(port);
    if (gone.size === 0) return false;
    const closed = table.closeWhere((connection) => gone.has(peerKeyOf(connection.key)));
    if (closed > 0) logger.warn({ closed }, `closed ${closed} connections whose client had closed its side (TCP CLOSE-WAIT) to make room`);
    return closed > 0;
  };
}

/** A table key (connectionKey) as halfClosedPeers writes it. */
function peerKeyOf(key: string): string {
  const at = key.lastIndexOf('|');
  return peerKey(key.slice(0, at), Number(key.slice(at + 1)));
}

/**
 * Counts each call on its connection in the table (a call makes a plaintext connection proven, and an
 * open call makes it busy), with its headers: a call that would make its connection's open calls hold
 * more than MAX_HEADER_BYTES_PER_CONNECTION is answered RESOURCE_EXHAUSTED at once. The connection is
 * found by the peer address of the call's HTTP/2 session. Late in the interceptor list: it may return
 * a call of its own, and the ones before it need grpc-js's.
 */
export function countCallsPerConnection(table: ConnectionTable): grpc.ServerInterceptor {
  return (method, call) => {
    const base = call as unknown as { stream?: CallStream; metadata?: grpc.Metadata };
    const socket = base.stream?.session?.socket;
    if (base.stream === undefined || socket === undefined) return call as grpc.ServerInterceptingCall;
    const key = connectionKey(socket.remoteAddress, socket.remotePort);
    const headerBytes = heldHeaderBytes(base.metadata);
    const kind = callKindOf(method.path);
    const refusal = table.callOpened(key, headerBytes, kind);
    if (refusal === undefined) {
      base.stream.once('close', () => table.callClosed(key, headerBytes, kind));
      return call as grpc.ServerInterceptingCall;
    }
    const details =
      refusal === 'watches'
        ? `this connection has ${MAX_WATCHES_PER_CONNECTION} health Watch calls open, the most one connection may: watch on fewer calls`
        : `this connection's open calls hold ${Math.round(table.headerBytesOf(key) / 1024)} KiB of headers, the most one connection may (${MAX_HEADER_BYTES_PER_CONNECTION / 1024 / 1024} MiB counted three times): end some calls before opening more`;
    return refusedBusy(call, details);
  };
}

function callKindOf(path: string): CallKind {
  if (path === HEALTH_WATCH_PATH) return 'watch';
  return path.startsWith(HEALTH_PATH_PREFIX) ? 'health' : 'work';
}

interface CallStream {
  readonly session?: { readonly socket?: { readonly remoteAddress?: string; readonly remotePort?: number } };
  once(event: 'close', listener: () => void): unknown;
}

/**
 * A tls.Server that never listens: it takes the raw sockets we accept, runs the handshake within
 * handshakeTimeoutMs (a documented tls.Server option that grpc-js does not pass on), and gives back
 * verified sockets. Its errors are the ones grpc-js handled on its own TLS server.
 */
function tlsHandshakes(
  settings: AdmissionSettings,
  handOver: (socket: tls.TLSSocket) => void,
  unverified: RateLimitedWarning,
  logger: Logger,
): tls.Server {
  const server = tls.createServer({ ...settings.tls, handshakeTimeout: settings.handshakeTimeoutMs });
  server.on('tlsClientError', (error: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
    socket.destroy();
    // A certificate the root did not sign shows as a hang-up with authorizationError set.
    const reason = socket.authorizationError?.toString() ?? error.code ?? error.message;
    const fields = { peer: peerOf(socket), reason };
    // A TCP probe (connect, close) or a client too slow is no certificate problem: debug only.
    if (socket.authorizationError === undefined && (reason === 'ECONNRESET' || reason === 'ERR_TLS_HANDSHAKE_TIMEOUT'))
      logger.debug(fields, 'a connection ended before its TLS handshake did');
    else unverified.warn(fields, 'a client was refused in the TLS handshake: it must present a certificate signed by root_cert.pem');
  });
  // It never listens, so it has no accept to fail; an error would be a bug worth a line, not the front's end.
  server.on('error', (error) => logger.error({ err: error }, 'TLS handshake server error'));
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    // A verified client certificate: worth more than a connection that may never finish its handshake.
    settings.table.proven(connectionKey(socket.remoteAddress, socket.remotePort));
    // HTTP/2 listens for errors only while its session lives; before and after, they are ours.
    socket.on('error', () => socket.destroy());
    handOver(socket);
  });
  return server;
}

/**
 * By handshakeTimeoutMs after it reaches HTTP/2 (at the accept in plaintext, after the handshake with
 * TLS) the client must have sent the connection preface. bytesRead keeps counting once HTTP/2 reads
 * the socket itself.
 */
function watchPreface(socket: net.Socket, timeoutMs: number, logger: Logger): void {
  const timer = setTimeout(() => {
    if (socket.bytesRead >= HTTP2_PREFACE_BYTES) return;
    logger.debug({ peer: peerOf(socket), timeoutMs }, 'closing a connection that did not start HTTP/2 in time (SSE_HANDSHAKE_TIMEOUT_MS)');
    socket.destroy();
  }, timeoutMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** The client's address without its port. */
function addressOf(socket: net.Socket): string {
  return socket.remoteAddress ?? 'unknown';
}

function peerOf(socket: net.Socket): string {
  return `${socket.remoteAddress}:${socket.remotePort}`;
}

export function listen(server: net.Server, where: net.ListenOptions | { fd: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(where, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

interface RateLimitedWarning {
  warn(fields: Record<string, unknown>, message: string): void;
}

/** The first event is logged at once; then at most one line per WARNING_INTERVAL_MS, with how many were not logged. */
function rateLimitedWarning(logger: Logger): RateLimitedWarning {
  let lastMs = Number.NEGATIVE_INFINITY;
  let unlogged = 0;
  return {
    warn(fields, message) {
      const now = performance.now();
      if (now - lastMs < WARNING_INTERVAL_MS) {
        unlogged++;
        return;
      }
      logger.warn({ ...fields, notLogged: unlogged || undefined }, message);
      lastMs = now;
      unlogged = 0;
    },
  };
}
