/**
 * Which client host an address belongs to, for the shares that are per host: the fair queue's first
 * level (src/sandboxes/task-queue.ts) and the connections one host may hold (SSE_MAX_CONNECTIONS_PER_HOST).
 * Addresses that share their first SSE_CLIENT_PREFIX_V4 (24) or SSE_CLIENT_PREFIX_V6 (64) bits are one
 * host. Per address, a client with many of them had a share per address: a black-box pass ran 16
 * loopback addresses each looping a 5 s script and kept a busy host's call waiting 38.8 s behind one
 * task of each (about 10 minutes with the ~255 addresses of a /24), and one IPv6 machine owns a /64, 2^64
 * addresses. A /64 is what one IPv6 site or machine gets; a /24 is the IPv4 block address aliases come
 * from. Qlik's engines in one subnet then share as one host, which splits further by app and user.
 *
 * Addresses the administrator lists in SSE_PRIORITY_HOSTS (Qlik's engines) are each a host of their
 * own, named by the whole address, and go ahead of every other host in the fair queue: no rule a queue
 * can apply tells an engine from a client with many networks that behaves like one (40 /24s, each made
 * to look like a busy engine with 100 trivial calls, each put a loop ahead of the engine's calls), and
 * the administrator knows which addresses are the engines. A neighbour in an engine's /24 is not one.
 */
import { BlockList } from 'node:net';

import ipaddr from 'ipaddr.js';

export interface ClientPrefixes {
  /** Leading bits of an IPv4 address that name its host, 0-32. */
  readonly clientPrefixV4: number;
  /** Leading bits of an IPv6 address that name its host, 0-128. */
  readonly clientPrefixV6: number;
  /** Addresses and networks whose every address is a priority host (SSE_PRIORITY_HOSTS). */
  readonly priorityHosts?: readonly string[];
}

/** Addresses whose host is remembered; a client cycling addresses costs a recomputation, never memory. */
const MAX_REMEMBERED = 1024;

export class ClientHosts {
  private readonly known = new Map<string, string>();
  private readonly priority: BlockList | undefined;

  constructor(private readonly prefixes: ClientPrefixes) {
    this.priority = priorityList(prefixes.priorityHosts ?? []);
  }

  /**
   * The host of an address without its port: itself when the prefix is the whole address
   * (`10.0.0.7`), else its network (`10.0.0.0/24`, `2001:db8:1:2::/64`). An IPv4 address seen through
   * an IPv6 socket (`::ffff:10.0.0.7`) is that IPv4 address; what is not an address (`unknown`) is kept whole.
   */
  of(address: string): string {
    let host = this.known.get(address);
    if (host === undefined) {
      host = hostOf(address, this.prefixes, this.priority);
      if (this.known.size >= MAX_REMEMBERED) this.known.clear();
      this.known.set(address, host);
    }
    return host;
  }
}

function hostOf(address: string, prefixes: ClientPrefixes, priority: BlockList | undefined): string {
  const bare = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  if (!ipaddr.isValid(bare)) return address;
  const parsed = ipaddr.process(bare);
  if (priority?.check(parsed.toString(), parsed.kind())) return parsed.toString();
  const bytes = parsed.toByteArray();
  const prefixBits = parsed.kind() === 'ipv4' ? prefixes.clientPrefixV4 : prefixes.clientPrefixV6;
  if (prefixBits >= bytes.length * 8) return parsed.toString();
  for (let i = 0; i < bytes.length; i++) {
    const bitsKept = Math.min(8, Math.max(0, prefixBits - i * 8));
    bytes[i] = (bytes[i] ?? 0) & (0xff << (8 - bitsKept)) & 0xff;
  }
  return `${ipaddr.fromByteArray(bytes).toString()}/${prefixBits}`;
}

/** Whether SSE_PRIORITY_HOSTS may list this: an IP address, or a network as address/prefix bits. */
export function isAddressOrNetwork(entry: string): boolean {
  if (ipaddr.isValid(entry)) return true;
  try {
    ipaddr.parseCIDR(entry);
    return true;
  } catch {
    return false;
  }
}

/** Whether a host (as ClientHosts.of names it) is a priority host: an address `entries` (SSE_PRIORITY_HOSTS) list. */
export function priorityCheck(entries: readonly string[]): (host: string) => boolean {
  const list = priorityList(entries);
  if (list === undefined) return () => false;
  return (host) => ipaddr.isValid(host) && list.check(host, ipaddr.parse(host).kind());
}

function priorityList(entries: readonly string[]): BlockList | undefined {
  if (entries.length === 0) return undefined;
  const list = new BlockList();
  for (const entry of entries) {
    const [network, bits] = ipaddr.isValid(entry) ? [ipaddr.parse(entry), undefined] : ipaddr.parseCIDR(entry);
    const address = ipaddr.process(network.toString());
    // An IPv4 network written as IPv6 (::ffff:10.0.0.0/120) is listed as the IPv4 one, as addresses are seen.
    const prefix = bits === undefined ? undefined : address.kind() === network.kind() ? bits : bits - 96;
    if (prefix === undefined) list.addAddress(address.toString(), address.kind());
    else list.addSubnet(address.toString(), prefix, address.kind());
  }
  return list;
}
