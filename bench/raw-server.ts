/**
 * A grpc-js server on the plugin's wire contract that passes messages as raw bytes, for the bench's
 * reference servers (bench/ceiling-server.ts, bench/relay-ceiling.ts): GetCapabilities answers an empty
 * message, EvaluateScript is the caller's. Binds 127.0.0.1:BENCH_PORT; SIGTERM shuts it down.
 */
import * as grpc from '@grpc/grpc-js';

import { DataType, FunctionType } from '../src/contract/task';
import { decodeMessage, messages } from '../src/grpc/proto';

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

/** What a call's script header asks: an aggregation (one row at the end), and text back (the bench echoes it). */
export function scriptShape(call: grpc.ServerDuplexStream<Buffer, Buffer>): { aggregate: boolean; echo: boolean } {
  const headerBytes = call.metadata.get('qlik-scriptrequestheader-bin')[0];
  const header = decodeMessage(messages.ScriptRequestHeader, Buffer.isBuffer(headerBytes) ? headerBytes : Buffer.alloc(0));
  return { aggregate: header['functionType'] === FunctionType.AGGREGATION, echo: header['returnType'] === DataType.STRING };
}

export function serveRaw(
  name: string,
  evaluateScript: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => void,
  onStop = (): void => undefined,
): void {
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
      process.stderr.write(`${name} failed to bind: ${error.message}\n`);
      process.exit(1);
    }
  });
  process.once('SIGTERM', () => {
    onStop();
    server.tryShutdown(() => undefined);
  });
}
