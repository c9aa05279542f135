/**
 * Ends a call whose client takes none of its replies for SSE_UNREAD_REPLY_TIMEOUT_MS. A reply handed
 * to gRPC stays counted in SSE_MAX_HELD_MB until HTTP/2 flow control lets it out, and nothing else
 * limited how long that may take: 257 calls whose client paused its streams held 512 MB for as long
 * as the connection lived, with no traffic at all. The mirror of the stall on the request side
 * (SSE_HANDSHAKE_TIMEOUT_MS in src/grpc/incoming.ts): the clock runs only while a reply waits, and
 * each reply the client takes starts it again: a reader is cut only when one reply message (at most
 * 4 MiB) takes it longer than the bound, under 140 KB/s at 30 s; Qlik reads them as they come.
 *
 * The status cannot reach a client that reads nothing (HTTP/2 sends trailers after the data), so
 * the stream is reset with ENHANCE_YOUR_CALM, which gRPC clients (grpc-js, Qlik's C-core) report as
 * RESOURCE_EXHAUSTED; the reset gives back the replies' bytes at once. The plugin's log says why.
 *
 * Like src/grpc/incoming.ts it reaches grpc-js 1.14 internals (the call's http2 `stream`, and
 * sendMessage on the prototype of its calls); test/limits/host-shares.test.ts fails if they change.
 */
import type * as grpc from '@grpc/grpc-js';

import { FailedLines } from '../calls/log-rate';
import type { Logger } from '../ops/log';

/** RST_STREAM ENHANCE_YOUR_CALM: gRPC clients map it to RESOURCE_EXHAUSTED. */
const NGHTTP2_ENHANCE_YOUR_CALM = 11;

interface Http2Stream {
  readonly closed: boolean;
  once(event: 'close', listener: () => void): unknown;
  close(code: number): void;
}

export function unreadReplyError(timeoutMs: number): string {
  return `the client took none of the call's replies for ${timeoutMs} ms (SSE_UNREAD_REPLY_TIMEOUT_MS): the call was reset (RESOURCE_EXHAUSTED); read replies as they come`;
}

const endedUnread = new WeakSet<object>();

/** True when the call of a handler's stream was reset for replies left unread (its log line says so). */
export function endedForUnreadReplies(handlerStream: object): boolean {
  const intercepted = (handlerStream as { call?: unknown }).call;
  return typeof intercepted === 'object' && intercepted !== null && endedUnread.has(intercepted);
}

/** One call's replies handed to gRPC and not yet taken by its client. */
interface Waiting {
  readonly call: grpc.ServerInterceptingCallInterface;
  readonly stream: Http2Stream;
  /** The plugin's sweep (one per server). */
  readonly sweep: UnreadSweep;
  replies: number;
  /** When the client last took a reply, or the first of those waiting was handed on (Date.now()). */
  sinceMs: number;
}

/**
 * The calls with replies waiting, checked by one sweep a few times per timeout instead of a timer per
 * call: a reply costs a Set insert and delete on its way (the common case is taken within microseconds).
 */
class UnreadSweep {
  private readonly waiting = new Set<Waiting>();
  private sweep: NodeJS.Timeout | undefined;
  private readonly lines = new FailedLines();

  constructor(
    private readonly timeoutMs: number,
    private readonly logger: Logger,
  ) {}

  add(entry: Waiting): void {
    this.waiting.add(entry);
    if (this.sweep === undefined) {
      this.sweep = setInterval(() => this.check(), Math.max(25, Math.min(1_000, this.timeoutMs / 4)));
      this.sweep.unref();
    }
  }

  delete(entry: Waiting): void {
    this.waiting.delete(entry);
  }

  private check(): void {
    const now = Date.now();
    for (const entry of this.waiting) {
      if (entry.stream.closed) this.waiting.delete(entry);
      else if (now - entry.sinceMs >= this.timeoutMs) this.reset(entry);
    }
    if (this.waiting.size === 0) {
      clearInterval(this.sweep);
      this.sweep = undefined;
    }
  }

  private reset(entry: Waiting): void {
    this.waiting.delete(entry);
    endedUnread.add(entry.call);
    const notLogged = this.lines.admit();
    if (notLogged !== undefined)
      this.logger.warn(
        { peer: entry.call.getPeer(), repliesWaiting: entry.replies, linesNotLogged: notLogged || undefined },
        unreadReplyError(this.timeoutMs),
      );
    entry.stream.close(NGHTTP2_ENHANCE_YOUR_CALM);
  }
}

/** What it uses of grpc-js's BaseServerInterceptingCall, whose prototype it wraps once. */
interface BaseCall {
  readonly stream?: Http2Stream;
  sendMessage(message: unknown, callback: () => void): void;
  /** Its watch, set by the interceptor: a data property, not a WeakMap entry (see endUnreadReplies). */
  [WATCH]?: Waiting;
}

/** The prototypes whose sendMessage is wrapped (grpc-js has one; a test process may load two). */
const wrapped = new WeakSet<object>();
const WATCH = Symbol('unread-replies-watch');

/**
 * Wraps grpc-js's sendMessage on the calls' prototype, once: a function assigned to each call's own
 * object would keep every call's objects alive through V8's young-generation collections (see
 * CountingDecoder in src/grpc/incoming.ts). Calls not watched pass straight through.
 */
function wrapSendMessage(prototype: BaseCall): void {
  if (wrapped.has(prototype)) return;
  wrapped.add(prototype);
  const send = prototype.sendMessage;
  prototype.sendMessage = function (this: BaseCall, message: unknown, callback: () => void): void {
    const entry = this[WATCH];
    if (entry === undefined) return send.call(this, message, callback);
    if (entry.replies++ === 0) {
      entry.sinceMs = Date.now();
      entry.sweep.add(entry);
    }
    send.call(this, message, () => {
      // Taken by the client: the clock starts again for the replies still waiting, or stops.
      if (--entry.replies === 0) entry.sweep.delete(entry);
      else entry.sinceMs = Date.now();
      callback();
    });
  };
}

export function endUnreadReplies(timeoutMs: number, logger: Logger): grpc.ServerInterceptor {
  const sweep = new UnreadSweep(timeoutMs, logger);
  return (_method, call) => {
    const base = call as unknown as BaseCall;
    const stream = base.stream;
    if (stream === undefined || typeof base.sendMessage !== 'function')
      throw new Error('grpc-js internals changed: the call has no http2 stream; re-check src/grpc/unread-replies.ts');
    wrapSendMessage(Object.getPrototypeOf(base) as BaseCall);
    // A closed stream's entry leaves the sweep at its next check: no listener added per call. Kept on
    // the call itself: a WeakMap entry whose value points back at its call kept every call's objects
    // through V8's young-generation collections (test/ops/front-garbage.test.ts: 1.9 MB a scavenge).
    base[WATCH] = { call, stream, sweep, replies: 0, sinceMs: 0 };
    return call as grpc.ServerInterceptingCall;
  };
}
