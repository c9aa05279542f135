/**
 * One budget for everything the front holds on behalf of its calls, together (SSE_MAX_HELD_MB): rows
 * of open calls waiting to be sent to a sandbox (an aggregation keeps all its rows until the client
 * half-closes), rows of tasks queued or running, results waiting for their turn in request order,
 * table chunks held until the call's last row and the joined table, and replies handed to gRPC that
 * the client has not taken yet. Each limit per call (SSE_MEMORY_LIMIT_MB, SSE_MAX_QUEUE, one reply
 * message ahead of the client) bounds one call; only this bounds many calls at once, such as twenty
 * aggregations that never half-close, which otherwise grow the front until the kernel
 * ends it with every call in flight.
 *
 * Each call opens an account; what it holds is counted when it arrives or is produced, before it is
 * kept, and a call that would pass the budget fails with RESOURCE_EXHAUSTED "busy" naming the
 * variable. The account is closed when the call ends, whichever way, and gives back what is left,
 * so a bug in one release path cannot leak budget for ever.
 *
 * One client host (src/grpc/client-hosts.ts) may hold at most SSE_HOST_SHARE_PERCENT of the budget
 * (half by default): a client that never read its replies held all 512 MB from one address, and
 * every other host's calls were refused as busy. Past its share a host's call is refused naming
 * the setting, while another host finds the rest free (src/calls/host-shares.ts says why a fixed part).
 */
import { PluginError } from '../contract/errors';
import { HostShares, type HostUse, shareOf } from './host-shares';

const MB = 1024 * 1024;

export class HeldBytes {
  private total = 0;
  private peak = 0;
  private openAccounts = 0;
  /** What each host holds: its accounts and their bytes. */
  private readonly hosts = new HostShares();
  private readonly maxHostBytes: number;

  constructor(
    readonly maxHeldMb: number,
    readonly hostSharePercent = 100,
    /** Told of each refusal (sse_busy_refusals_total). */
    private readonly onRefused: () => void = () => undefined,
  ) {
    this.maxHostBytes = shareOf(this.maxBytes, hostSharePercent);
  }

  get maxBytes(): number {
    return this.maxHeldMb * MB;
  }

  /** Bytes held now by the calls of one client host. */
  bytesOf(host: string): number {
    return this.hosts.usedBy(host);
  }

  /** Bytes held now by all calls together. */
  get bytes(): number {
    return this.total;
  }

  /** The most bytes ever held at once (tests, diagnostics). */
  get peakBytes(): number {
    return this.peak;
  }

  /** Accounts not yet closed: calls still holding, or able to hold, bytes. */
  get accounts(): number {
    return this.openAccounts;
  }

  /** host: the client host of the call (src/grpc/client-hosts.ts), whose share the account counts in. */
  open(host = ''): HeldAccount {
    this.openAccounts++;
    return new HeldAccount(this, this.hosts.join(host));
  }

  /** @internal by HeldAccount only: adds `bytes` or throws, leaving the totals unchanged. */
  take(bytes: number, ownBytes: number, host: HostUse): void {
    if (host.used + bytes > this.maxHostBytes && this.maxHostBytes < this.maxBytes) {
      this.onRefused();
      throw hostShareError(this.maxHeldMb, this.hostSharePercent, host.host, ownBytes + bytes > this.maxHostBytes);
    }
    if (this.total + bytes > this.maxBytes) {
      this.onRefused();
      throw heldLimitError(this.maxHeldMb, ownBytes + bytes > this.maxBytes);
    }
    this.total += bytes;
    host.used += bytes;
    if (this.total > this.peak) this.peak = this.total;
  }

  /** @internal by HeldAccount only. */
  give(bytes: number, host: HostUse, closing: boolean): void {
    this.total -= bytes;
    host.used -= bytes;
    if (closing) {
      this.openAccounts--;
      this.hosts.leave(host);
    }
  }
}

/** What one call holds. Releasing more than it holds, or after it closed, gives back nothing more. */
export class HeldAccount {
  private own = 0;
  private closed = false;
  /** Something else the call holds until it ends (its open-call slot). */
  private alsoHeld: { release(): void } | undefined;

  constructor(
    private readonly budget: HeldBytes,
    /** The client host whose share it counts in, and what it holds. */
    private readonly use: HostUse,
  ) {}

