/**
 * Which of the port's connections the client has closed its side of (TCP CLOSE-WAIT), read from the
 * kernel's socket table. Node's HTTP/2 session stops reading a socket once nghttp2 ended the session
 * on a protocol error (a frame on a stream already closed), so it never sees the client's FIN: the
 * connection stays, a call counted open on it, until the keepalive ping fails 80-100 s later. One such
 * connection from each of 256 networks (three packets each) kept every newcomer out that long, again
 * and again. A client that sent its FIN sends no more calls, so when every slot is taken these are
 * closed first (src/grpc/admission.ts). Linux only (/proc/net/tcp, tcp6); elsewhere none are found.
 */
import { readFileSync } from 'node:fs';
import { endianness } from 'node:os';

import ipaddr from 'ipaddr.js';

const CLOSE_WAIT = '08';
const TABLES = ['/proc/net/tcp', '/proc/net/tcp6'];

/** `address|port` (the address normalised by peerKey) of every connection to localPort in CLOSE-WAIT. */
export function halfClosedPeers(localPort: number, read: (path: string) => string = readTable): Set<string> {
  const peers = new Set<string>();
  for (const path of TABLES) {
    const text = read(path);
    for (const line of text.split('\n').slice(1)) {
      const [, local, remote, state] = line.trim().split(/\s+/);
      if (state !== CLOSE_WAIT || local === undefined || remote === undefined) continue;
      if (portOf(local) !== localPort) continue;
      const address = addressOf(remote);
      if (address !== undefined) peers.add(`${address}|${portOf(remote)}`);
    }
  }
  return peers;
}

/** A connection's remote address and port as halfClosedPeers writes them (IPv4-mapped IPv6 as IPv4). */
export function peerKey(remoteAddress: string | undefined, remotePort: number | undefined): string {
  if (remoteAddress === undefined || !ipaddr.isValid(remoteAddress)) return `${remoteAddress}|${remotePort}`;
  return `${ipaddr.process(remoteAddress).toNormalizedString()}|${remotePort}`;
}

function readTable(path: string): string {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return '';
  }
}

function portOf(endpoint: string): number {
  return Number.parseInt(endpoint.slice(endpoint.indexOf(':') + 1), 16);
}

/** The kernel writes each 32-bit word of the address in host byte order. */
function addressOf(endpoint: string): string | undefined {
  const hex = endpoint.slice(0, endpoint.indexOf(':'));
  if (hex.length !== 8 && hex.length !== 32) return undefined;
  const littleEndian = endianness() === 'LE';
  const bytes: number[] = [];
  for (let word = 0; word < hex.length; word += 8)
    for (let byte = 0; byte < 4; byte++) {
      const at = word + 2 * (littleEndian ? 3 - byte : byte);
      bytes.push(Number.parseInt(hex.slice(at, at + 2), 16));
    }
  return ipaddr.process(ipaddr.fromByteArray(bytes).toString()).toNormalizedString();
}
