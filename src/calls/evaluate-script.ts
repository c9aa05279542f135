/**
 * The EvaluateScript handler: checks the call may run, reads its headers, hands it to a
 * CallPipeline, and writes one log line and the metrics when it ends. ExecuteFunction
 * (src/calls/execute-function.ts) shares all of it but the reading of its headers: runCall.
 */
import { randomUUID } from 'node:crypto';

import type { ServerDuplexStream } from '@grpc/grpc-js';
import { PluginError } from '../contract/errors';
import { MAX_REPLY_BYTES } from '../contract/replies';
import type { FunctionRegistry } from '../functions/registry';
import type { ClientHosts } from '../grpc/client-hosts';
import { incomingOf } from '../grpc/incoming';
import { hostOf } from '../grpc/peer-log';
import { statusName, toStatus } from '../grpc/status';
import { endedForUnreadReplies, unreadReplyError } from '../grpc/unread-replies';
import type { Config } from '../ops/config';
import type { Logger } from '../ops/log';
import type { Metrics } from '../ops/metrics';
import { busyError, type SandboxPool } from '../sandboxes/pool';
import { CallConsole } from './call-console';
import { contextKey } from './context-key';
import { type HeldBytes, heldHeaderBytes, openCallAccount } from './held-bytes';
import type { FailedLines, LogRate } from './log-rate';
import type { OpenCallSlots } from './open-calls';
import { CallPipeline, type CallSummary } from './pipeline';
import { PreparedScripts, scriptHash } from './prepared-scripts';
import { readCommonHeader, type ScriptCall } from './request-header';

export interface HandlerDeps {
  readonly config: Config;
  readonly pool: SandboxPool;
  /** The front-wide budget of bytes held for calls (SSE_MAX_HELD_MB). */
  readonly held: HeldBytes;
  /** The calls open at once, every kind, and each host's share of them (src/calls/open-calls.ts). */
  readonly openCalls: OpenCallSlots;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** True once shutdown began: new calls are refused. */
  readonly draining: () => boolean;
  /** The administrator's plugin functions (SSE_FUNCTIONS_DIR), when configured. */
  readonly functions?: FunctionRegistry | undefined;
  /** The console rate all calls of both RPCs share (SSE_CONSOLE_RATE_KB). */
  readonly consoleRate: LogRate;
  /** The rate of refused calls' log lines, which both RPCs share. */
  readonly failedLines: FailedLines;
  /** Which client host an address counts as, for the fair queue (SSE_CLIENT_PREFIX_V4/V6). */
  readonly clientHosts: ClientHosts;
}

export type Call = ServerDuplexStream<Buffer, Uint8Array>;

export type RpcName = 'EvaluateScript' | 'ExecuteFunction';

/**
 * A call whose headers have been read; logFields are what its RPC adds to the call's log line. The
 * context key and script hash come with it when they were kept for its headers (src/calls/prepared-scripts.ts).
 */
export interface PreparedCall extends ScriptCall {
  readonly logFields?: Readonly<Record<string, unknown>>;
  readonly contextKey?: string;
  readonly scriptHash?: string;
  /** A script whose body has no return statement: said in the log at debug. */
  readonly lacksReturn?: boolean;
}

export function evaluateScript(deps: HandlerDeps): (call: Call) => void {
  const { config } = deps;
  const scripts = new PreparedScripts(config.maxScriptBytes, deps.logger.isLevelEnabled('debug'));
  return runCall(deps, 'EvaluateScript', (call) => {
    if (!config.allowScript) throw new PluginError('PERMISSION_DENIED', 'scripts are disabled on this plugin (SSE_ALLOW_SCRIPT=false)');
    const prepared = scripts.prepare(call.metadata);
    return { ...prepared.call, contextKey: prepared.contextKey, scriptHash: prepared.scriptHash, lacksReturn: prepared.lacksReturn };
  });
}

