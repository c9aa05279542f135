/**
 * Who holds the gRPC port's connection slots, and whom a newcomer may take one from when all are taken.
 *
 * A plain limit refuses the newcomer, so whoever fills the slots first keeps them: a client with two
 * addresses (each under SSE_MAX_CONNECTIONS_PER_HOST) held every slot with calls it never fed, and
 * under TLS raw TCP connections that never handshake needed no certificate to do the same; Qlik's
 * engine, reconnecting, was refused. Here a full table makes room by the worth of what it would close:
 *
 * - **pending** (TLS handshake not done, or in plaintext no call yet): proves nothing and costs the
 *   holder nothing to open again; the oldest goes first (a slow-handshake holder is old, a real client's
 *   handshake takes milliseconds);
 * - **idle** (no call open): a gRPC client reconnects on its next call;
 * - **busy** (a call open): closing it fails calls in progress, so it is taken last, and only from a
 *   host holding at least two more slots than the newcomer's: two networks holding every slot with
 *   calls they fed a byte at a time (or with connections whose HTTP/2 session died with a stream still
 *   counted open: Node keeps such a socket until the keepalive ping fails, 80 s) locked every newcomer
 *   out for as long as they liked. Health calls do not make a connection busy: a Watch stays open with
 *   nothing sent. A connection may hold MAX_WATCHES_PER_CONNECTION of them (each cost the front ~10 KB:
 *   32,768 on 128 connections grew it by 340 MB).
 *
 * and by share: the slot is taken from the host holding most, so the slots tend to an even share per
 * host (max-min fairness): a Qlik engine holding a few connections keeps them while a host holding a
 * hundred is cut, and a call in progress is never cut to move its slot between two hosts holding about
 * as many. A newcomer's host with c connections may take a pending or idle slot of a host holding more
 * than c, a busy one of a host holding more than c + 1. Behind a balancer the balancer is one host and
 * holds at most SSE_MAX_CONNECTIONS_PER_HOST, so its calls are cut only when other hosts hold the rest.
 * Choosing is one pass over the slots, and only when all are taken.
 */

export type ConnectionWorth = 'pending' | 'idle' | 'busy';

/**
 * Calls at once on one connection, the SETTINGS every connection starts with: the smallest value RFC
 * 9113 recommends (nginx uses 128). A Qlik engine runs far fewer (about one per engine worker thread);
 * a client past it queues its calls.
 */
export const MAX_CONCURRENT_STREAMS = 100;

/**
 * The streams one connection may carry when its host holds `connections`: MAX_CONCURRENT_STREAMS
 * shared among them, halved as their number doubles (so a host growing to 128 connections sends at
 * most 8 new SETTINGS to each), never less than one. The front's cost is per stream (about 150-400 µs
 * of its one thread for a call answered at once), and its event loop serves connections in turn:
 * 256 connections of two hosts opening and finishing health checks as fast as they were answered
 * stalled another client's calls 3-6 s with 100 streams each, 1.3-4.4 s with 8 each, and 1.5-2.1 s once
 * with one each. A LOAD makes one call at a time; a chart's calls beyond the threads only wait anyway.
 */
export function streamsPerConnection(connections: number): number {
  const halvings = Math.ceil(Math.log2(Math.max(1, connections)));
  return Math.max(1, Math.floor(MAX_CONCURRENT_STREAMS / 2 ** halvings));
}

/**
 * Streams the clients of one host may reset in a second before the front handed them to grpc-js
 * (stream-handover.ts): past it, the host's connections that reset at least MIN_RESETS_TO_CLOSE of
 * them in that second are closed (the others, and new connections, stay). Such a stream costs the
 * front only Node's bookkeeping, but a client can send thousands a session in one write. Only the
 * resetting connections: closing the whole host, and refusing it a while, let one address in Qlik's
 * /24 (or any client behind a balancer) cut Qlik's engine off. A call that was handled and then
 * cancelled never counts: a Qlik engine cancels a page of chart calls when a selection changes, and
 * counting those let a neighbour's storm close Qlik's connection with its calls. A connection is
 * closed only past more such resets than it may have streams open (MAX_CONCURRENT_STREAMS): at 32, a
 * client that cancelled 60 calls a second as soon as it sent them had its connection closed with a
 * neighbour's (a storm resets hundreds a connection in one write).
 */
