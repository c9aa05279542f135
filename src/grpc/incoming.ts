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
 * open is reset, and a connection carries at most MAX_CONCURRENT_STREAMS calls, fewer when its host holds many connections (src/grpc/connection-table.ts). GetCapabilities carries an empty message:
 * its receive limit is lowered to a few bytes.
 *
 * An open stream costs the front more than its messages and headers (its HTTP/2 and grpc-js objects):
 * 16,000 silent GetCapabilities streams held steadily took the front from 76 to 230 MB resident, about
 * 10 KB each, and twice that while they were re-made every 10 s (256 connections x 250 streams swung it
 * between 1.0 and 2.0 GB with SSE_MAX_HELD_MB showing nothing). Each stream holds STREAM_HELD_BYTES in
 * its call's account from its start (holdStreamCost), so the streams of one host stop at its share.
 *
 * This reaches grpc-js 1.14 internals (the call's `decoder`, its read state, and the handler stream's
 * `call`), as src/grpc/health.ts does; test/limits/incoming.test.ts fails if they change.
 */
import type * as grpc from '@grpc/grpc-js';
import { ServerInterceptingCall, status } from '@grpc/grpc-js';

import type { HeldAccount, HeldBytes } from '../calls/held-bytes';
import { HEALTH_PATH_PREFIX, lowerReceiveLimit } from './health';

const NGHTTP2_NO_ERROR = 0;
/** grpc-js's StreamDecoder read state between messages. */
const NO_DATA = 0;
/** How long a client has to finish its side once the response is complete. */
const RESET_AFTER_RESPONSE_MS = 1_000;
const GET_CAPABILITIES_PATH = '/qlik.sse.Connector/GetCapabilities';
/** What an open stream holds in the budget besides its messages: about its measured cost, garbage included. */
export const STREAM_HELD_BYTES = 16 * 1024;
/** GetCapabilities takes an Empty message: anything longer is not Qlik's. */
const MAX_CAPABILITIES_REQUEST_BYTES = 64;

interface Decoder {
  write(data: Buffer): Buffer[];
  readonly readMessageSize: number;
  readonly readMessageRemaining: number;
  /** 0 between messages; 1 inside a length prefix; 2 inside a message. */
  readonly readState: number;
  /** The pieces of the message being received, as grpc-js keeps them until its last byte. */
  readPartialMessage: Buffer[];
}

/** Pieces smaller than this are copied together (see PieceJoiner). */
const SMALL_PIECE_BYTES = 1024;
/** The first joined buffer holds at least one small piece; each next one doubles, up to MAX_JOINED_BYTES. */
const FIRST_JOINED_BYTES = SMALL_PIECE_BYTES;
const MAX_JOINED_BYTES = 64 * 1024;
/**
 * A message may arrive in this many pieces of less than SMALL_PIECE_BYTES on average before the call
 * is refused: gRPC clients (Qlik's C-core, grpc-js) send a message in frames as large as the flow
 * control window allows (16 KiB), so only a flood makes thousands of tiny ones.
 */
export const MAX_SMALL_PIECES = 4096;

/**
 * Keeps the pieces of one message compact. grpc-js keeps every DATA frame's bytes as its own Buffer
 * until the message is complete: a client that sent a 16 MiB message one byte a frame made 110 bytes
 * of heap per byte (16 connections took the front from 72 MB to 4.8 GB and ended it, while the budget
 * saw the bytes only). Small pieces are copied into joined buffers that double in size (at most twice
 * the bytes they hold), and a message that keeps coming in tiny pieces is refused: each costs the
 * event loop a callback whatever its size.
 */
export class PieceJoiner {
  private joined: Buffer | undefined;
  private joinedBytes = 0;
  /** The view of `joined` that stands in the pieces: the message's last piece while it is. */
  private view: Buffer | undefined;
  /** The array grpc-js started for the current message: a new one means a new message. */
  private pieces: Buffer[] | undefined;
  private smallPieces = 0;
  private smallBytes = 0;

