/**
 * Keeps over-large request headers from hanging a Qlik engine. The script travels in a base64 header;
 * Node's HTTP/2 layer (nghttp2) drops any single header field whose HPACK form passes 64 KiB (a script
 * of about 60.7 KB) with a connection error that never reaches JavaScript, and leaves the socket open:
 * gRPC C-core clients, such as Qlik's, then wait for their deadline (measured: experiments/headers).
 *
 * 1. Advertise SETTINGS_MAX_HEADER_LIST_SIZE: header blocks between the largest allowed script and
 *    that hard limit are reset at once for that call only (RST_STREAM ENHANCE_YOUR_CALM →
 *    RESOURCE_EXHAUSTED at the client).
 * 2. Past the hard limit, detect a connection whose HEADERS nghttp2 accepted but never delivered, and
 *    whose peer then does not answer a ping within a second: destroy it, so the client fails fast
 *    (UNAVAILABLE) instead of waiting for its deadline.
 *
 * grpc-js 1.14 has no option for either, so this reaches its private `http2Servers` map (pinned
 * version; re-check on upgrade).
 */
import type * as http2 from 'node:http2';

import type * as grpc from '@grpc/grpc-js';

/** Above base64(49152-byte script) plus the other headers; below nghttp2's ~81,000-character limit. */
export const MAX_HEADER_LIST_BYTES = 72 * 1024;
const TICK_MS = 250;
const PING_TIMEOUT_MS = 1_000;

type AnyHttp2Server = http2.Http2Server | http2.Http2SecureServer;

/** Call once the server's http2 servers exist: after createConnectionInjector (src/grpc/server.ts). */
export function guardHeaderLimits(server: grpc.Server): void {
  const servers = (server as unknown as { http2Servers?: Map<AnyHttp2Server, unknown> }).http2Servers;
  if (!(servers instanceof Map))
    throw new Error('grpc-js internals changed: Server.http2Servers is missing; re-check src/grpc/header-guard.ts');
  for (const h2 of servers.keys()) {
    h2.updateSettings({ maxHeaderListSize: MAX_HEADER_LIST_BYTES });
    h2.on('session', watchSession);
  }
}

function watchSession(session: http2.ServerHttp2Session): void {
  let lastDelivered = 0;
  let previousProcessed = 0;
  let probing = false;
  session.on('stream', (stream: http2.ServerHttp2Stream) => {
    lastDelivered = Math.max(lastDelivered, stream.id ?? 0);
  });
  const timer = setInterval(() => {
    if (session.destroyed || session.closed) return clearInterval(timer);
    const processed = session.state.lastProcStreamID ?? 0;
    const frozen = processed === previousProcessed;
    previousProcessed = processed;
    // A stream nghttp2 accepted has not reached JavaScript for a whole tick: slow, or a dead connection?
    if (probing || processed <= lastDelivered || !frozen) return;
    probing = true;
    const deadline = setTimeout(() => session.destroy(), PING_TIMEOUT_MS);
    try {
      session.ping((error) => {
        clearTimeout(deadline);
        probing = false;
        if (error) session.destroy();
      });
    } catch {
      clearTimeout(deadline);
      session.destroy();
    }
  }, TICK_MS);
  timer.unref();
  session.once('close', () => clearInterval(timer));
}