export const MAX_RESETS_PER_HOST_PER_SECOND = 1_000;
export const MIN_RESETS_TO_CLOSE = 128;
const RESET_WINDOW_MS = 1_000;

/** What the table needs of a connection's HTTP/2 session: Node applies a lower limit at once (REFUSED_STREAM past it). */
export interface StreamSettings {
  settings(settings: { readonly maxConcurrentStreams: number }): void;
}

/**
 * Header bytes the open calls of one connection may hold, counted three times (the HTTP/2 text, its
 * base64, the decoded metadata): about 680 KB of headers, ten calls with the largest script header or
 * hundreds of ordinary ones. Open calls' headers live in HTTP/2 and grpc-js until the call ends, and a
 * client that held 256 streams with 60 KB headers on each of 256 connections grew the front to 4.5 GB
 * without a call reaching a handler. With this, all connections' open calls hold at most
 * SSE_MAX_CONNECTIONS × 2 MiB.
 */
export const MAX_HEADER_BYTES_PER_CONNECTION = 2 * 1024 * 1024;

/**
 * Health Watch calls one connection may hold open: a client health-checking its channel (grpc-js's
 * healthCheckConfig) opens one per connection.
 */
export const MAX_WATCHES_PER_CONNECTION = 4;

/** What a call is to its connection: work makes it busy; health calls do not, and Watch calls are counted. */
export type CallKind = 'work' | 'health' | 'watch';

/** Why a call was refused on its connection. */
export type CallRefusal = 'headers' | 'watches';

const WORTH_ORDER: Record<ConnectionWorth, number> = { pending: 0, idle: 1, busy: 2 };

export interface TrackedConnection {
  readonly host: string;
  /** remoteAddress and remotePort: how a call on the connection finds it (connectionKey). */
  readonly key: string;
  /** Admission order: older connections have smaller numbers. */
  readonly sequence: number;
  /** The TLS handshake is done, or (plaintext) a call was made on it. */
  proven: boolean;
  /** Open calls that make it busy (not health calls). */
  openCalls: number;
  /** Open health Watch calls (MAX_WATCHES_PER_CONNECTION). */
  watches: number;
  /** Counted header bytes of its open calls (MAX_HEADER_BYTES_PER_CONNECTION). */
  headerBytes: number;
  /** Ends the connection (and its calls); the table forgets it when it reports closed(). */
  readonly close: () => void;
  /** Its HTTP/2 session, once grpc-js made one; and the streams at once it allows now. */
  session: StreamSettings | undefined;
  maxStreams: number;
  /** Streams its client reset in its host's current window (see streamReset). */
  resets?: { readonly windowStartMs: number; readonly count: number };
}

export type Admission =
  | { readonly admit: true; readonly evict?: TrackedConnection }
  | { readonly admit: false; readonly reason: 'host' | 'full' };

export function connectionKey(remoteAddress: string | undefined, remotePort: number | undefined): string {
  return `${remoteAddress ?? '?'}|${remotePort ?? '?'}`;
}

export function worthOf(connection: TrackedConnection): ConnectionWorth {
  if (connection.openCalls > 0) return 'busy';
  return connection.proven ? 'idle' : 'pending';
}

export class ConnectionTable {
  private readonly byKey = new Map<string, TrackedConnection>();
  private readonly perHost = new Map<string, number>();
  /** Per host with connections: streams its clients reset in the current window. */
  private readonly resets = new Map<string, { windowStartMs: number; count: number }>();
  private sequence = 0;

  constructor(
    readonly maxConnections: number,
    readonly maxConnectionsPerHost: number,
  ) {}

  get size(): number {
    return this.byKey.size;
  }

  countOf(host: string): number {
    return this.perHost.get(host) ?? 0;
  }

  /** Whether a connection from `host` may come in, and which one to close first if it may. */
  admit(host: string): Admission {
    const fromHost = this.countOf(host);
    if (fromHost >= this.maxConnectionsPerHost) {
      const own = this.ownVictimOf(host);
      return own === undefined ? { admit: false, reason: 'host' } : { admit: true, evict: own };
    }
    if (this.byKey.size < this.maxConnections) return { admit: true };
    const evict = this.victimFor(fromHost);
    return evict === undefined ? { admit: false, reason: 'full' } : { admit: true, evict };
  }