  /** After each decoder write: joins the piece it added to the message still being received. */
  compact(decoder: Decoder): void {
    const pieces = decoder.readPartialMessage;
    if (decoder.readMessageRemaining === 0 || pieces.length === 0) return;
    if (pieces !== this.pieces) {
      this.pieces = pieces;
      this.joined = undefined;
      this.view = undefined;
      this.smallPieces = 0;
      this.smallBytes = 0;
    }
    const last = pieces[pieces.length - 1] as Buffer;
    if (last.length >= SMALL_PIECE_BYTES) {
      this.joined = undefined;
      this.view = undefined;
      return;
    }
    this.smallPieces++;
    this.smallBytes += last.length;
    if (this.smallPieces > MAX_SMALL_PIECES && this.smallBytes / this.smallPieces < SMALL_PIECE_BYTES)
      throw new Error(
        `the request message arrived in more than ${MAX_SMALL_PIECES} pieces of ${Math.round(this.smallBytes / this.smallPieces)} bytes on average: gRPC clients send messages in whole frames`,
      );
    const previous = pieces.length >= 2 ? pieces[pieces.length - 2] : undefined;
    if (
      this.joined !== undefined &&
      previous !== undefined &&
      previous === this.view &&
      this.joinedBytes + last.length <= this.joined.length
    ) {
      last.copy(this.joined, this.joinedBytes);
      this.joinedBytes += last.length;
      pieces.pop();
      this.view = this.joined.subarray(0, this.joinedBytes);
      pieces[pieces.length - 1] = this.view;
      return;
    }
    const size = Math.min(MAX_JOINED_BYTES, Math.max(FIRST_JOINED_BYTES, (this.joined?.length ?? 0) * 2));
    this.joined = Buffer.allocUnsafeSlow(size);
    last.copy(this.joined, 0);
    this.joinedBytes = last.length;
    this.view = this.joined.subarray(0, this.joinedBytes);
    pieces[pieces.length - 1] = this.view;
  }
}

interface Http2Stream {
  readonly closed: boolean;
  readonly readableEnded: boolean;
  isPaused(): boolean;
  once(event: 'close' | 'finish' | 'end', listener: () => void): unknown;
  close(code: number): void;
}

/**
 * Ends a call whose client keeps its request open and sends nothing for stallMs while the plugin
 * would read (its stream is not paused by the plugin): such calls held connections and their slots
 * for as long as the client liked (300 addresses, one call each, locked Qlik out). A call whose client
 * has half-closed is waiting for the plugin, never for itself, and is left alone. Returns what marks
 * the client's activity.
 */
function watchStall(call: grpc.ServerInterceptingCall, stream: Http2Stream, stallMs: number): () => void {
  const timer = setTimeout(function check() {
    if (stream.closed || stream.readableEnded) return;
    // Paused: the plugin is not reading (its queue is full), so the client cannot send; not its stall.
    if (stream.isPaused()) return void timer.refresh();
    call.sendStatus({
      code: status.DEADLINE_EXCEEDED,
      details: `the client sent nothing for ${stallMs} ms with its request still open (SSE_HANDSHAKE_TIMEOUT_MS): send the rows and half-close`,
    });
  }, stallMs);
  timer.unref();
  const stop = (): void => clearTimeout(timer);
  stream.once('end', stop);
  stream.once('close', stop);
  return () => timer.refresh();
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
  /** The last bytes received left a message (or its length prefix) unfinished. */
  private inMessage = false;

  /**
   * maxDecompressedBytes: a compressed message (its flag byte is 1) may grow to this when grpc-js
   * inflates it, before the handler has it: 30 KB of gzip made 15 MB of rows.
   */
  constructor(
    /** The call's one account: the handler counts what it keeps in it too (src/calls/evaluate-script.ts). */
    readonly account: HeldAccount,
    private readonly maxDecompressedBytes: number,
    /**
     * False for health calls: a full budget must not make the plugin look dead to its liveness probe
     * (a restart would end every call in flight). Their messages are a few bytes (boundHealthRequests),
     * a connection holds 4 Watch calls, and a host's streams at once are shared (connection-table.ts).
     */
    readonly counted = true,
  ) {}

  /**
   * One decoder write: `finished` messages came out of it; `receivedBytes` of one more have arrived;
   * `inMessage`: the write ended inside a message or its prefix.
   */
  received(finished: readonly Buffer[], receivedBytes: number, inMessage = receivedBytes > 0): void {
    this.inMessage = inMessage;
    for (const message of finished) {
      const bytes = message[0] === 1 ? Math.max(message.length, this.maxDecompressedBytes) : message.length;
      this.hold(bytes - this.partialBytes);
      this.partialBytes = 0;
      this.held.push(bytes);
    }
    this.hold(receivedBytes - this.partialBytes);
    this.partialBytes = Math.max(this.partialBytes, receivedBytes);
  }

  /**
   * Whether the request ended inside a message: grpc-js drops such a message unread and ends the call's
   * input as if it were whole (a pass answered OK with the rows before it). Asked at the half-close.
   */
  endedInsideMessage(): boolean {
    return this.inMessage;
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
    if (bytes > 0 && this.counted) this.account.hold(bytes);
  }
}

const byCall = new WeakMap<object, IncomingMessages>();

/**
 * stallMs: how long a client may keep its request open sending nothing (SSE_HANDSHAKE_TIMEOUT_MS);
 * hostOfPeer: the client host whose share the call's account counts in (src/grpc/client-hosts.ts).
 */
