/**
 * The gRPC server: the qlik.sse.Connector service with raw-bytes (de)serialisers for the row
 * streams (rows are decoded in the workers, not here), the health service (src/health.ts), message-size
 * limits, and insecure or mutual-TLS credentials.
 */
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

import { capabilities } from './capabilities';
import { guardHeaderLimits } from './header-guard';
import { PluginHealth, boundHealthRequests, type ServingStatus } from './health';
import { evaluateScript, type HandlerDeps } from './evaluate-script';
import { executeFunction } from './execute-function';
import { FirstCallPerHost } from './peer-log';
import { PROTO_PATH, encodeMessage, messages } from './proto';
import { MAX_REPLY_BYTES } from './shared/replies';
import { serverCredentials } from './tls';

export const SERVICE_NAME = 'qlik.sse.Connector';

const identity = (value: Buffer | Uint8Array): Buffer =>
  Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);

/** The Connector service as proto-loader describes it, with the streaming methods moving raw bytes. */
export function connectorService(): grpc.ServiceDefinition {
  const definition = loadSync(PROTO_PATH, { keepCase: true, enums: Number, longs: Number, defaults: true })[
    SERVICE_NAME
  ] as grpc.ServiceDefinition;
  const raw = (method: grpc.MethodDefinition<unknown, unknown>): grpc.MethodDefinition<Buffer, Uint8Array> => ({
    ...method,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  });
  return {
    GetCapabilities: {
      ...definition['GetCapabilities'],
      responseSerialize: (value: Record<string, unknown>) => encodeMessage(messages.Capabilities, value),
    } as grpc.MethodDefinition<unknown, unknown>,
    ExecuteFunction: raw(definition['ExecuteFunction'] as grpc.MethodDefinition<unknown, unknown>),
    EvaluateScript: raw(definition['EvaluateScript'] as grpc.MethodDefinition<unknown, unknown>),
  };
}

export interface RunningServer {
  readonly server: grpc.Server;
  readonly port: number;
  setServing(status: ServingStatus): void;
}

export async function startServer(deps: HandlerDeps): Promise<RunningServer> {
  const { config, logger } = deps;
  const server = new grpc.Server({
    'grpc.max_receive_message_length': config.maxMessageBytes,
    'grpc.max_send_message_length': MAX_REPLY_BYTES,
    interceptors: [boundHealthRequests],
  });
  const firstCalls = new FirstCallPerHost();
  server.addService(connectorService(), {
    GetCapabilities: (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      const functions = deps.functions?.definitions() ?? [];
      const peer = call.getPeer();
      logger[firstCalls.isFirst(peer) ? 'info' : 'debug'](
        { peer, allowScript: config.allowScript, functions: functions.length },
        'GetCapabilities',
      );
      callback(null, capabilities(config.allowScript, functions));
    },
    ExecuteFunction: executeFunction(deps),
    EvaluateScript: evaluateScript(deps),
  });
  const health = new PluginHealth(['', SERVICE_NAME]);
  health.addToServer(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${formatHost(config.host)}:${config.port}`, serverCredentials(config), (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });
  guardHeaderLimits(server);
  return {
    server,
    port,
    setServing: (status) => health.setAll(status),
  };
}

function formatHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}
