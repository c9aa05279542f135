/**
 * The one client both servers are driven with: a grpc-js channel sending pre-encoded BundledRows
 * with the real qlik-*-bin headers, honouring write() backpressure, and counting reply rows by
 * their top-level fields only, so the client costs the same whichever server answers.
 */
import * as grpc from '@grpc/grpc-js';

import { countRows } from './wire';

const raw = (value: Buffer): Buffer => value;
const EVALUATE_SCRIPT = '/qlik.sse.Connector/EvaluateScript';
/** Qlik's gRPC client takes replies of at most 4 MiB. */
const MAX_RECEIVE_BYTES = 4 * 1024 * 1024;

export interface CallOutcome {
  readonly code: grpc.status;
  readonly details: string;
  readonly ms: number;
  readonly rows: number;
  readonly replyBytes: number;
  /** Reply messages, kept only when asked for (to verify them after the clock stops). */
  readonly replies: Buffer[];
}

/** A channel of its own (own HTTP/2 connection), as a separate Qlik engine would have. */
export function connect(address: string): grpc.Client {
  return new grpc.Client(address, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': MAX_RECEIVE_BYTES,
    'grpc.use_local_subchannel_pool': 1,
  });
}

export function evaluate(
  client: grpc.Client,
  metadata: grpc.Metadata,
  messages: readonly Buffer[],
  keepReplies = false,
): Promise<CallOutcome> {
  const started = performance.now();
  const call = client.makeBidiStreamRequest(EVALUATE_SCRIPT, raw, raw, metadata.clone(), { deadline: Date.now() + 60_000 });
  let rows = 0;
  let replyBytes = 0;
  const replies: Buffer[] = [];
  return new Promise((resolve) => {
    call.on('data', (reply: Buffer) => {
      rows += countRows(reply);
      replyBytes += reply.length;
      if (keepReplies) replies.push(reply);
    });
    call.on('status', (status: grpc.StatusObject) => {
      resolve({ code: status.code, details: status.details, ms: performance.now() - started, rows, replyBytes, replies });
    });
    call.on('error', () => undefined);
    let next = 0;
    const pump = (): void => {
      while (next < messages.length) {
        const message = messages[next++] as Buffer;
        if (!call.write(message)) {
          call.once('drain', pump);
          return;
        }
      }
      call.end();
    };
    pump();
  });
}

/** Throws unless the call ended OK with the expected number of rows. */
export function expectOk(outcome: CallOutcome, rows: number, what: string): CallOutcome {
  if (outcome.code !== grpc.status.OK) throw new Error(`${what}: status ${outcome.code} ${outcome.details}`);
  if (outcome.rows !== rows) throw new Error(`${what}: ${outcome.rows} rows back, expected ${rows}`);
  return outcome;
}
