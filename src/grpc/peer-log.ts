/**
 * Which GetCapabilities calls get an info line. Qlik calls GetCapabilities when it connects, and "no
 * GetCapabilities line" is how an administrator learns that the engine never reached the plugin, so
 * the first call from each host (the peer address without its port: every connection has a new port)
 * is logged at info; later calls from a known host go to debug, since a client calling in a loop
 * would otherwise fill the disk.
 *
 * Bounded both ways: hosts are remembered in an LRU of MAX_REMEMBERED_HOSTS (a client with many
 * addresses cannot grow it), and at most MAX_FIRST_LINES_PER_MINUTE first-seen lines are written a
 * minute (one cycling through more addresses than the LRU holds cannot flood the log either).
 */
export const MAX_REMEMBERED_HOSTS = 1_000;
export const MAX_FIRST_LINES_PER_MINUTE = 60;
const MINUTE_MS = 60_000;

export class FirstCallPerHost {
  /** Insertion order is recency: a host seen again moves to the end; the first key is the oldest. */
  private readonly hosts = new Set<string>();
  private windowStartMs = Number.NEGATIVE_INFINITY;
  private linesInWindow = 0;

  constructor(
    private readonly maxHosts = MAX_REMEMBERED_HOSTS,
    private readonly maxLinesPerMinute = MAX_FIRST_LINES_PER_MINUTE,
    private readonly nowMs: () => number = Date.now,
  ) {}

  /** True when a call from this peer deserves an info line. */
  isFirst(peer: string): boolean {
    const host = hostOf(peer);
    if (this.hosts.delete(host)) {
      this.hosts.add(host);
      return false;
    }
    this.hosts.add(host);
    if (this.hosts.size > this.maxHosts) this.hosts.delete(this.hosts.values().next().value as string);
    const now = this.nowMs();
    if (now - this.windowStartMs >= MINUTE_MS) {
      this.windowStartMs = now;
      this.linesInWindow = 0;
    }
    return ++this.linesInWindow <= this.maxLinesPerMinute;
  }

  get rememberedHosts(): number {
    return this.hosts.size;
  }
}

/**
 * The host of a grpc-js peer, without its port: `127.0.0.1:50123`, `[::1]:50123`, and `::1:50123` (grpc-js
 * 1.14 writes `${remoteAddress}:${remotePort}`, IPv6 unbracketed); an IPv4 address seen through an IPv6
 * socket (`::ffff:10.0.0.1`) is that IPv4 address. Anything else (`unknown`) is kept whole.
 */
export function hostOf(peer: string): string {
  if (peer.startsWith('[')) {
    const end = peer.indexOf(']');
    return end < 0 ? peer : peer.slice(0, end + 1);
  }
  const withoutPort = /^(.*):\d+$/.exec(peer)?.[1] ?? peer;
  return withoutPort.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
}