  /** The client host whose share it counts in. */
  get host(): string {
    return this.use.host;
  }

  get bytes(): number {
    return this.own;
  }

  /** Counts bytes the call is about to keep; throws the busy error when they do not fit. */
  hold(bytes: number): void {
    if (this.closed || bytes <= 0) return;
    this.budget.take(bytes, this.own, this.use);
    this.own += bytes;
  }

  release(bytes: number): void {
    const given = Math.min(Math.max(0, bytes), this.own);
    this.own -= given;
    this.budget.give(given, this.use, false);
  }

  /** The call ended: gives back all it still holds. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.budget.give(this.own, this.use, true);
    this.own = 0;
    this.alsoHeld?.release();
  }

  /** Gives back something else the call holds when it ends (its open-call slot): no listener more per call. */
  alsoRelease(held: { release(): void }): void {
    if (this.closed) return held.release();
    this.alsoHeld = held;
  }
}

/**
 * A call's stream holds nothing more after the first of these: its account closes then. Not at
 * 'error': grpc-js answers an error status by ending the stream, and replies already written are
 * still on their way until 'finish' (or 'cancelled', which grpc-js emits when any call's stream closes).
 */
const CALL_END_EVENTS = ['close', 'cancelled', 'finish'] as const;

/**
 * Opens the one account of a call (its headers and state, rows, results, replies), closed by the first
 * of its stream's end events however the call ends: its pipeline may never settle if the client just
 * goes away, and replies written but not yet taken stay counted until the stream is done with them.
 */
export function openCallAccount(
  held: HeldBytes,
  call: { once(event: string, listener: () => void): unknown },
  account: HeldAccount = held.open(),
): HeldAccount {
  for (const event of CALL_END_EVENTS) call.once(event, () => account.close());
  return account;
}

/** alone: the call by itself holds more than the whole budget (so waiting would not help). */
export function heldLimitError(maxHeldMb: number, alone = false): PluginError {
  if (alone) {
    return new PluginError(
      'RESOURCE_EXHAUSTED',
      `the plugin is busy: this call's rows and results waiting in the plugin pass the ${maxHeldMb} MB it holds for all calls together (SSE_MAX_HELD_MB)`,
    );
  }
  return new PluginError(
    'RESOURCE_EXHAUSTED',
    `the plugin is busy: its calls already hold close to ${maxHeldMb} MB of rows and results waiting (SSE_MAX_HELD_MB); try again shortly`,
  );
}

/** alone: this call by itself holds more than the host's share. */
export function hostShareError(maxHeldMb: number, sharePercent: number, host: string, alone: boolean): PluginError {
  const share = `${sharePercent}% of the ${maxHeldMb} MB the plugin holds for all calls (SSE_HOST_SHARE_PERCENT of SSE_MAX_HELD_MB)`;
  return new PluginError(
    'RESOURCE_EXHAUSTED',
    alone
      ? `the plugin is busy: this call's rows and results waiting in the plugin pass one client host's share, ${share}`
      : `the plugin is busy: calls from ${host} already hold close to their host's share, ${share}; try again shortly`,
  );
}

/**
 * What an open call's headers hold in the front: about three copies of them (the HTTP/2 text, its
 * base64, the decoded metadata), for as long as the call is open.
 */
export function heldHeaderBytes(metadata: { toJSON(): Record<string, readonly (string | Buffer)[]> } | undefined): number {
  if (metadata === undefined) return 0;
  let bytes = headerBytesOf.get(metadata);
  if (bytes !== undefined) return bytes;
  bytes = 0;
  // The first value of each header, as grpc-js's getMap() gives them; toJSON() because getMap() copies every binary value.
  const headers = metadata.toJSON();
  for (const key in headers) {
    const value = headers[key]?.[0];
    if (value !== undefined) bytes += key.length + (typeof value === 'string' ? value.length : value.byteLength);
  }
  bytes *= 3;
  headerBytesOf.set(metadata, bytes);
  return bytes;
}

/**
 * Each call's headers are measured twice, by the connection's count (src/grpc/admission.ts) and by
 * the call's account: the second time reads this. Nothing changes a call's metadata in between.
 */
const headerBytesOf = new WeakMap<object, number>();
