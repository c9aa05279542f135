import { availableParallelism } from 'node:os';

import { z } from 'zod';

import { DEFAULT_FAST_PATH_MS } from '../contract/channel';
import { MAX_CONSOLE_BYTES, MAX_CONSOLE_LINES } from '../contract/console';
import { LIBRARY_NAME } from '../contract/libraries';
import { isAddressOrNetwork } from '../grpc/client-hosts';

/**
 * The only reader of the environment. Every variable is validated once at start; an invalid value
 * stops the start with a message naming the variable, the value and what it accepts.
 */
export interface Config {
  readonly port: number;
  readonly host: string;
  readonly tlsDir: string | undefined;
  readonly allowScript: boolean;
  /** Sandbox threads over all sandbox processes. */
  readonly workers: number;
  /** Sandbox processes the threads are split over. */
  readonly sandboxProcesses: number;
  /**
   * Sandbox processes started ahead and kept ready, running nothing, besides SSE_SANDBOX_PROCESSES:
   * one takes over at once from a process that dies (src/sandboxes/supervisor.ts). 0 turns them off.
   */
  readonly spareSandboxes: number;
  /** Resident memory past which the front ends a sandbox process (MB); undefined: from its thread count (defaultSandboxMemoryMb). */
  readonly sandboxMemoryMb: number | undefined;
  /** Scheduling niceness of the sandbox processes' threads (0-19): the front wins a contended CPU. */
  readonly sandboxNice: number;
  /** User (name or uid) the sandbox processes run as (src/sandboxes/sandbox-confinement.ts); undefined: the front's. */
  readonly sandboxUser: string | undefined;
  /** Their group (name or gid); undefined: the sandbox user's primary group. */
  readonly sandboxGroup: string | undefined;
  /** Script time a small task may take on a sandbox process's main thread before a pool thread runs it again; 0: never there. */
  readonly fastPathMs: number;
  readonly scriptTimeoutMs: number;
  readonly memoryLimitMb: number;
  readonly maxScriptBytes: number;
  readonly logLevel: LogLevel;
  /** How log lines look: JSON lines, pino-pretty's readable lines, or pretty only at a terminal. */
  readonly logFormat: LogFormat;
  /** Chunks of rows waiting for a worker, over all calls, before new calls are refused as busy. */
  readonly maxQueue: number;
  /**
   * Bytes the front holds for all calls together, in MB: rows waiting for or in a sandbox, results
   * waiting their turn, held tables, replies the client has not taken (src/calls/held-bytes.ts).
   */
  readonly maxHeldMb: number;
  /** Target size of one chunk (one task's rows), cut at row boundaries (KiB): see bench/RESULTS.md. */
  readonly chunkKb: number;
  /** Largest request message (one BundledRows) the server accepts. */
  readonly maxMessageBytes: number;
  readonly metricsPort: number | undefined;
  readonly metricsHost: string;
  readonly shutdownGraceMs: number;
  /** Folder of the administrator's plugin function files (src/functions/); unset: no functions. */
  readonly functionsDir: string | undefined;
  /**
   * Open connections to the gRPC port at most (src/grpc/admission.ts); undefined: derived from the
   * process's descriptor limit so that connections can never starve sandbox spawns.
   */
  readonly maxConnections: number | undefined;
  /** Open connections from one client host at most; undefined: half of maxConnections. */
  readonly maxConnectionsPerHost: number | undefined;
  /**
   * The part of SSE_MAX_HELD_MB and of the open-call bound one client host may use, in percent
   * (src/calls/host-shares.ts); 100 behind a load balancer, where every call comes from one host.
   */
  readonly hostSharePercent: number;
  /** A call whose client takes none of its replies for this long is reset (src/grpc/unread-replies.ts). */
  readonly unreadReplyTimeoutMs: number;
  /** Client addresses sharing this many leading bits are one host for its shares (src/grpc/client-hosts.ts). */
  readonly clientPrefixV4: number;
  readonly clientPrefixV6: number;
  /**
   * Addresses and networks of Qlik's engines (SSE_PRIORITY_HOSTS): each address a host of its own that
   * goes ahead of every other in the fair queue (src/sandboxes/task-queue.ts); empty: none.
   */
  readonly priorityHosts: readonly string[];
  /** A new connection must finish its TLS handshake / send the HTTP/2 preface within this time. */
  readonly handshakeTimeoutMs: number;
  /** A connection with no call open for this long is closed (GOAWAY; clients reconnect on their next call). */
  readonly idleTimeoutMs: number;
  /**
   * Listening sockets systemd handed over (socket activation: LISTEN_FDS for this pid); undefined: the
   * plugin binds SSE_HOST:SSE_PORT itself. With them the service may run in a network namespace of its
   * own (PrivateNetwork=yes): it accepts on the host's sockets and can connect nowhere.
   */
  readonly inheritedSockets: InheritedSockets | undefined;
  /** SSE_LIBRARIES: the bundled libraries scripts may require; undefined: all; []: none (src/libraries/). */
  readonly libraries: readonly string[] | undefined;
  /** Folder of the administrator's single-file libraries; unset: none. */
  readonly librariesDir: string | undefined;
  /** Console lines and bytes one call keeps in the log; the rest is counted in one line (src/calls/call-console.ts). */
  readonly consoleLines: number;
  readonly consoleBytes: number;
  /** Console text all calls together may write to the log, in KiB a second; 0: no bound. */
  readonly consoleRateKb: number;
}

