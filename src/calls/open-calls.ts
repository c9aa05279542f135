/**
 * The bound on calls open at once in the front, every EvaluateScript and ExecuteFunction call from
 * its handler's start to its stream's end, whatever its kind: a sandbox process keeps the spec of
 * each call it saw and refuses more than MAX_OPEN_CALLS (src/contract/channel.ts), so the front never
 * admits more than that many. Counted at the call's start, not at its first task: calls without
 * parameters and aggregations send no task before the client half-closes, and 4,401 of them were in
 * flight while the bound said 4,096. One client host may hold at most SSE_HOST_SHARE_PERCENT of the
 * slots (src/calls/host-shares.ts): 4,096 calls left open by one address refused every other host.
 */
import { PluginError } from '../contract/errors';
import { openCallsError } from '../sandboxes/pool';
import { HostShares, type HostUse, shareOf } from './host-shares';

export class OpenCallSlots {
  private open = 0;
  private readonly hosts = new HostShares();
  private readonly maxHostCalls: number;

  constructor(
    readonly maxCalls: number,
    readonly hostSharePercent = 100,
    /** Told of each refusal (sse_busy_refusals_total). */
    private readonly onRefused: () => void = () => undefined,
  ) {
    this.maxHostCalls = shareOf(maxCalls, hostSharePercent);
  }

  /** Calls open now. */
  get size(): number {
    return this.open;
  }

  /** Calls of one client host open now. */
  callsOf(host: string): number {
    return this.hosts.usedBy(host);
  }

  /** Takes a slot for a call of `host`, or throws the busy error. */
  admit(host: string): OpenCallSlot {
    const refusal = this.refusal(host);
    if (refusal !== undefined) {
      this.onRefused();
      throw refusal;
    }
    this.open++;
    const use = this.hosts.join(host);
    use.used++;
    return new OpenCallSlot(this, use);
  }

  /** @internal by OpenCallSlot only. */
  give(use: HostUse): void {
    this.open--;
    use.used--;
    this.hosts.leave(use);
  }

  private refusal(host: string): PluginError | undefined {
    if (this.hosts.usedBy(host) >= this.maxHostCalls && this.maxHostCalls < this.maxCalls)
      return new PluginError(
        'RESOURCE_EXHAUSTED',
        `the plugin is busy: calls from ${host} hold ${this.maxHostCalls} of the ${this.maxCalls} calls it keeps open, their host's share (SSE_HOST_SHARE_PERCENT=${this.hostSharePercent}); try again shortly`,
      );
    if (this.open >= this.maxCalls) return openCallsError(this.maxCalls);
    return undefined;
  }
}

/** One call's slot; an object, not a closure, kept by its account (src/calls/held-bytes.ts). */
export class OpenCallSlot {
  private released = false;

  constructor(
    private readonly slots: OpenCallSlots,
    private readonly use: HostUse,
  ) {}

  /** Gives the slot back; once is enough. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.slots.give(this.use);
  }
}