/** Runs a call once prepare() has read its headers (it throws a PluginError to refuse the call). */
export function runCall(deps: HandlerDeps, rpc: RpcName, prepare: (call: Call) => PreparedCall): (call: Call) => void {
  const { config, pool, logger, metrics } = deps;
  return (call) => {
    const started = performance.now();
    const requestId = randomUUID();
    // Read now: once a client drops its connection, grpc-js answers "unknown" for the call's peer.
    const peer = call.getPeer();
    metrics.callStarted();
    let scriptCall: PreparedCall;
    // The call's one account, opened when its request messages began to arrive (src/grpc/incoming.ts):
    // an open call costs the front its headers and its state, rows or not. It knows the call's host.
    const incoming = incomingOf(call);
    const host = incoming?.account.host ?? deps.clientHosts.of(hostOf(peer));
    const account = openCallAccount(deps.held, call, incoming?.account ?? deps.held.open(host));
    try {
      if (deps.draining()) throw new PluginError('UNAVAILABLE', 'the plugin is shutting down; try again on another instance');
      account.alsoRelease(deps.openCalls.admit(host));
      account.hold(openCallBytes(call.metadata));
      scriptCall = prepare(call);
      if (scriptCall.lacksReturn === true)
        logger.debug(
          { requestId, scriptHash: scriptCall.scriptHash },
          'the script is a function body without a return statement: every row gives a Qlik null',
        );
      if (pool.saturatedFor(host)) {
        metrics.busyRefusals.inc();
        throw busyError(config.maxQueue);
      }
    } catch (error) {
      account.close();
      const failure = PluginError.from(error);
      call.emit('error', toStatus(failure));
      logCall(deps, { rpc, requestId, started, call, peer, scriptCall: undefined, error: failure, summary: undefined });
      return;
    }
    const owner = { requestId, appId: scriptCall.common.appId, userId: scriptCall.common.userId };
    const scriptConsole = new CallConsole(logger, owner, config.consoleLines, config.consoleBytes, deps.consoleRate);
    const pipeline = new CallPipeline(call, scriptCall.spec, pool, {
      chunkBytes: config.chunkKb * 1024,
      maxInFlight: config.workers + 1,
      timeoutMs: config.scriptTimeoutMs,
      maxReplyBytes: MAX_REPLY_BYTES,
      contextKey: scriptCall.contextKey ?? contextKey(scriptCall.common, scriptCall.spec),
      owner: { host, appId: scriptCall.common.appId, userId: scriptCall.common.userId },
      account,
      onConsole: (output) => scriptConsole.add(output),
      ...(incoming === undefined ? {} : { endedInsideMessage: () => incoming.endedInsideMessage() }),
    });
    // The account stays open after the pipeline settles: replies not yet taken are still counted,
    // until the stream's end closes it (openCallAccount).
    // Request messages were held from their first byte (src/grpc/incoming.ts): the pipeline
    // counts each from the moment it takes it, so the early hold goes back then (this listener is first).
    if (incoming) call.on('data', () => incoming.taken());
    pipeline.run().then(
      ({ error: ended, summary }) => {
        scriptConsole.finish();
        // Reset for replies left unread (src/grpc/unread-replies.ts): grpc-js says 'cancelled'.
        const error =
          ended?.code === 'CANCELLED' && endedForUnreadReplies(call)
            ? new PluginError('RESOURCE_EXHAUSTED', unreadReplyError(config.unreadReplyTimeoutMs))
            : ended;
        logCall(deps, { rpc, requestId, started, call, peer, scriptCall, error, summary });
      },
      (error: unknown) => {
        account.close();
        metrics.callEnded();
        logger.error({ requestId, err: error }, 'call pipeline failed');
      },
    );
  };
}

/**
 * What the front keeps for an open call besides its rows and headers (heldHeaderBytes): its state, and
 * what the client may send on its stream before the front reads it (HTTP/2's initial window of 64 KiB,
 * which grpc-js and Node leave at the default).
 */
const CALL_STATE_BYTES = 16 * 1024 + 65_535;

export function openCallBytes(metadata: Call['metadata']): number {
  return CALL_STATE_BYTES + heldHeaderBytes(metadata);
}

interface CallRecord {
  readonly rpc: RpcName;
  readonly requestId: string;
  readonly started: number;
  readonly call: Call;
  readonly peer: string;
  readonly scriptCall: PreparedCall | undefined;
  readonly error: PluginError | null;
  readonly summary: CallSummary | undefined;
}

function logCall({ logger, metrics, failedLines }: HandlerDeps, record: CallRecord): void {
  metrics.callEnded();
  const { scriptCall, error, summary } = record;
  const durationMs = performance.now() - record.started;
  const status = error ? statusName(toStatus(error).code) : 'OK';
  const functionName = scriptCall?.functionName ?? 'unknown';
  metrics.calls.inc({ function: functionName, status });
  metrics.duration.observe({ function: functionName }, durationMs / 1000);
  if (summary) {
    metrics.rowsIn.inc(summary.rowsIn);
    metrics.rowsOut.inc(summary.rowsOut);
    if (summary.timedOut) metrics.timeouts.inc();
    // sse_isolate_rebuilds_total is derived from this one (src/ops/metrics.ts).
    if (summary.isolateRebuilds > 0) metrics.memoryDisposals.inc(summary.isolateRebuilds);
  }
  // Below info (SSE_LOG_LEVEL=warn, as the bench runs) the line is not even built.
  if (logger.isLevelEnabled('info')) {
    // A call refused, or failing at once (a syntax error), costs little, so a client can repeat it far
    // faster than calls run; failed calls' lines share one rate.
    const failedNotLogged = error !== null ? failedLines.admit() : 0;
    if (failedNotLogged !== undefined) logger.info(callLine(record, durationMs, status, functionName, failedNotLogged), record.rpc);
  }
  if (error?.code === 'INVALID_ARGUMENT') logger.debug({ requestId: record.requestId, details: error.message }, `${record.rpc} failed`);
}

/** The call's one log line; failedNotLogged: refused calls' lines left out before it. */
function callLine(
  record: CallRecord,
  durationMs: number,
  status: string,
  functionName: string,
  failedNotLogged: number,
): Record<string, unknown> {
  const { scriptCall, error, summary } = record;
  const common = scriptCall?.common ?? safeCommonHeader(record.call);
  return {
    requestId: record.requestId,
    appId: common.appId,
    userId: common.userId,
    peer: record.peer,
    function: functionName,
    ...scriptCall?.logFields,
    scriptHash: scriptCall ? (scriptCall.scriptHash ?? scriptHash(scriptCall.spec.script)) : undefined,
    scriptBytes: scriptCall?.scriptBytes,
    rowsIn: summary?.rowsIn ?? 0,
    rowsOut: summary?.rowsOut ?? 0,
    durationMs: Math.round(durationMs * 1000) / 1000,
    scriptMs: summary ? Math.round(summary.scriptMs * 1000) / 1000 : 0,
    table: summary?.table ?? false,
    noStore: summary?.nondeterministic ?? false,
    status,
    // A script's own error message may quote row values: that only goes to debug.
    details: error && error.code !== 'INVALID_ARGUMENT' ? error.message : undefined,
    failedNotLogged: failedNotLogged || undefined,
  };
}

function safeCommonHeader(call: Call): { appId: string; userId: string } {
  try {
    return readCommonHeader(call.metadata);
  } catch {
    return { appId: '', userId: '' };
  }
}