export interface InheritedSockets {
  readonly grpcFd: number;
  readonly metricsFd: number | undefined;
}

/** The first descriptor systemd passes (SD_LISTEN_FDS_START). */
const LISTEN_FDS_START = 3;

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'auto' | 'json' | 'pretty';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** The hard ceiling for SSE_MAX_SCRIPT_BYTES: base64 of 49152 bytes is 64 KiB, HTTP/2's header field limit. */
export const MAX_SCRIPT_BYTES_CEILING = 49_152;

/**
 * The front's default budget of bytes held for calls (SSE_MAX_HELD_MB): a full queue of rows at the
 * defaults (SSE_MAX_QUEUE x 256 KiB = 128 MB) plus one table of the largest size a call may return
 * (SSE_MEMORY_LIMIT_MB, 128 MB) while its chunks and the joined copy both exist (256 MB), and room
 * for replies on their way: together with Node's own ~100 MB the front stays within about 650 MB.
 */
export const DEFAULT_MAX_HELD_MB = 512;

/**
 * Half, as for connections (SSE_MAX_CONNECTIONS_PER_HOST): whatever one host holds, another finds at
 * least half of the held bytes and of the open-call slots free. A share that shrank with the number of
 * hosts would not free what the first host already holds, so a newcomer could still find none.
 */
export const DEFAULT_HOST_SHARE_PERCENT = 50;

/**
 * Qlik's engine reads replies as they come: a 4 MiB reply message takes well under a second on a LAN.
 * Thirty seconds leave room for a slow WAN or an overloaded engine, while a client that reads nothing
 * holds its replies (SSE_MAX_HELD_MB) for thirty seconds, not for as long as its connection lives.
 */
export const DEFAULT_UNREAD_REPLY_TIMEOUT_MS = 30_000;

/**
 * A TLS handshake with client certificates takes a few milliseconds on a LAN (one round trip more
 * than plaintext); ten seconds leave room for a slow WAN or an overloaded engine host while a client
 * that connects and sends nothing holds its descriptor for ten seconds, not Node's default 120.
 */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * Qlik keeps one HTTP/2 connection per engine and opens a new one on its next call after a GOAWAY;
 * five minutes keep an engine that calls every few minutes on one connection and free the slot of a
 * client that went quiet (or vanished without a FIN) soon enough. A connection with a call open is
 * never closed by this rule.
 */
export const DEFAULT_IDLE_TIMEOUT_MS = 300_000;

