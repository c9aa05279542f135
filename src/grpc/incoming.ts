/**
 * Request messages are counted in SSE_MAX_HELD_MB from the moment grpc-js starts receiving them, not
 * only once a handler has them. grpc-js buffers a message until its last byte arrives, up to
 * SSE_MAX_MESSAGE_BYTES, and keeps finished ones until the handler reads them. A client that declared
 * 16 MiB messages on hundreds of streams and never finished them grew the front by 15 MB a stream
 * (5.2 GB for 400) while the budget showed 6 MB.
 *
 * A server interceptor wraps each call's StreamDecoder: when a message's 5-byte length prefix arrives,
 * its declared size is held in the call's own account (a call that would pass the budget gets
 * RESOURCE_EXHAUSTED "busy" at once, before the body is buffered); the hold is given back when the
 * handler takes the message ('data' on the call's stream: src/calls/evaluate-script.ts, whose pipeline
 * counts it from then on) or when the call's stream closes. GetCapabilities carries an empty message:
 * its receive limit is lowered to a few bytes.
 *
 * This reaches grpc-js 1.14 internals (the call's `decoder`, its read state, and the handler stream's
 * `call`), as src/grpc/health.ts does; test/limits/incoming.test.ts fails if they change.
 */
import type * as grpc from '@grpc/grpc-js';

import type { HeldAccount, HeldBytes } from '../calls/held-bytes';
import { lowerReceiveLimit } from './health';

const GET_CAPABILITIES_PATH = '/qlik.sse.Connector/GetCapabilities';
/** GetCapabilities takes an Empty message: anything longer is not Qlik's. */
const MAX_CAPABILITIES_REQUEST_BYTES = 64;

interface Decoder {
  write(data: Buffer): Buffer[];
  readonly readMessageSize: number;
  readonly readMessageRemaining: number;
}

interface BaseCall {
  readonly decoder?: Partial<Decoder>;
  readonly stream?: { once(event: 'close', listener: () => void): unknown };
}

/** The held bytes of one call's request messages, from their length prefix until the handler takes them. */
export class IncomingMessages {
  /** Declared sizes of messages started and not yet taken, oldest first. */
  private readonly held: number[] = [];
  /** The message being received is already in `held` (its prefix came in an earlier chunk). */
  private partial = false;

  constructor(private readonly account: HeldAccount) {}

  /** One decoder write: `finished` messages came out of it; `receiving` is the size of one begun and not finished. */
  received(finished: readonly Buffer[], receiving: number | undefined): void {
    for (const message of finished) {
      if (this.partial) this.partial = false;
      else this.hold(message.length);
    }
    if (receiving !== undefined && !this.partial) {
      this.hold(receiving);
      this.partial = true;
    }
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
    this.account.hold(bytes);
    this.held.push(bytes);
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
    const incoming = new IncomingMessages(held.open());
    byCall.set(call, incoming);
    base.stream.once('close', () => incoming.close());
    const write = decoder.write;
    decoder.write = function (this: Decoder, data: Buffer): Buffer[] {
      const finished = write.call(this, data);
      incoming.received(finished, this.readMessageRemaining > 0 ? this.readMessageSize : undefined);
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