  add(host: string, key: string, close: () => void): TrackedConnection {
    const connection: TrackedConnection = {
      host,
      key,
      sequence: this.sequence++,
      proven: false,
      openCalls: 0,
      watches: 0,
      headerBytes: 0,
      close,
      session: undefined,
      maxStreams: MAX_CONCURRENT_STREAMS,
    };
    this.byKey.set(key, connection);
    this.perHost.set(host, this.countOf(host) + 1);
    this.shareStreams(host);
    return connection;
  }

  /** The HTTP/2 session of the connection with this key was made: it gets its host's share of streams. */
  sessionOpened(key: string, session: StreamSettings): void {
    const connection = this.byKey.get(key);
    if (connection === undefined) return;
    connection.session = session;
    this.allowStreams(connection, streamsPerConnection(this.countOf(connection.host)));
  }

  closed(connection: TrackedConnection): void {
    if (this.byKey.get(connection.key) !== connection) return;
    this.byKey.delete(connection.key);
    const left = this.countOf(connection.host) - 1;
    if (left > 0) this.perHost.set(connection.host, left);
    else {
      this.perHost.delete(connection.host);
      this.resets.delete(connection.host);
    }
    this.shareStreams(connection.host);
  }

  /**
   * A client reset a stream on the connection with this key before it was handled. When its
   * host passed MAX_RESETS_PER_HOST_PER_SECOND, its connections that reset MIN_RESETS_TO_CLOSE or more
   * in this window are closed: how many (0 otherwise).
   */
  streamReset(key: string, nowMs = performance.now()): number {
    const connection = this.byKey.get(key);
    if (connection === undefined) return 0;
    const window = this.resets.get(connection.host);
    if (window === undefined || nowMs - window.windowStartMs >= RESET_WINDOW_MS) {
      this.resets.set(connection.host, { windowStartMs: nowMs, count: 1 });
      connection.resets = { windowStartMs: nowMs, count: 1 };
      return 0;
    }
    window.count++;
    const own = connection.resets?.windowStartMs === window.windowStartMs ? connection.resets.count : 0;
    connection.resets = { windowStartMs: window.windowStartMs, count: own + 1 };
    if (window.count <= MAX_RESETS_PER_HOST_PER_SECOND) return 0;
    const { windowStartMs } = window;
    return this.closeWhere(
      (other) =>
        other.host === connection.host && other.resets?.windowStartMs === windowStartMs && other.resets.count >= MIN_RESETS_TO_CLOSE,
    );
  }

  /** Closes the connections `dead` says yes to (their clients are gone, or abuse them); how many. */
  closeWhere(dead: (connection: TrackedConnection) => boolean): number {
    let count = 0;
    for (const connection of [...this.byKey.values()]) {
      if (!dead(connection)) continue;
      this.closed(connection);
      connection.close();
      count++;
    }
    return count;
  }

  /** Gives every connection of the host its share of streams, when the share changed. */
  private shareStreams(host: string): void {
    const share = streamsPerConnection(this.countOf(host));
    for (const connection of this.byKey.values()) if (connection.host === host) this.allowStreams(connection, share);
  }

  private allowStreams(connection: TrackedConnection, streams: number): void {
    if (connection.session === undefined || connection.maxStreams === streams) return;
    connection.maxStreams = streams;
    try {
      connection.session.settings({ maxConcurrentStreams: streams });
    } catch {
      // A session closing, or one whose client acknowledges no SETTINGS (Node allows 10 unacknowledged):
      // the last limit sent holds.
    }
  }

  /** The connection's TLS handshake is done (a client certificate the root signed). */
  proven(key: string): void {
    const connection = this.byKey.get(key);
    if (connection !== undefined) connection.proven = true;
  }

  /**
   * A call of this kind started on the connection with this key, its headers counted as headerBytes:
   * undefined when it may go on, or why not (nothing counted then): its connection's open calls would
   * hold more than MAX_HEADER_BYTES_PER_CONNECTION, or it is one Watch too many. Unknown keys: a
   * connection already gone.
   */
  callOpened(key: string, headerBytes = 0, kind: CallKind = 'work'): CallRefusal | undefined {
    const connection = this.byKey.get(key);
    if (connection === undefined) return undefined;
    connection.proven = true;
    if (connection.headerBytes + headerBytes > MAX_HEADER_BYTES_PER_CONNECTION) return 'headers';
    if (kind === 'watch' && connection.watches >= MAX_WATCHES_PER_CONNECTION) return 'watches';
    if (kind === 'work') connection.openCalls++;
    if (kind === 'watch') connection.watches++;
    connection.headerBytes += headerBytes;
    return undefined;
  }

