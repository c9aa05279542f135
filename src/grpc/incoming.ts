/**
 * Request messages are counted in SSE_MAX_HELD_MB from the moment grpc-js starts receiving them, not
 * only once a handler has them. grpc-js buffers a message until its last byte arrives, up to
 * SSE_MAX_MESSAGE_BYTES, and keeps finished ones until the handler reads them. A client that declared
 * 16 MiB messages on hundreds of streams and never finished them grew the front by 15 MB a stream
 * (5.2 GB for 400) while the budget showed 6 MB.
 *
 * A server interceptor wraps each call's StreamDecoder: the bytes of a message are held in the call's
 * own account as they arrive (a call that would pass the budget gets RESOURCE_EXHAUSTED "busy"), and a
 * compressed message at the size grpc-js may inflate it to, SSE_MAX_MESSAGE_BYTES (30 KB of gzip made
 * 15 MB of rows). The hold is given back when the handler takes the message ('data' on the call's
 * stream: src/calls/evaluate-script.ts, whose pipeline counts it from then on) or when the stream
 * closes. Bytes received, not the size a prefix declares: 4,000 streams declaring 16 MiB each and
 * sending 1 KB filled the budget with 4 MB. Once the response is complete, a stream the client keeps
 * open is reset, and a connection carries at most MAX_CONCURRENT_STREAMS calls (src/grpc/server.ts). GetCapabilities carries an empty message:
 * its receive limit is lowered to a few bytes.
 *
 * This reaches grpc-js 1.14 internals (the call's `decoder`, its read state, and the handler stream's
 * `call`), as src/grpc/health.ts does; test/limits/incoming.test.ts fails if they change.
 */
import type * as grpc from '@grpc/grpc-js';

import type { HeldAccount, HeldBytes } from '../calls/held-bytes';
import { lowerReceiveLimit } from './health';

const NGHTTP2_NO_ERROR = 0;
/** How long a client has to finish its side once the response is complete. */
const RESET_AFTER_RESPONSE_MS = 1_000;
const GET_CAPABILITIES_PATH = '/qlik.sse.Connector/GetCapabilities';
/** GetCapabilities takes an Empty message: anything longer is not Qlik's. */
const MAX_CAPABILITIES_REQUEST_BYTES = 64;

interface Decoder {
  write(data: Buffer): Buffer[];
  readonly readMessageSize: number;
  readonly readMessageRemaining: number;
}

interface Http2Stream {
  readonly closed: boolean;
  once(event: 'close' | 'finish', listener: () => void): unknown;
  close(code: number): void;
}

interface BaseCall {
  readonly decoder?: Partial<Decoder>;
  readonly stream?: Http2Stream;
  readonly maxReceiveMessageSize?: number;
}

/** The held bytes of one call's request messages, from their first byte until the handler takes them. */
export class IncomingMessages {
  /** What each finished message not yet taken holds, oldest first. */
  private readonly held: number[] = [];
  /** What the message being received holds so far: its bytes received. */
  private partialBytes = 0;

  /**
   * maxDecompressedBytes: a compressed message (its flag byte is 1) may grow to this when grpc-js
   * inflates it, before the handler has it: 30 KB of gzip made 15 MB of rows.
   */
  constructor(
    /** The call's one account: the handler counts what it keeps in it too (src/calls/evaluate-script.ts). */
    readonly account: HeldAccount,
    private readonly maxDecompressedBytes: number,
  ) {}

  /** One decoder write: `finished` messages came out of it; `receivedBytes` of one more have arrived. */
  received(finished: readonly Buffer[], receivedBytes: number): void {
    for (const message of finished) {
      const bytes = message[0] === 1 ? Math.max(message.length, this.maxDecompressedBytes) : message.length;
      this.hold(bytes - this.partialBytes);
      this.partialBytes = 0;
      this.held.push(bytes);
    }
    this.hold(receivedBytes - this.partialBytes);
    this.partialBytes = Math.max(this.partialBytes, receivedBytes);
  }

  /** The handler took the oldest message: its own account counts it from now on. */
  taken(): void {
    const bytes = this.held.shift();
    if (bytes !== undefined) this.account.release(bytes);
  }

  close(): void {
    this.held.length = 0;
    this.account.close();
  }

  /** Throws the busy error (grpc-js answers RESOURCE_EXHAUSTED with its message) when it does not fit. */
  private hold(bytes: number): void {
    if (bytes > 0) this.account.hold(bytes);
  }
}

const byCall = new WeakMap<object, IncomingMessages>();

export function countIncomingMessages(held: HeldBytes): grpc.ServerInterceptor {
  return (method, call) => {
    if (method.path === GET_CAPABILITIES_PATH) lowerReceiveLimit(call, MAX_CAPABILITIES_REQUEST_BYTES);
    const base = call as unknown as BaseCall;
    const decoder = base.decoder;
    if (decoder === undefined || typeof decoder.write !== 'function' || base.stream === undefined)
      throw new Error('grpc-js internals changed: the call has no StreamDecoder; re-check src/grpc/incoming.ts');
    const stream = base.stream;
    const incoming = new IncomingMessages(held.open(), base.maxReceiveMessageSize ?? 0);
    byCall.set(call, incoming);
    stream.once('close', () => incoming.close());
    // The response is complete but the client has not finished its request (a refused call, or one
    // that keeps sending): RST_STREAM NO_ERROR, as HTTP/2 allows (RFC 9113, 8.1), so the stream and its
    // headers are not kept for as long as the client likes. Not at once: the trailers must reach the
    // client first (a reset ahead of them reads as "ended without gRPC status").
    stream.once('finish', () => {
      const timer = setTimeout(() => {
        if (!stream.closed) stream.close(NGHTTP2_NO_ERROR);
      }, RESET_AFTER_RESPONSE_MS);
      timer.unref();
      stream.once('close', () => clearTimeout(timer));
    });
    const write = decoder.write;
    decoder.write = function (this: Decoder, data: Buffer): Buffer[] {
      const finished = write.call(this, data);
      incoming.received(finished, this.readMessageRemaining > 0 ? this.readMessageSize - this.readMessageRemaining : 0);
      return finished;
    };
    return call as grpc.ServerInterceptingCall;
  };
}

/** The counter of a handler's call (grpc-js keeps the intercepted call as the handler stream's `call`). */
export function incomingOf(handlerStream: object): IncomingMessages | undefined {
  const intercepted = (handlerStream as { call?: unknown }).call;
  return typeof intercepted === 'object' && intercepted !== null ? byCall.get(intercepted) : undefined;
}
