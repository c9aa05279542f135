/**
 * A bare grpc-js server answering EvaluateScript by echoing each request message, run as its own process
 * (test/ops/front-garbage.test.ts): what one call leaves to V8's scavenges through Node's HTTP/2 and
 * grpc-js alone, the baseline the front's own figure is compared with. It logs one JSON line with its port.
 */
import * as grpc from '@grpc/grpc-js';

const identity = (bytes: Buffer): Buffer => bytes;
const server = new grpc.Server();
server.register<Buffer, Buffer>(
  '/qlik.sse.Connector/EvaluateScript',
  (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    call.on('data', (message: Buffer) => call.write(message));
    call.on('end', () => call.end());
  },
  identity,
  identity,
  'bidi',
);
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  process.stdout.write(`${JSON.stringify({ msg: 'bare echo listening', port })}\n`);
});