export function countIncomingMessages(
  held: HeldBytes,
  stallMs: number,
  hostOfPeer: (peer: string) => string = () => '',
): grpc.ServerInterceptor {
  return (method, call) => {
    if (method.path === GET_CAPABILITIES_PATH) lowerReceiveLimit(call, MAX_CAPABILITIES_REQUEST_BYTES);
    const base = call as unknown as BaseCall;
    const decoder = base.decoder;
    if (decoder === undefined || typeof decoder.write !== 'function' || base.stream === undefined)
      throw new Error('grpc-js internals changed: the call has no StreamDecoder; re-check src/grpc/incoming.ts');
    const stream = base.stream;
    const incoming = new IncomingMessages(
      held.open(hostOfPeer(call.getPeer())),
      base.maxReceiveMessageSize ?? 0,
      !method.path.startsWith(HEALTH_PATH_PREFIX),
    );
    byCall.set(call, incoming);
    stream.once('close', () => incoming.close());
    // The response is complete but the client has not finished its request (a refused call, or one
    // that keeps sending): RST_STREAM NO_ERROR, as HTTP/2 allows (RFC 9113, 8.1), so the stream and its
    // headers are not kept for as long as the client likes. Not at once: the trailers must reach the
    // client first (a reset ahead of them reads as "ended without gRPC status").
    stream.once('finish', () => {
      // The client half-closed already: the stream closes once the trailers are out, no timer needed.
      if (stream.readableEnded) return;
      const timer = setTimeout(() => {
        if (!stream.closed) stream.close(NGHTTP2_NO_ERROR);
      }, RESET_AFTER_RESPONSE_MS);
      timer.unref();
      stream.once('close', () => clearTimeout(timer));
    });
    const active = watchStall(call as grpc.ServerInterceptingCall, stream, stallMs);
    (base as { decoder: CountingDecoder }).decoder = new CountingDecoder(decoder as Decoder, incoming, active);
    return call as grpc.ServerInterceptingCall;
  };
}

/**
 * Holds STREAM_HELD_BYTES in each call's account (opened by countIncomingMessages), or refuses the call
 * RESOURCE_EXHAUSTED busy when its host's share or the budget is full. Last in the interceptor list:
 * it may return a call of its own, and the ones before it need grpc-js's (a call another one already
 * refused is passed on).
 */
export function holdStreamCost(): grpc.ServerInterceptor {
  return (_method, call) => {
    const incoming = byCall.get(call);
    if (incoming === undefined || !incoming.counted) return call as grpc.ServerInterceptingCall;
    try {
      incoming.account.hold(STREAM_HELD_BYTES);
      return call as grpc.ServerInterceptingCall;
    } catch (error) {
      return refusedBusy(call, error instanceof Error ? error.message : String(error));
    }
  };
}

/**
 * A call an interceptor refuses RESOURCE_EXHAUSTED before it began: grpc-js's documented way, a status
 * instead of the metadata. Interceptors after the one that returns it get this call, not grpc-js's.
 */
export function refusedBusy(call: grpc.ServerInterceptingCallInterface, details: string): grpc.ServerInterceptingCall {
  return new ServerInterceptingCall(call, {
    start: (next) => next({ onReceiveMetadata: () => call.sendStatus({ code: status.RESOURCE_EXHAUSTED, details }) }),
  });
}

/**
 * Stands in grpc-js's StreamDecoder on the call (grpc-js only calls its write): each write is
 * counted and its pieces joined. Not a function assigned to the decoder's own `write`: adding a
 * function-valued property to each call's decoder kept every call's objects alive through V8's
 * young-generation collections until the next full one (a LOAD of one-row calls: 2.5-3.8 MB
 * surviving each scavenge, 6-15 ms pauses; with this class, 0.1-0.5 MB and 1-4 ms).
 */
class CountingDecoder {
  private readonly joiner = new PieceJoiner();

  constructor(
    private readonly decoder: Decoder,
    private readonly incoming: IncomingMessages,
    /** Marks the client's activity (watchStall). */
    private readonly active: () => void,
  ) {}

  write(data: Buffer): Buffer[] {
    this.active();
    const decoder = this.decoder;
    const finished = decoder.write(data);
    this.joiner.compact(decoder);
    const receivedBytes = decoder.readMessageRemaining > 0 ? decoder.readMessageSize - decoder.readMessageRemaining : 0;
    this.incoming.received(finished, receivedBytes, decoder.readState !== NO_DATA);
    return finished;
  }
}

/** The counter of a handler's call (grpc-js keeps the intercepted call as the handler stream's `call`). */
export function incomingOf(handlerStream: object): IncomingMessages | undefined {
  const intercepted = (handlerStream as { call?: unknown }).call;
  return typeof intercepted === 'object' && intercepted !== null ? byCall.get(intercepted) : undefined;
}
