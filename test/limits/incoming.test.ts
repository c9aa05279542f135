/**
 * Request messages count against SSE_MAX_HELD_MB from their first byte: a client that sends most of
 * large messages and never finishes them (hundreds of streams, 15 MB each, grew the front by gigabytes
 * while the budget showed megabytes) is refused as busy once what arrived passes the budget, and
 * everything held is given back when its streams close. A refused call whose client keeps its side
 * open is reset, so its stream is not kept. Bare HTTP/2 streams send the half messages; a
 * real gRPC client checks that calls go on meanwhile.
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { MAX_SMALL_PIECES, STREAM_HELD_BYTES } from '../../src/grpc/incoming';
import { check, healthClient } from '../helpers/health-client';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, encodeBundle, FunctionType, num, numbers, scriptMetadata } from '../helpers/qlik-client';
import { openScriptStream } from '../helpers/raw-call';
import { waitFor } from '../helpers/sandbox-calls';

const MAX_HELD_MB = 16;
/** Declared, never sent whole: 6 MiB of 8 MiB a stream arrive, so the third passes a 16 MiB budget. */
const DECLARED_BYTES = 8 * 1024 * 1024;
const SENT_BYTES = 6 * 1024 * 1024;

interface HalfMessage {
  /** The gRPC status the stream ended with, once it ends. */
  readonly ended: Promise<{ code: number; details: string }>;
  close(): void;
}