  callClosed(key: string, headerBytes = 0, kind: CallKind = 'work'): void {
    const connection = this.byKey.get(key);
    if (connection === undefined) return;
    if (kind === 'work') connection.openCalls = Math.max(0, connection.openCalls - 1);
    if (kind === 'watch') connection.watches = Math.max(0, connection.watches - 1);
    connection.headerBytes = Math.max(0, connection.headerBytes - headerBytes);
  }

  /** The counted header bytes of a connection's open calls (0 for one gone). */
  headerBytesOf(key: string): number {
    return this.byKey.get(key)?.headerBytes ?? 0;
  }

  /**
   * A host at its share makes room among its own connections for a newcomer: its oldest pending one,
   * else its oldest idle one, never one with a call in progress. One address in Qlik's /24 holding the
   * host's 128 connections idle (each reopened as the idle timeout closed it) refused Qlik's engine.
   */
  private ownVictimOf(host: string): TrackedConnection | undefined {
    let best: TrackedConnection | undefined;
    for (const connection of this.byKey.values()) {
      if (connection.host !== host || worthOf(connection) === 'busy') continue;
      if (best === undefined || lessWorthOrOlder(connection, best)) best = connection;
    }
    return best;
  }

  /**
   * The slot to free for a newcomer whose host holds `fromHost`, or none it may take. A pending slot
   * may always be taken, whoever holds it (the newcomer's own host too): counted as a share, one
   * connection from each of 300 /24s that never finished its TLS handshake made a host with two
   * engines' connections "hold more", and its idle, verified connections were closed for the
   * attacker's next one (124 of 229 of the engines' calls failed: no certificate needed).
   */
  private victimFor(fromHost: number): TrackedConnection | undefined {
    const pendingOf = new Map<string, number>();
    for (const connection of this.byKey.values())
      if (worthOf(connection) === 'pending') pendingOf.set(connection.host, (pendingOf.get(connection.host) ?? 0) + 1);
    let best: TrackedConnection | undefined;
    for (const connection of this.byKey.values()) {
      const holds = this.countOf(connection.host);
      const worth = worthOf(connection);
      // Calls in progress are cut only for a gain in fairness: after the move the host still holds as many as the newcomer's.
      if (worth !== 'pending' && holds <= fromHost + (worth === 'busy' ? 1 : 0)) continue;
      if (best === undefined || this.before(connection, best, pendingOf)) best = connection;
    }
    return best;
  }

  /**
   * Closed first: a pending slot (worth nothing to anyone), then the host holding more (of two pending
   * slots: more pending ones), then idle before busy, then the oldest pending or the newest otherwise
   * (the least invested in). Counted by all their slots, an engine's /24 with two verified connections
   * "held most" of 300 /24s flooding handshakes, and every new connection of its own (a reconnect, a
   * health probe) was closed in its handshake: 62 of 76 failed.
   */
  private before(a: TrackedConnection, b: TrackedConnection, pendingOf: ReadonlyMap<string, number>): boolean {
    const pendingA = worthOf(a) === 'pending';
    if (pendingA !== (worthOf(b) === 'pending')) return pendingA;
    const holdsA = pendingA ? (pendingOf.get(a.host) ?? 0) : this.countOf(a.host);
    const holdsB = pendingA ? (pendingOf.get(b.host) ?? 0) : this.countOf(b.host);
    if (holdsA !== holdsB) return holdsA > holdsB;
    const worthA = WORTH_ORDER[worthOf(a)];
    const worthB = WORTH_ORDER[worthOf(b)];
    if (worthA !== worthB) return worthA < worthB;
    return pendingA ? a.sequence < b.sequence : a.sequence > b.sequence;
  }
}

/** Of a host's own connections, closed first: pending before idle, then the oldest. */
function lessWorthOrOlder(a: TrackedConnection, b: TrackedConnection): boolean {
  const worthA = WORTH_ORDER[worthOf(a)];
  const worthB = WORTH_ORDER[worthOf(b)];
  return worthA !== worthB ? worthA < worthB : a.sequence < b.sequence;
}
