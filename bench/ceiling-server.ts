/**
 * The transport ceiling: a grpc-js server on the same wire contract as the plugin that answers each
 * request message at once with an equally shaped reply, without decoding any row. It is what the
 * plugin would cost if evaluating scripts were free; the bench divides the plugin's figures by it.
 *
 * Per call it reads the script header (as the plugin does), then per request message:
 * - NUMERIC return: a prebuilt reply of as many 13-byte numeric rows as the message has rows;
 * - STRING return: the message itself (the bench's string workload maps one ASCII string to one
 *   string of the same length, so the plugin's reply has exactly these bytes);
 * - AGGREGATION: nothing until the client ends, then one numeric row.
 * It pauses reads while its writes are blocked, as the plugin does.
 *
 * Run as a child process: BENCH_PORT=<port> node --no-node-snapshot dist/bench/ceiling-server.js
 */
import type * as grpc from '@grpc/grpc-js';
import { scriptShape, serveRaw } from './raw-server';
import { countRows, numericReply } from './wire';

function evaluateScript(call: grpc.ServerDuplexStream<Buffer, Buffer>): void {
  const { aggregate, echo } = scriptShape(call);
  call.on('data', (message: Buffer) => {
    if (aggregate) return;
    if (!call.write(echo ? message : numericReply(countRows(message)))) call.pause();
  });
  call.on('drain', () => call.resume());
  call.on('end', () => {
    if (aggregate) call.write(numericReply(1));
    call.end();
  });
  call.on('error', () => undefined);
}

serveRaw('ceiling server', evaluateScript);
