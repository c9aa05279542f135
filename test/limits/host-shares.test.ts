/**
 * One client host cannot lock the others out of what the front holds for calls: it may use at most
 * SSE_HOST_SHARE_PERCENT (half by default) of the held bytes (SSE_MAX_HELD_MB) and of the open-call
 * slots, and a call whose client takes none of its replies is reset after SSE_UNREAD_REPLY_TIMEOUT_MS
 * instead of holding them for as long as its connection lives. A black-box pass held all 512 MB with
 * 257 calls whose replies it never read, and all 4,096 open-call slots with calls left open, from one
 * address: every other host was refused as busy. Scaled down: 16 MB, four open calls, 2 MB replies.
 * Loopback networks 127.0.N.0/24 are the hosts (src/grpc/client-hosts.ts).
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, encodeBundle, FunctionType, num } from '../helpers/qlik-client';
import { callFrom, connectFrom, openScriptStream, openStalledCall, type StalledCall } from '../helpers/raw-call';
import { waitFor } from '../helpers/sandbox-calls';
import { metricsText, sampleValue } from '../ops/process';

const MB = 1024 * 1024;
const REPLY_CHARS = 2_000_000;
/** One row in, one text of REPLY_CHARS out: a reply of about 2 MB that a paused client never takes. */
const BIG_REPLY = {
  script: `'x'.repeat(${REPLY_CHARS}) + args[0]`,
  functionType: FunctionType.SCALAR,
  returnType: DataType.STRING,
  params: [{ dataType: DataType.NUMERIC }],
};
const DOUBLE = { script: 'args[0] * 2', params: [{ dataType: DataType.NUMERIC }] };

function frame(value: number): Buffer {
  const message = encodeBundle([[num(value)]]);
  const framed = Buffer.alloc(5 + message.length);
  framed.writeUInt32BE(message.length, 1);
  message.copy(framed, 5);
  return framed;
}

/** A stalled call from `localAddress` that sends one row and half-closes; resolves once it holds its reply or was refused. */
async function stalledBigReply(t: TestPlugin, localAddress: string, value: number): Promise<{ call: StalledCall; refused?: string }> {
  const call = openStalledCall(t.address, BIG_REPLY, localAddress);
  call.send([[num(value)]]);
  call.end();
  const headers = await call.response;
  if (headers['grpc-status'] === undefined) return { call };
  assert.equal(Number(headers['grpc-status']), status.RESOURCE_EXHAUSTED, String(headers['grpc-message']));
  return { call, refused: decodeURIComponent(String(headers['grpc-message'])) };
}

describe('held bytes: one host holds at most its share (SSE_MAX_HELD_MB=16, SSE_HOST_SHARE_PERCENT=50)', () => {
  let t: TestPlugin;
  // Replies unread for as long as the test likes: the share, not the reset, is under test here.
  before(
    async () =>
      (t = await startTestPlugin({
        SSE_WORKERS: '2',
        SSE_MAX_HELD_MB: '16',
        SSE_UNREAD_REPLY_TIMEOUT_MS: '600000',
        SSE_METRICS_PORT: '0',
      })),
  );
  after(async () => t.stop());

  it("a host whose clients never read fills only its share; its next call is refused naming the setting; another host's call is answered", async () => {
    const hostA = '127.0.5.0/24';
    const held: StalledCall[] = [];
    let refused: string | undefined;
    // Eight calls would hold 16 MB: the budget, were there no share.
    for (let i = 0; i < 8 && refused === undefined; i++) {
      const next = await stalledBigReply(t, `127.0.5.${1 + (i % 2)}`, i);
      if (next.refused === undefined) held.push(next.call);
      else refused = next.refused;
    }
    assert.ok(refused !== undefined, `no call of host A was refused: it holds ${(t.plugin.held.bytesOf(hostA) / MB).toFixed(1)} MB`);
    assert.match(refused, /^the plugin is busy: .*\(SSE_HOST_SHARE_PERCENT of SSE_MAX_HELD_MB\)/);
    assert.ok(held.length >= 2, `only ${held.length} calls of host A hold their replies`);
    assert.ok(t.plugin.held.bytesOf(hostA) <= 8 * MB, `host A holds ${t.plugin.held.bytesOf(hostA)} bytes, past its 8 MB share`);
    // Another host's call with a reply of the same size finds room, and one more of the first host's
    // (from another of its addresses) is still refused.
    const other = await callFrom(t.plugin.port, '127.0.6.1', BIG_REPLY, [[num(7)]]);
    assert.deepEqual(other, { code: status.OK, details: 'OK' });
    const again = await callFrom(t.plugin.port, '127.0.5.9', BIG_REPLY, [[num(8)]]);
    assert.equal(again.code, status.RESOURCE_EXHAUSTED, again.details);
    assert.match(again.details, /SSE_HOST_SHARE_PERCENT/);
    // Both refusals are busy refusals to the metrics, though no queue was full.
    const refusals = sampleValue(await metricsText(t.plugin.metricsPort as number), 'sse_busy_refusals_total');
    assert.ok(refusals >= 2, `sse_busy_refusals_total is ${refusals}`);
    for (const call of held) call.cancel();
    await Promise.all(held.map((call) => call.closed));
    await waitFor('every held byte given back', () => t.plugin.held.bytes === 0, 10_000);
  });
});