/**
 * A client with many addresses gets one share, not one per address: an IPv4 /24 is the block address
 * aliases come from, an IPv6 /64 what one site or machine is given. 32 and 128: one share per address.
 */
export const DEFAULT_CLIENT_PREFIX_V4 = 24;
export const DEFAULT_CLIENT_PREFIX_V6 = 64;

interface Variable<T> {
  readonly schema: z.ZodType<T, string>;
  readonly accepts: string;
}

function integer(min: number, max: number): Variable<number> {
  return {
    schema: z.string().regex(/^\d+$/).transform(Number).pipe(z.number().int().min(min).max(max)),
    accepts: `an integer from ${min} to ${max}`,
  };
}

const boolean: Variable<boolean> = {
  schema: z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1'),
  accepts: 'true or false',
};

const logLevel: Variable<LogLevel> = {
  schema: z.enum(['debug', 'info', 'warn', 'error']),
  accepts: 'debug, info, warn or error',
};

const logFormat: Variable<LogFormat> = {
  schema: z.enum(['auto', 'json', 'pretty']),
  accepts: 'auto, json or pretty',
};

/** `none`, or entries separated by commas, each checked by `entry`. */
function noneOrList(entry: z.ZodType<string, string>, accepts: string): Variable<string[]> {
  return {
    schema: z
      .string()
      .transform((v) => (v.trim().toLowerCase() === 'none' ? [] : v.split(',').map((item) => item.trim())))
      .pipe(z.array(entry)),
    accepts,
  };
}

const libraryNames = noneOrList(
  z.string().regex(LIBRARY_NAME),
  'none, or library names separated by commas (simple-statistics,date-fns,d3-array,qlik)',
);

/** Addresses and networks (`10.0.0.7`, `10.0.0.0/28`, `2001:db8::/64`). */
const addressList = noneOrList(
  z.string().refine(isAddressOrNetwork),
  'none, or IP addresses and networks separated by commas (10.0.0.7,10.0.1.0/28,2001:db8::/64)',
);

const nonEmpty: Variable<string> = {
  schema: z.string().trim().min(1),
  accepts: 'a non-empty value',
};

/**
 * Up to four threads a process. Measured with 2 workers on 2 cores (bench/RESULTS.md): one process
 * of two threads ran 0.92-0.96 of the thread design's rows/s and idled at 87 MB, two processes of
 * one thread 0.75-0.81 and 138 MB (every process is a Node.js runtime and a channel more, competing
 * for the same cores). A process that dies costs the tasks of its threads a retry (docs/operations.md "Sandbox
 * processes"): four bounds that.
 */
/**
 * Sandbox threads run at niceness 10, the front at its own (0 as usually started): on a contended CPU
 * the front's gRPC work goes first, so scripts that keep every core busy cannot starve health checks,
 * cancellations or other calls' replies, and a woken sandbox no longer preempts the front in the middle
 * of a write. Measured (bench/RESULTS.md): numeric rows/s +16 % on average of four runs, text +5 %,
 * small-call latency unchanged.
 */
export const DEFAULT_SANDBOX_NICE = 10;

/**
 * One spare sandbox process: a process that dies is replaced at once by one already READY, so other
 * users' calls do not wait the 0.5-1.2 s a new process takes to start (measured on 2 cores, loaded).
 * It costs the idle memory of one process (docs/operations.md "Sandbox processes").
 */
export const DEFAULT_SPARE_SANDBOXES = 1;

/**
 * A script's console, per call: enough lines to follow a few rows of a debugging session, and bytes
 * for a few objects printed whole. A LOAD that logs every row would write millions of lines: past
 * these a call's lines are counted in one line, so the log and the front's memory stay bounded.
 */
export const DEFAULT_CONSOLE_LINES = 100;
export const DEFAULT_CONSOLE_BYTES = 64 * 1024;
/**
 * All calls' console text together, KiB a second: 60 MiB of log a minute at most, sixteen calls' full
 * share a second (four looping clients wrote 1.1 GB a minute unbounded).
 */
export const DEFAULT_CONSOLE_RATE_KB = 1024;