/** A stream that sends a length prefix declaring `declared` bytes and then only `sent` of them, and waits. */
function halfMessage(session: http2.ClientHttp2Session, path: string, declared: number, sent: number): HalfMessage {
  const metadata = path.endsWith('EvaluateScript')
    ? scriptMetadata({
        script: 'args[0]',
        functionType: FunctionType.SCALAR,
        returnType: DataType.NUMERIC,
        params: [{ dataType: DataType.NUMERIC }],
      }).toHttp2Headers()
    : {};
  const stream = session.request({ ...metadata, ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
  stream.on('error', () => undefined);
  // A refusal is a trailers-only response: the status comes in the response headers, and the stream
  // stays half open (this side never ends it), so the status itself settles the promise.
  const ended = new Promise<{ code: number; details: string }>((resolve) => {
    const read = (headers: http2.IncomingHttpHeaders): void => {
      if (headers['grpc-status'] === undefined) return;
      resolve({ code: Number(headers['grpc-status']), details: decodeURIComponent(String(headers['grpc-message'] ?? '')) });
    };
    stream.on('response', read);
    stream.on('trailers', read);
    stream.on('close', () => resolve({ code: -1, details: 'closed without a status' }));
  });
  stream.resume();
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(declared, 1);
  stream.write(Buffer.concat([prefix, Buffer.alloc(sent, 1)]));
  return { ended, close: () => stream.close(http2.constants.NGHTTP2_CANCEL) };
}

describe('request messages being received', () => {
  let t: TestPlugin;
  before(async () => {
    // One client host may use the whole budget here: these are about the budget, not host shares.
    t = await startTestPlugin({ SSE_WORKERS: '1', SSE_MAX_HELD_MB: String(MAX_HELD_MB), SSE_HOST_SHARE_PERCENT: '100' });
  });
  after(() => t.stop());

  it('count from their first byte: past SSE_MAX_HELD_MB a call is refused as busy, and closing gives it all back', async () => {
    const session = http2.connect(`http://${t.address}`);
    session.on('error', () => undefined);
    const path = '/qlik.sse.Connector/EvaluateScript';
    const before = t.plugin.held.bytes;
    try {
      const first = halfMessage(session, path, DECLARED_BYTES, SENT_BYTES);
      const second = halfMessage(session, path, DECLARED_BYTES, SENT_BYTES);
      await waitFor('both half messages held', () => t.plugin.held.bytes - before >= 2 * SENT_BYTES, 10_000);
      const third = halfMessage(session, path, DECLARED_BYTES, SENT_BYTES);
      const refused = await third.ended;
      assert.equal(refused.code, status.RESOURCE_EXHAUSTED);
      assert.match(refused.details, /^the plugin is busy: .*SSE_MAX_HELD_MB/);
      // The two held ones are untouched, and other calls go on beside them.
      const answer = await t.client.evaluate({ script: 'args[0] * 2', params: [{ dataType: DataType.NUMERIC }], bundles: [[[num(21)]]] });
      assert.deepEqual([answer.code, numbers(answer)], [status.OK, [42]]);
      first.close();
      second.close();
      await Promise.all([first.ended, second.ended]);
    } finally {
      session.destroy();
    }
    await waitFor('every held byte given back', () => t.plugin.held.bytes === 0 && t.plugin.held.accounts === 0, 10_000);
  });

  // The timeout only turns a stream kept open (the failure) into a failure instead of a hang.
  it('a refused call whose client never finishes its request is reset, not kept open', { timeout: 15_000 }, async () => {
    const session = http2.connect(`http://${t.address}`);
    session.on('error', () => undefined);
    try {
      // No script header: refused at once; the client keeps its side open and never sends more.
      const stream = session.request({
        ':method': 'POST',
        ':path': '/qlik.sse.Connector/EvaluateScript',
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      stream.on('error', () => undefined);
      stream.resume();
      const closed = new Promise<number>((resolve) => stream.on('close', () => resolve(stream.rstCode ?? -1)));
      assert.equal(await closed, http2.constants.NGHTTP2_NO_ERROR);
    } finally {
      session.destroy();
    }
  });

  it('GetCapabilities takes only its empty message: a large one is refused from its prefix', async () => {
    const session = http2.connect(`http://${t.address}`);
    session.on('error', () => undefined);
    try {
      const capabilities = halfMessage(session, '/qlik.sse.Connector/GetCapabilities', DECLARED_BYTES, SENT_BYTES);
      const ended = await capabilities.ended;
      assert.equal(ended.code, status.RESOURCE_EXHAUSTED);
      assert.match(ended.details, /Received message larger than max/);
    } finally {
      session.destroy();
    }
    // The stream's own cost is given back when the front sees it close.
    await waitFor('the stream given back', () => t.plugin.held.bytes === 0, 10_000);
  });
});

describe('streams whose request never comes', () => {
  const STREAMS_PER_CONNECTION = 100;
  /** One connection from each of this many hosts (/24s): a host's streams at once are shared among its connections. */
  const HOSTS = 11;
  let t: TestPlugin;
  before(async () => {
    // Silent requests are not ended while the test runs.
    t = await startTestPlugin({ SSE_WORKERS: '1', SSE_MAX_HELD_MB: String(MAX_HELD_MB), SSE_HANDSHAKE_TIMEOUT_MS: '60000' });
  });
  after(() => t.stop());

  it("each hold a stream's cost: past the budget they are refused busy, and health checks are still answered", {
    timeout: 30_000,
  }, async () => {
    const port = Number(t.address.split(':').pop());
    const sessions = Array.from({ length: HOSTS }, (_, host) => {
      const session = http2.connect(`http://${t.address}`, {
        createConnection: () => net.connect({ port, host: '127.0.0.1', localAddress: `127.0.${host + 2}.1` }),
      });
      session.on('error', () => undefined);
      return session;
    });
    const refusals: string[] = [];
    let answered = 0;
    const health = healthClient(t.address);
    try {
      for (const session of sessions)
        for (let i = 0; i < STREAMS_PER_CONNECTION; i++) {
          const stream = session.request({
            ':method': 'POST',
            ':path': '/qlik.sse.Connector/GetCapabilities',
            'content-type': 'application/grpc',
            te: 'trailers',
          });
          stream.on('error', () => undefined);
          stream.on('response', (headers) => {
            answered++;
            if (headers['grpc-status'] !== undefined)
              refusals.push(`${headers['grpc-status']} ${decodeURIComponent(String(headers['grpc-message']))}`);
          });
        }
      // A held stream gets no answer; a refused one gets its status at once. The budget fits this many streams:
      const fit = Math.floor((MAX_HELD_MB * 1024 * 1024) / STREAM_HELD_BYTES);
      const total = HOSTS * STREAMS_PER_CONNECTION;
      await waitFor('the streams past the budget refused', () => answered >= total - fit, 20_000);
      assert.equal(refusals.length, answered);
      assert.equal(answered, total - fit);
      assert.match(refusals[0] ?? '', /^8 the plugin is busy: its calls already hold close to 16 MB/);
      assert.equal(t.plugin.held.bytes, fit * STREAM_HELD_BYTES);
      // A full budget does not make the plugin look dead to its liveness probe.
      assert.deepEqual(await check(health, ''), { code: status.OK, details: '', status: 'SERVING' });
    } finally {
      health.close();
      for (const session of sessions) session.destroy();
    }
    await waitFor('every stream given back', () => t.plugin.held.bytes === 0, 10_000);
  });
});

describe('a request message sent in tiny frames', () => {
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_WORKERS: '1' });
  });
  after(() => t.stop());

  it('a request that ends inside a message fails INVALID_ARGUMENT, not OK with the rows before it', async () => {
    const session = http2.connect(`http://127.0.0.1:${t.plugin.port}`);
    session.on('error', () => undefined);
    const stream = openScriptStream(session, {
      script: 'args[0] * 2',
      functionType: FunctionType.SCALAR,
      params: [{ dataType: DataType.NUMERIC }],
    });
    let headers: http2.IncomingHttpHeaders | undefined;
    stream.on('trailers', (trailers) => (headers = trailers));
    stream.on('response', (response) => {
      if (response['grpc-status'] !== undefined) headers = response;
    });
    stream.resume();
    // One whole message of one row, then a prefix promising 50 bytes and 2 of them, then the half-close.
    const whole = encodeBundle([[num(21)]]);
    const prefix = Buffer.alloc(5);
    prefix.writeUInt32BE(whole.length, 1);
    const cut = Buffer.from([0, 0, 0, 0, 50, 0x0a, 0x0b]);
    stream.end(Buffer.concat([prefix, whole, cut]));
    await new Promise<void>((resolve) => (stream.closed ? resolve() : stream.once('close', () => resolve())));
    session.destroy();
    assert.equal(Number(headers?.['grpc-status']), status.INVALID_ARGUMENT);
    assert.match(decodeURIComponent(String(headers?.['grpc-message'])), /the request ended inside a message/);
  });

  it('is refused RESOURCE_EXHAUSTED after a few thousand pieces, and the front serves the next call', { timeout: 60_000 }, async () => {
    const session = http2.connect(`http://127.0.0.1:${t.plugin.port}`);
    session.on('error', () => undefined);
    const stream = openScriptStream(session, { script: 'args[0]', params: [{ dataType: DataType.NUMERIC }] });
    let trailers: http2.IncomingHttpHeaders | undefined;
    stream.on('trailers', (headers) => (trailers = headers));
    stream.on('response', (headers) => {
      if (headers['grpc-status'] !== undefined) trailers = headers;
    });
    stream.resume();
    const write = (bytes: Buffer): Promise<void> => new Promise((resolve) => stream.write(bytes, () => resolve()));
    // A 64 KiB message announced, then its body one byte a frame (each write is flushed before the next).
    await write(Buffer.from([0, 0, 1, 0, 0]));
    let sent = 0;
    while (trailers === undefined && !stream.closed && sent < 3 * MAX_SMALL_PIECES) {
      await write(Buffer.from([sent & 0xff]));
      sent++;
    }
    await new Promise<void>((resolve) => (stream.closed ? resolve() : stream.once('close', () => resolve())));
    session.destroy();
    assert.equal(Number(trailers?.['grpc-status']), status.RESOURCE_EXHAUSTED);
    assert.match(decodeURIComponent(String(trailers?.['grpc-message'])), /arrived in more than 4096 pieces of 1 bytes on average/);
    assert.ok(sent < 2 * MAX_SMALL_PIECES, `${sent} one-byte frames were taken`);
    const next = await t.client.evaluate({
      script: 'args[0] * 2',
      functionType: FunctionType.SCALAR,
      params: [{ dataType: DataType.NUMERIC }],
      bundles: [[[num(21)]]],
    });
    assert.deepEqual(numbers(next), [42]);
  });
});
