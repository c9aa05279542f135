/**
 * A stream its client opened and reset before the front got to it costs the front only Node's own
 * bookkeeping, never a gRPC call's setup. grpc-js sets up a call (interceptors, handler, metadata,
 * often a reply) for every stream Node announces, at 150-400 µs of the front's one thread, and Node
 * announces a stream as soon as its HEADERS frame is read, before it reads the RST_STREAM or the end
 * of the connection that the client sent right behind it. A client that queues hundreds of streams a
 * session and then drops its sessions makes its HTTP/2 stack flush every queued stream and reset them
 * at once: 256 sessions made the front set up ~38,000 calls nobody could answer, 4-6 s of its thread
 * during which every other client waited.
 *
 * So grpc-js's stream handler is handed the streams that arrived in one turn of the event loop at the
 * end of that turn (setImmediate: after every socket that was ready has been read), and only those
 * still open. Measured on Node 20: of 38,400 such streams, 38,144 were closed by then. A live stream
 * waits for the rest of the turn that read it, which is what it waited for anyway before grpc-js
 * could answer it. The skipped ones are reported as rapid resets (connection-table.ts), and only they
 * are: a call that was handled and then cancelled (Qlik cancels a chart's calls when a selection
 * changes) never counts against its connection.
 */
import type http2 from 'node:http2';

type StreamListener = (this: unknown, stream: http2.ServerHttp2Stream, ...rest: unknown[]) => void;

/** Until grpc-js has the stream: an 'error' with no listener would end the process. */
const ignore = (): void => undefined;

/**
 * Call once, after grpc-js added its 'stream' listener to the http2 server (createConnectionInjector),
 * and before any connection is injected.
 */
export function handOverLiveStreams(
  h2: http2.Http2Server,
  /** A stream closed before it was handed over: its session is the one it came on. */
  onClosedBeforeHandled: (session: http2.ServerHttp2Session) => void,
): void {
  const handlers = h2.listeners('stream') as StreamListener[];
  if (handlers.length === 0)
    throw new Error('grpc-js internals changed: no stream listener on its http2 server; re-check src/grpc/stream-handover.ts');
  h2.removeAllListeners('stream');
  let arrived: { stream: http2.ServerHttp2Stream; session: http2.ServerHttp2Session; rest: unknown[] }[] = [];
  const handOver = (): void => {
    const turn = arrived;
    arrived = [];
    for (const { stream, session, rest } of turn) {
      stream.off('error', ignore);
      if (stream.closed || stream.destroyed) {
        onClosedBeforeHandled(session);
        continue;
      }
      // A client that half-closed without a message (a call with no rows) has had its stream's 'end'
      // emitted while it waited here; grpc-js listens for it to see the request complete.
      const endedWhileWaiting = stream.readableEnded;
      for (const handler of handlers) handler.call(h2, stream, ...rest);
      if (endedWhileWaiting) stream.emit('end');
    }
  };
  h2.on('stream', (stream: http2.ServerHttp2Stream, ...rest: unknown[]) => {
    stream.on('error', ignore);
    if (arrived.length === 0) setImmediate(handOver);
    arrived.push({ stream, session: stream.session as http2.ServerHttp2Session, rest });
  });
}
