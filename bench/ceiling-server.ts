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
import * as grpc from '@grpc/grpc-js';
import { DataType, FunctionType } from '../src/contract/task';
import { decodeMessage, messages } from '../src/grpc/proto';
import { countRows, numericReply } from './wire';

const raw = (value: Buffer): Buffer => value;
const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
const MAX_REPLY_BYTES = 4 * 1024 * 1024;

function method(name: string, streaming: boolean): grpc.MethodDefinition<Buffer, Buffer> {
  return {
    path: `/qlik.sse.Connector/${name}`,
    requestStream: streaming,
    responseStream: streaming,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  };
}

function evaluateScript(call: grpc.ServerDuplexStream<Buffer, Buffer>): void {
  const headerBytes = call.metadata.get('qlik-scriptrequestheader-bin')[0];
  const header = decodeMessage(messages.ScriptRequestHeader, Buffer.isBuffer(headerBytes) ? headerBytes : Buffer.alloc(0));
  const aggregate = header['functionType'] === FunctionType.AGGREGATION;
  const echo = header['returnType'] === DataType.STRING;
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

function main(): void {
  const port = Number(process.env['BENCH_PORT'] ?? '0');
  const server = new grpc.Server({ 'grpc.max_receive_message_length': MAX_MESSAGE_BYTES, 'grpc.max_send_message_length': MAX_REPLY_BYTES });
  server.addService(
    { GetCapabilities: method('GetCapabilities', false), EvaluateScript: method('EvaluateScript', true) },
    {
      GetCapabilities: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
        callback(null, Buffer.alloc(0)),
      EvaluateScript: evaluateScript,
    },
  );
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error) => {
    if (error) {
      process.stderr.write(`ceiling server failed to bind: ${error.message}\n`);
      process.exit(1);
    }
  });
  process.once('SIGTERM', () => server.tryShutdown(() => undefined));
}

main();
