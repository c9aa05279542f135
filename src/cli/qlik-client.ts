/**
 * A Qlik-engine stand-in: a real grpc-js client that sends the real binary qlik-*-bin headers and
 * BundledRows encoded by protobufjs (independently of the plugin's codec). The tests call the plugin
 * with it (test/helpers/qlik-client.ts re-exports it), and so does `npm run try` (src/cli/), which is
 * why it lives in src/: trying a script goes through the same wire as a call from Qlik.
 */
import * as grpc from '@grpc/grpc-js';
import { DataType, FunctionType } from '../contract/task';
import { decodeMessage, encodeMessage, messages, PROTO_PATH } from '../grpc/proto';

export { DataType, FunctionType, PROTO_PATH };

export interface Dual {
  numData?: number;
  strData?: string;
}

export interface Param {
  readonly dataType: DataType;
  readonly name?: string;
}

export interface ScriptCallOptions {
  readonly script: string;
  readonly functionType?: FunctionType;
  readonly returnType?: DataType;
  readonly params?: readonly Param[];
  /** Bundles of rows of duals; each bundle is one BundledRows message. */
  readonly bundles?: readonly (readonly (readonly Dual[])[])[];
  /** Pre-encoded messages, sent instead of bundles. */
  readonly rawMessages?: readonly Buffer[];
  readonly common?: { appId?: string; userId?: string; cardinality?: number } | null;
  /** Replaces the script header bytes (garbled-header tests); null omits the header. */
  readonly scriptHeaderBytes?: Buffer | null;
  readonly deadlineMs?: number;
  /** Cancels the call (as Qlik does when a selection changes) this long after sending its rows. */
  readonly cancelAfterMs?: number;
}

export interface FunctionCallOptions
  extends Pick<ScriptCallOptions, 'bundles' | 'rawMessages' | 'common' | 'deadlineMs' | 'cancelAfterMs'> {
  readonly functionId: number;
  /** Replaces the function header bytes; null omits the header. */
  readonly functionHeaderBytes?: Buffer | null;
}

export interface CallResult {
  readonly code: grpc.status;
  readonly details: string;
  readonly rows: Dual[][];
  readonly messageSizes: number[];
  readonly initialMetadata: grpc.Metadata | undefined;
  readonly trailers: grpc.Metadata | undefined;
}

const raw = (value: Buffer): Buffer => value;

export function encodeBundle(rows: readonly (readonly Dual[])[]): Buffer {
  return encodeMessage(messages.BundledRows, { rows: rows.map((duals) => ({ duals: duals.map((d) => ({ ...d })) })) });
}

export function num(value: number): Dual {
  return { numData: value };
}

export function str(value: string): Dual {
  return { strData: value };
}

export function dual(n: number, s: string): Dual {
  return { numData: n, strData: s };
}

export class QlikClient {
  readonly client: grpc.Client;

  constructor(
    readonly address: string,
    credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
    options: grpc.ChannelOptions = {},
  ) {
    this.client = new grpc.Client(address, credentials, { 'grpc.max_receive_message_length': 4 * 1024 * 1024, ...options });
  }

  close(): void {
    this.client.close();
  }

