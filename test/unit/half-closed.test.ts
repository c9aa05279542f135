/** Reading the kernel's socket table for connections whose client closed its side (src/grpc/half-closed.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { halfClosedPeers, peerKey } from '../../src/grpc/half-closed';

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';

describe('half-closed connections', () => {
  it("finds the port's CLOSE-WAIT peers in tcp and tcp6, as a connection's own address and port name them", () => {
    const tables: Record<string, string> = {
      // 127.0.0.1:8080 <- 127.0.2.1:40000 in CLOSE-WAIT; the same peer ESTABLISHED on another port; a listener.
      '/proc/net/tcp': `${HEADER}   0: 0100007F:1F90 0102007F:9C40 08 00000000:00000000 00:00000000 00000000 0 0 1 1\n   1: 0100007F:1F91 0102007F:9C41 08 x\n   2: 0100007F:1F90 0103007F:9C42 01 x\n   3: 00000000:1F90 00000000:0000 0A x\n`,
      // ::1 <- ::1 port 40003, and an IPv4-mapped peer ::ffff:10.1.2.3 port 40004, both CLOSE-WAIT.
      '/proc/net/tcp6': `${HEADER}   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:9C43 08 x\n   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000302010A:9C44 08 x\n`,
    };
    const peers = halfClosedPeers(8080, (path) => tables[path] ?? '');
    assert.deepEqual([...peers].sort(), [peerKey('127.0.2.1', 40000), peerKey('::1', 40003), peerKey('::ffff:10.1.2.3', 40004)].sort());
    assert.equal(peerKey('::ffff:10.1.2.3', 40004), peerKey('10.1.2.3', 40004));
  });

  it('finds none where the table cannot be read', () => {
    assert.equal(halfClosedPeers(8080, () => '').size, 0);
  });
});