/**
 * Listening on loopback, the plugin's client is the Qlik engine on the same machine, which connects from
 * 127.0.0.1 (or ::1): it goes ahead of any other local process that binds another loopback address
 * (src/grpc/client-hosts.ts). Elsewhere the engines' addresses are the administrator's to list.
 */
export function defaultPriorityHosts(host: string): string[] {
  return ['127.0.0.1', 'localhost', '::1', '[::1]'].includes(host) ? ['127.0.0.1', '::1'] : [];
}

export function defaultSandboxProcesses(workers: number): number {
  return Math.ceil(workers / 4);
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  function read<T>(name: string, variable: Variable<T>, fallback: T): T {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const parsed = variable.schema.safeParse(raw.trim());
    if (parsed.success) return parsed.data;
    problems.push(`${name}=${JSON.stringify(raw)} is invalid: expected ${variable.accepts}`);
    return fallback;
  }
  function optional<T>(name: string, variable: Variable<T>): T | undefined {
    return read<T | undefined>(name, variable as Variable<T | undefined>, undefined);
  }

  const tlsDir = optional('SSE_TLS_DIR', nonEmpty);
  const host = read('SSE_HOST', nonEmpty, tlsDir === undefined ? '127.0.0.1' : '0.0.0.0');
  const workers = read('SSE_WORKERS', integer(1, 256), availableParallelism());
  const sandboxProcesses = read('SSE_SANDBOX_PROCESSES', integer(1, workers), defaultSandboxProcesses(workers));
  const inherited = inheritedSockets(env, problems);
  const config: Config = {
    port: read('SSE_PORT', integer(0, 65_535), 50_051),
    host,
    tlsDir,
    allowScript: read('SSE_ALLOW_SCRIPT', boolean, true),
    workers,
    sandboxProcesses,
    spareSandboxes: read('SSE_SPARE_SANDBOXES', integer(0, 4), DEFAULT_SPARE_SANDBOXES),
    sandboxMemoryMb: optional('SSE_SANDBOX_MEMORY_MB', integer(64, 1_048_576)),
    sandboxNice: read('SSE_SANDBOX_NICE', integer(0, 19), DEFAULT_SANDBOX_NICE),
    sandboxUser: optional('SSE_SANDBOX_USER', nonEmpty),
    sandboxGroup: optional('SSE_SANDBOX_GROUP', nonEmpty),
    fastPathMs: read('SSE_FAST_PATH_MS', integer(0, 1_000), DEFAULT_FAST_PATH_MS),
    scriptTimeoutMs: read('SSE_SCRIPT_TIMEOUT_MS', integer(1, 3_600_000), 5_000),
    memoryLimitMb: read('SSE_MEMORY_LIMIT_MB', integer(8, 65_536), 128),
    maxScriptBytes: read('SSE_MAX_SCRIPT_BYTES', integer(1, MAX_SCRIPT_BYTES_CEILING), 32_768),
    logLevel: read('SSE_LOG_LEVEL', logLevel, 'info'),
    logFormat: read('SSE_LOG_FORMAT', logFormat, 'auto'),
    maxQueue: read('SSE_MAX_QUEUE', integer(1, 1_000_000), 512),
    maxHeldMb: read('SSE_MAX_HELD_MB', integer(16, 1_048_576), DEFAULT_MAX_HELD_MB),
    chunkKb: read('SSE_CHUNK_KB', integer(16, 4_096), 256),
    maxMessageBytes: read('SSE_MAX_MESSAGE_BYTES', integer(1_024, 1_073_741_824), 16 * 1024 * 1024),
    // A metrics socket from systemd serves /metrics whatever SSE_METRICS_PORT says (the socket unit sets the port).
    metricsPort: optional('SSE_METRICS_PORT', integer(0, 65_535)) ?? (inherited?.metricsFd === undefined ? undefined : 0),
    // Loopback unless said otherwise: the endpoint has no authentication (a scrape flood slows calls).
    metricsHost: read('SSE_METRICS_HOST', nonEmpty, '127.0.0.1'),
    shutdownGraceMs: read('SSE_SHUTDOWN_GRACE_MS', integer(0, 3_600_000), 10_000),
    functionsDir: optional('SSE_FUNCTIONS_DIR', nonEmpty),
    maxConnections: optional('SSE_MAX_CONNECTIONS', integer(1, 1_000_000)),
    maxConnectionsPerHost: optional('SSE_MAX_CONNECTIONS_PER_HOST', integer(1, 1_000_000)),
    hostSharePercent: read('SSE_HOST_SHARE_PERCENT', integer(1, 100), DEFAULT_HOST_SHARE_PERCENT),
    unreadReplyTimeoutMs: read('SSE_UNREAD_REPLY_TIMEOUT_MS', integer(100, 3_600_000), DEFAULT_UNREAD_REPLY_TIMEOUT_MS),
    clientPrefixV4: read('SSE_CLIENT_PREFIX_V4', integer(0, 32), DEFAULT_CLIENT_PREFIX_V4),
    clientPrefixV6: read('SSE_CLIENT_PREFIX_V6', integer(0, 128), DEFAULT_CLIENT_PREFIX_V6),
    priorityHosts: read('SSE_PRIORITY_HOSTS', addressList, defaultPriorityHosts(host)),
    handshakeTimeoutMs: read('SSE_HANDSHAKE_TIMEOUT_MS', integer(100, 600_000), DEFAULT_HANDSHAKE_TIMEOUT_MS),
    idleTimeoutMs: read('SSE_IDLE_TIMEOUT_MS', integer(100, 86_400_000), DEFAULT_IDLE_TIMEOUT_MS),
    inheritedSockets: inherited,
    libraries: optional('SSE_LIBRARIES', libraryNames),
    librariesDir: optional('SSE_LIBRARIES_DIR', nonEmpty),
    consoleLines: read('SSE_CONSOLE_LINES', integer(0, MAX_CONSOLE_LINES), DEFAULT_CONSOLE_LINES),
    consoleBytes: read('SSE_CONSOLE_BYTES', integer(0, MAX_CONSOLE_BYTES), DEFAULT_CONSOLE_BYTES),
    consoleRateKb: read('SSE_CONSOLE_RATE_KB', integer(0, 1024 * 1024), DEFAULT_CONSOLE_RATE_KB),
  };
  if (problems.length > 0) throw new ConfigError(problems.join('; '));
  return config;
}