  getCapabilities(): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        '/qlik.sse.Connector/GetCapabilities',
        () => Buffer.alloc(0),
        (bytes: Buffer) => decodeMessage(messages.Capabilities, bytes),
        {},
        (error, value) => (error ? reject(error) : resolve(value as Record<string, unknown>)),
      );
    });
  }

  evaluate(options: ScriptCallOptions): Promise<CallResult> {
    return this.stream('/qlik.sse.Connector/EvaluateScript', scriptMetadata(options), options);
  }

  /** ExecuteFunction, as Qlik calls a plugin function by the id GetCapabilities gave it. */
  executeFunction(options: FunctionCallOptions): Promise<CallResult> {
    return this.stream('/qlik.sse.Connector/ExecuteFunction', functionMetadata(options), options);
  }

  /** An ExecuteFunction call whose rows the test sends when it chooses: send() then end(). */
  openFunctionCall(options: FunctionCallOptions): { send(rows: readonly (readonly Dual[])[]): void; end(): Promise<CallResult> } {
    let sendRows!: (rows: readonly (readonly Dual[])[]) => void;
    let endCall!: () => void;
    const result = this.stream('/qlik.sse.Connector/ExecuteFunction', functionMetadata(options), options, (call) => {
      sendRows = (rows) => call.write(encodeBundle(rows));
      endCall = () => call.end();
    });
    return {
      send: (rows) => sendRows(rows),
      end: () => {
        endCall();
        return result;
      },
    };
  }

  stream(
    path: string,
    metadata: grpc.Metadata,
    options: Pick<ScriptCallOptions, 'bundles' | 'rawMessages' | 'deadlineMs' | 'cancelAfterMs'>,
    /** Keeps the call open for the caller to write to, instead of sending the bundles and ending it. */
    keepOpen?: (call: grpc.ClientDuplexStream<Buffer, Buffer>) => void,
  ): Promise<CallResult> {
    const deadline = new Date(Date.now() + (options.deadlineMs ?? 30_000));
    const call = this.client.makeBidiStreamRequest(path, raw, raw, metadata, { deadline });
    const rows: Dual[][] = [];
    const messageSizes: number[] = [];
    let initialMetadata: grpc.Metadata | undefined;
    let trailers: grpc.Metadata | undefined;
    return new Promise((resolve) => {
      call.on('metadata', (md: grpc.Metadata) => (initialMetadata = md));
      call.on('data', (message: Buffer) => {
        messageSizes.push(message.length);
        const bundle = decodeMessage(messages.BundledRows, message) as { rows: { duals: Dual[] }[] };
        for (const row of bundle.rows) rows.push(row.duals);
      });
      call.on('status', (status: grpc.StatusObject) => {
        trailers = status.metadata;
        resolve({ code: status.code, details: status.details, rows, messageSizes, initialMetadata, trailers });
      });
      call.on('error', () => undefined);
      if (keepOpen) return keepOpen(call);
      const messagesToSend = options.rawMessages ?? (options.bundles ?? []).map(encodeBundle);
      for (const message of messagesToSend) call.write(message);
      call.end();
      if (options.cancelAfterMs !== undefined) setTimeout(() => call.cancel(), options.cancelAfterMs);
    });
  }
}

export function functionMetadata(options: FunctionCallOptions): grpc.Metadata {
  const metadata = new grpc.Metadata();
  // version is set as Qlik's own tests do: a header with functionId 0 alone would be empty.
  const header =
    options.functionHeaderBytes === undefined
      ? encodeMessage(messages.FunctionRequestHeader, { functionId: options.functionId, version: '1' })
      : options.functionHeaderBytes;
  if (header !== null) metadata.set('qlik-functionrequestheader-bin', header);
  setCommonHeader(metadata, options.common);
  return metadata;
}

/** The common header as Qlik sends it (a default one unless given); null omits it. */
function setCommonHeader(metadata: grpc.Metadata, common: ScriptCallOptions['common']): void {
  if (common === null) return;
  const value = common ?? { appId: 'test-app', userId: 'UserDirectory=TEST; UserId=tester', cardinality: 0 };
  metadata.set('qlik-commonrequestheader-bin', encodeMessage(messages.CommonRequestHeader, { ...value }));
}

export function scriptHeader(options: ScriptCallOptions): Buffer {
  return encodeMessage(messages.ScriptRequestHeader, {
    script: options.script,
    functionType: options.functionType ?? FunctionType.TENSOR,
    returnType: options.returnType ?? DataType.NUMERIC,
    params: (options.params ?? []).map((p) => ({ dataType: p.dataType, name: p.name ?? '' })),
  });
}

export function scriptMetadata(options: ScriptCallOptions): grpc.Metadata {
  const metadata = new grpc.Metadata();
  const header = options.scriptHeaderBytes === undefined ? scriptHeader(options) : options.scriptHeaderBytes;
  if (header !== null) metadata.set('qlik-scriptrequestheader-bin', header);
  setCommonHeader(metadata, options.common);
  return metadata;
}

/** The first dual's number of each row (NUMERIC results). */
export function numbers(result: CallResult): number[] {
  return result.rows.map((row) => row[0]?.numData ?? 0);
}

/** The first dual's text of each row (STRING results). */
export function strings(result: CallResult): string[] {
  return result.rows.map((row) => row[0]?.strData ?? '');
}
