/**
 * A script call whose replies the test counts without decoding them (a 200,000-row table decoded by
 * protobufjs would block this process, which is also the front's, and blur what the front does), or
 * never reads at all: the client Qlik would be if it stopped taking replies.
 */
import http2 from 'node:http2';
import net from 'node:net';

import type * as grpc from '@grpc/grpc-js';

import { type Dual, encodeBundle, type ScriptCallOptions, scriptMetadata } from './qlik-client';

export interface RawResult {
  readonly code: grpc.status;
  readonly details: string;
  readonly replyBytes: number;
  readonly replies: number;
  readonly initialMetadata: grpc.Metadata | undefined;
  /** The reply messages themselves, when asked for (keep), to decode once the measuring is over. */
  readonly messages: Buffer[];
}

export interface RawCall {
  readonly call: grpc.ClientDuplexStream<Buffer, Buffer>;
  readonly result: Promise<RawResult>;
  send(rows: readonly (readonly Dual[])[]): boolean;
}

const raw = (value: Buffer): Buffer => value;

/** Opens a call; read: false never takes a reply (the stream is never made to flow). */
export function openRawCall(client: grpc.Client, options: ScriptCallOptions, read = true, keep = false): RawCall {
  const call = client.makeBidiStreamRequest('/qlik.sse.Connector/EvaluateScript', raw, raw, scriptMetadata(options), {
    deadline: Date.now() + 60_000,
  });
  let replyBytes = 0;
  let replies = 0;
  let initialMetadata: grpc.Metadata | undefined;
  const messages: Buffer[] = [];
  const result = new Promise<RawResult>((resolve) => {
    call.on('metadata', (md: grpc.Metadata) => (initialMetadata = md));
    if (read) {
      call.on('data', (message: Buffer) => {
        replies++;
        replyBytes += message.length;
        if (keep) messages.push(message);
      });
    }
    call.on('status', (status: grpc.StatusObject) =>
      resolve({ code: status.code, details: status.details, replyBytes, replies, initialMetadata, messages }),
    );
    call.on('error', () => undefined);
  });
  return { call, result, send: (rows) => call.write(encodeBundle(rows)) };
}

/** Sends every bundle, half-closes, and resolves with what came back. */
export function rawCall(
  client: grpc.Client,
  options: ScriptCallOptions,
  bundles: readonly (readonly (readonly Dual[])[])[],
  keep = false,
): Promise<RawResult> {
  const open = openRawCall(client, options, true, keep);
  for (const rows of bundles) open.send(rows);
  open.call.end();
  return open.result;
}

/** An EvaluateScript stream on a bare HTTP/2 session, with Qlik's headers; its errors are the test's to read from its status. */
export function openScriptStream(session: http2.ClientHttp2Session, options: ScriptCallOptions): http2.ClientHttp2Stream {
  const stream = session.request({
    ...scriptMetadata(options).toHttp2Headers(),
    ':method': 'POST',
    ':path': '/qlik.sse.Connector/EvaluateScript',
    'content-type': 'application/grpc',
    te: 'trailers',
  });
  stream.on('error', () => undefined);
  return stream;
}

export interface StalledCall {
  send(rows: readonly (readonly Dual[])[]): void;
  end(): void;
  cancel(): void;
  /** Resolves when the stream is closed, whichever side closed it. */
  readonly closed: Promise<void>;
  /** The response headers: with a grpc-status when the plugin refused the call before any reply. */
  readonly response: Promise<http2.IncomingHttpHeaders>;
  /** The RST_STREAM code the stream closed with (0 when it ended normally), once closed. */
  rstCode(): number | undefined;
}

/**
 * A call from a client that never reads: a bare HTTP/2 stream that is paused from the start, so Node
 * stops taking its data and HTTP/2 flow control holds the plugin's writes. (A grpc-js client keeps
 * reading from the connection into its own memory even when nobody reads the call: it cannot show this.)
 */
export function openStalledCall(address: string, options: ScriptCallOptions, localAddress?: string): StalledCall {
  const session = connectFrom(address, localAddress);
  session.on('error', () => undefined);
  const stream = openScriptStream(session, options);
  stream.pause();
  const closed = new Promise<void>((resolve) => stream.on('close', () => resolve()));
  const response = new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once('response', resolve));
  void closed.then(() => session.close());
  return {
    response,
    rstCode: () => stream.rstCode,
    send(rows) {
      const message = encodeBundle(rows);
      const frame = Buffer.alloc(5 + message.length);
      frame.writeUInt32BE(message.length, 1);
      message.copy(frame, 5);
      stream.write(frame);
    },
    end: () => stream.end(),
    cancel: () => stream.close(http2.constants.NGHTTP2_CANCEL),
    closed,
  };
}

/**
 * One script call over a bare HTTP/2 connection from `localAddress` (127.0.0.x: another loopback
 * "host" to the plugin, which grpc-js clients cannot choose): sends one bundle, half-closes, and
 * resolves with the grpc-status of the trailers.
 */
export function callFrom(
  port: number,
  localAddress: string,
  options: ScriptCallOptions,
  rows: readonly (readonly Dual[])[],
): Promise<{ readonly code: number; readonly details: string }> {
  const session = connectFrom(`127.0.0.1:${port}`, localAddress);
  const stream = openScriptStream(session, options);
  const message = encodeBundle(rows);
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  stream.end(frame);
  stream.resume();
  return new Promise((resolve) => {
    let result = { code: -1, details: 'the stream closed without a grpc-status' };
    const take = (headers: http2.IncomingHttpHeaders): void => {
      const code = headers['grpc-status'];
      if (code !== undefined) result = { code: Number(code), details: decodeURIComponent(String(headers['grpc-message'] ?? '')) };
    };
    stream.on('response', take);
    stream.on('trailers', take);
    stream.on('close', () => {
      session.close();
      resolve(result);
    });
  });
}

/** An HTTP/2 session to `address` (host:port) from `localAddress` (127.0.0.x: another loopback "host"), or the default. */
export function connectFrom(address: string, localAddress?: string): http2.ClientHttp2Session {
  const [host = '127.0.0.1', port = '0'] = address.split(':');
  const session =
    localAddress === undefined
      ? http2.connect(`http://${address}`)
      : http2.connect(`http://${address}`, { createConnection: () => net.connect({ port: Number(port), host, localAddress }) });
  session.on('error', () => undefined);
  return session;
}
