/**
 * What each client host (src/grpc/client-hosts.ts) uses of a front-wide bound: the bytes held for
 * calls (src/calls/held-bytes.ts) and the open calls (src/calls/open-calls.ts). Without a share per
 * host, one client locked every other out of both: calls whose replies it never read held all of
 * SSE_MAX_HELD_MB, and 4,096 calls left open took every open-call slot.
 *
 * The share is a fixed part of the bound, SSE_HOST_SHARE_PERCENT (half by default), as connections
 * have SSE_MAX_CONNECTIONS_PER_HOST: whatever one host holds, another finds the rest free at once. A
 * fair share that shrank as hosts arrive (bound / active hosts) would not take back what the first
 * host already holds, so the newcomer could still find nothing until that host's calls end; and it
 * would let a client split itself over networks to shrink Qlik's share. A fixed part costs one map
 * lookup a check (O(1)); locking Qlik out takes as many client networks as the shares cover.
 */

/** Hosts kept with no member open, at most (a client cycling networks costs a Map delete a call past it). */
const KEPT_IDLE_HOSTS = 256;

/** One host's use; a member keeps it and adds to `used` directly, with no lookup per change. */
export interface HostUse {
  readonly host: string;
  /** Accounts or calls of the host not yet closed: the entry goes with the last. */
  members: number;
  used: number;
}

export class HostShares {
  private readonly hosts = new Map<string, HostUse>();

  /** Hosts known: with a member open, or idle among the few kept. */
  get size(): number {
    return this.hosts.size;
  }

  usedBy(host: string): number {
    return this.hosts.get(host)?.used ?? 0;
  }

  /** A member of `host` opens: its use, to add to while it is open and to leave once. */
  join(host: string): HostUse {
    let use = this.hosts.get(host);
    if (use === undefined) {
      use = { host, members: 0, used: 0 };
      this.hosts.set(host, use);
    }
    use.members++;
    return use;
  }

  /**
   * A host's entry stays after its last member while there are few hosts: a Map delete and set per
   * call would cost more than all the rest of this bookkeeping (a host with one call at a time).
   */
  leave(use: HostUse): void {
    if (--use.members <= 0 && this.hosts.size > KEPT_IDLE_HOSTS) this.hosts.delete(use.host);
  }
}

/** A host's part of `max` at `percent`, never below 1 (a host may always hold something). */
export function shareOf(max: number, percent: number): number {
  return Math.max(1, Math.floor((max * percent) / 100));
}