describe('replies left unread (SSE_UNREAD_REPLY_TIMEOUT_MS=500)', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin({ SSE_WORKERS: '2', SSE_MAX_HELD_MB: '16', SSE_UNREAD_REPLY_TIMEOUT_MS: '500' })));
  after(async () => t.stop());

  // The timeout only turns a call held for ever (the failure) into a failure instead of a hang.
  it('a call whose client takes none of its replies is reset RESOURCE_EXHAUSTED (ENHANCE_YOUR_CALM) and gives its bytes back', {
    timeout: 30_000,
  }, async () => {
    const started = performance.now();
    const { call, refused } = await stalledBigReply(t, '127.0.8.1', 1);
    assert.equal(refused, undefined);
    await waitFor('the reply held', () => t.plugin.held.bytes >= REPLY_CHARS, 10_000);
    await call.closed;
    // gRPC clients report this reset as RESOURCE_EXHAUSTED: the status cannot pass the unread data.
    assert.equal(call.rstCode(), http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    assert.ok(performance.now() - started >= 500, 'reset before its bound');
    await waitFor('every held byte given back', () => t.plugin.held.bytes === 0 && t.plugin.openCalls.size === 0, 10_000);
    // A client that reads is not cut, however large its reply.
    const read = await callFrom(t.plugin.port, '127.0.8.1', BIG_REPLY, [[num(2)]]);
    assert.deepEqual(read, { code: status.OK, details: 'OK' });
  });
});

describe('open calls: one host holds at most its share (4 slots, SSE_HOST_SHARE_PERCENT=50)', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin({ SSE_WORKERS: '2' }, undefined, { maxOpenCalls: 4 })));
  after(async () => t.stop());

  it("a host's third open call is refused naming the setting; another host's call is answered", async () => {
    const hostA = '127.0.9.0/24';
    const session = connectFrom(t.address, '127.0.9.1');
    try {
      // Left open (not half-closed), as a client that keeps its calls does.
      const open = [openScriptStream(session, DOUBLE), openScriptStream(session, DOUBLE)];
      for (const [i, stream] of open.entries()) {
        stream.resume();
        stream.write(frame(i));
      }
      await waitFor('both calls of host A open', () => t.plugin.openCalls.callsOf(hostA) === 2, 10_000);
      const third = openScriptStream(session, DOUBLE);
      third.end(frame(3));
      const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => third.once('response', resolve));
      assert.equal(Number(headers['grpc-status']), status.RESOURCE_EXHAUSTED);
      assert.match(
        decodeURIComponent(String(headers['grpc-message'])),
        /^the plugin is busy: calls from 127\.0\.9\.0\/24 hold 2 of the 4 calls it keeps open, their host's share \(SSE_HOST_SHARE_PERCENT=50\)/,
      );
      const other = await callFrom(t.plugin.port, '127.0.10.1', DOUBLE, [[num(21)]]);
      assert.deepEqual(other, { code: status.OK, details: 'OK' });
      for (const stream of open) stream.close(http2.constants.NGHTTP2_CANCEL);
      await waitFor("host A's calls closed", () => t.plugin.openCalls.size === 0, 10_000);
    } finally {
      session.destroy();
    }
  });
});