/**
 * sd_listen_fds(3): LISTEN_PID names the process the sockets are for (a child does not take its
 * parent's); LISTEN_FDS counts them from fd 3, in the order of the socket unit's Listen lines;
 * LISTEN_FDNAMES may name one "metrics" (FileDescriptorName=metrics), else the second is the metrics one.
 */
function inheritedSockets(env: NodeJS.ProcessEnv, problems: string[]): InheritedSockets | undefined {
  if (env['LISTEN_PID'] !== String(process.pid) || env['LISTEN_FDS'] === undefined) return undefined;
  const count = Number(env['LISTEN_FDS']);
  if (!(count === 1 || count === 2)) {
    problems.push(
      `LISTEN_FDS=${JSON.stringify(env['LISTEN_FDS'])} is invalid: expected 1 (gRPC) or 2 (gRPC and metrics) sockets from systemd`,
    );
    return undefined;
  }
  const names = (env['LISTEN_FDNAMES'] ?? '').split(':');
  const named = names.indexOf('metrics');
  const metricsIndex = named >= 0 && named < count ? named : count === 2 ? 1 : undefined;
  const grpcIndex = metricsIndex === 0 ? 1 : 0;
  if (grpcIndex >= count) {
    problems.push('LISTEN_FDNAMES: systemd passed only the metrics socket; the gRPC socket must come too');
    return undefined;
  }
  return { grpcFd: LISTEN_FDS_START + grpcIndex, metricsFd: metricsIndex === undefined ? undefined : LISTEN_FDS_START + metricsIndex };
}
