/**
 * Composition root: config -> descriptor budget -> sandbox processes -> server (+ metrics). Used by
 * main.ts and by the tests, which start the real plugin on 127.0.0.1:0.
 */
import type http from 'node:http';
import type net from 'node:net';
import { HeldBytes } from './calls/held-bytes';
import { FailedLines, LogRate } from './calls/log-rate';
import { OpenCallSlots } from './calls/open-calls';
import { FunctionRegistry } from './functions/registry';
import { type DescriptorBudget, descriptorBudget, METRICS_MAX_CONNECTIONS, readDescriptorLimit } from './grpc/admission';
import { ClientHosts } from './grpc/client-hosts';
import { type RunningServer, startServer } from './grpc/server';
import { LibraryRegistry } from './libraries/registry';
import type { Config } from './ops/config';
import { collectOnExternalGrowth, EXTERNAL_MEMORY_DEFAULTS } from './ops/external-memory';
import { createLogger, type Logger } from './ops/log';
import { Metrics } from './ops/metrics';
import { SandboxPool } from './sandboxes/pool';
import { type Confinement, prepareConfinement } from './sandboxes/sandbox-confinement';
import { SandboxProcess } from './sandboxes/sandbox-process';

export interface Plugin {
  readonly port: number;
  readonly metricsPort: number | undefined;
  readonly pool: SandboxPool;
  /** Bytes held for all calls together (SSE_MAX_HELD_MB). */
  readonly held: HeldBytes;
  /** Calls open at once, and each client host's share of them (src/calls/open-calls.ts). */
  readonly openCalls: OpenCallSlots;
  readonly logger: Logger;
  /** The connection limit in force and the descriptor limit it was derived from. */
  readonly connections: DescriptorBudget;
  /** The sandbox processes' user and layers in force, for the start-up log. */
  readonly confinement: Confinement;
  /** The libraries scripts may require (SSE_LIBRARIES, SSE_LIBRARIES_DIR). */
  readonly libraries: LibraryRegistry;
  /**
   * Stop taking calls, let in-flight calls finish (up to graceMs, then they are cancelled), end the
   * sandbox processes, close the metrics endpoint.
   */
  stop(graceMs?: number): Promise<void>;
}

/** With no sandbox process ready for this long (a crash loop), health says NOT_SERVING. */
const UNAVAILABLE_GRACE_MS = 5_000;
/** A scrape is one small GET: a connection that has not sent its request by then is closed. */
const METRICS_REQUEST_TIMEOUT_MS = 10_000;
/** Requests one metrics connection may make before it is closed (the scraper reconnects). */
const METRICS_REQUESTS_PER_CONNECTION = 16;

export async function startPlugin(
  config: Config,
  logger: Logger = createLogger(config.logLevel, undefined, config.logFormat),
): Promise<Plugin> {
  let metrics: Metrics | undefined;
  let running: RunningServer | undefined;
  // Checked before anything starts: a SSE_MAX_CONNECTIONS that does not fit stops the start (ConfigError).
  const connections = descriptorBudget(readDescriptorLimit(), {
    sandboxProcesses: config.sandboxProcesses + config.spareSandboxes,
    metrics: config.metricsPort !== undefined,
    maxConnections: config.maxConnections,
    maxConnectionsPerHost: config.maxConnectionsPerHost,
  });
  // Decided before any sandbox process starts: an SSE_SANDBOX_USER that cannot be honoured stops the start.
  const confinement = prepareConfinement(config);
  // Read before anything starts: a folder that cannot be read stops the start (ConfigError).
  const functions = config.functionsDir === undefined ? undefined : await FunctionRegistry.open(config.functionsDir, logger);
  let draining = false;
  let unavailableTimer: NodeJS.Timeout | undefined;
  const pool = new SandboxPool(
    { ...config },
    logger,
    {
      restarted: (reason) => metrics?.sandboxRestarts.inc({ reason }),
      refusedBusy: () => metrics?.busyRefusals.inc(),
      availability: (available) => {
        clearTimeout(unavailableTimer);
        if (available && !draining) running?.setServing('SERVING');
        if (!available) unavailableTimer = setTimeout(() => running?.setServing('NOT_SERVING'), UNAVAILABLE_GRACE_MS).unref();
      },
    },
    (index, settings, listener, log) => new SandboxProcess(index, settings, listener, log, confinement),
  );
  const held = new HeldBytes(config.maxHeldMb, config.hostSharePercent, () => metrics?.busyRefusals.inc());
  const openCalls = new OpenCallSlots(pool.maxOpenCalls, config.hostSharePercent, () => metrics?.busyRefusals.inc());
  metrics = new Metrics(pool, held);
  let libraries: LibraryRegistry | undefined;
  try {
    // Before the processes start: each gets the set ahead of its first task.
    libraries = await LibraryRegistry.open(config, logger, (frame) => pool.setLibraries(frame));
    await pool.start();
    const consoleRate = LogRate.forConsole(config);
    running = await startServer(
      {
        config,
        pool,
        held,
        openCalls,
        consoleRate,
        failedLines: new FailedLines(),
        clientHosts: new ClientHosts(config),
        logger,
        metrics,
        draining: () => draining,
        functions,
      },
      connections,
    );
  } catch (error) {
    functions?.close();
    libraries?.close();
    await pool.close();
    throw error;
  }
  const offered = libraries;
  let metricsServer: http.Server | undefined;
  let metricsPort: number | undefined;
  if (config.metricsPort !== undefined) {
    try {
      ({ server: metricsServer, port: metricsPort } = await metrics.listen(
        config.metricsHost,
        config.metricsPort,
        config.inheritedSockets?.metricsFd,
      ));
      boundMetricsConnections(metricsServer, logger);
    } catch (error) {
      running.stopListening();
      running.server.forceShutdown();
      functions?.close();
      offered.close();
      await pool.close();
      const reason = error instanceof Error ? error.message : String(error);
      throw new Error(`cannot serve metrics on ${config.metricsHost}:${config.metricsPort} (SSE_METRICS_PORT): ${reason}`, {
        cause: error,
      });
    }
  }
  running.setServing('SERVING');
  const server = running;
  const callMetrics = metrics;
  const stopCollecting = collectOnExternalGrowth({
    ...EXTERNAL_MEMORY_DEFAULTS,
    collected: ({ beforeBytes, afterBytes, pauseMs }) => {
      callMetrics.forcedCollections.inc();
      logger.debug({ beforeBytes, afterBytes, pauseMs: Math.round(pauseMs) }, 'native memory grew: forced a collection');
    },
  });

  let stopping: Promise<void> | undefined;
  const stop = (graceMs = config.shutdownGraceMs): Promise<void> => {
    stopping ??= (async () => {
      const deadline = Date.now() + graceMs;
      draining = true;
      stopCollecting();
      functions?.close();
      offered.close();
      clearTimeout(unavailableTimer);
      server.setServing('NOT_SERVING');
      await callsEnded(callMetrics, deadline);
      if (callMetrics.callsInFlight > 0)
        logger.warn({ calls: callMetrics.callsInFlight, graceMs }, 'grace period over: cancelling the calls still running');
      await shutdownServer(server, deadline);
      await pool.close();
      await new Promise<void>((resolve) => (metricsServer ? metricsServer.close(() => resolve()) : resolve()));
    })();
    return stopping;
  };
  return { port: running.port, metricsPort, pool, held, openCalls, logger, connections, confinement, libraries: offered, stop };
}

/**
 * The metrics endpoint holds descriptors too (reserved in the budget): a bounded number of
 * connections, each with a short time to send its request; its errors are logged, never thrown.
 * A newcomer past the bound closes the oldest connection not being answered (one still sending its
 * request, or kept alive between requests; Node's own maxConnections drops the newcomer: 8 connections sending a byte every 500 ms, reopened
 * as they were closed, failed every Prometheus scrape); when every one is serving, the newcomer goes.
 */
function boundMetricsConnections(server: http.Server, logger: Logger): void {
  server.headersTimeout = METRICS_REQUEST_TIMEOUT_MS;
  server.requestTimeout = METRICS_REQUEST_TIMEOUT_MS;
  // A scraper sends one request at a time; 8 connections pipelining thousands each, never reading,
  // kept every connection "being answered" and stalled the front 8-15 s while it rendered them.
  server.maxRequestsPerSocket = METRICS_REQUESTS_PER_CONNECTION;
  // Past it Node answers every further pipelined request 503 while the client sends them: 64
  // connections pipelining 20,000 each kept the front busy writing 503s. Such a client is closed.
  server.on('dropRequest', (_request: http.IncomingMessage, socket: net.Socket) => socket.destroy());
  const waiting = new Set<net.Socket>();
  const serving = new Set<net.Socket>();
  server.on('connection', (socket: net.Socket) => {
    if (waiting.size + serving.size >= METRICS_MAX_CONNECTIONS) {
      const [oldest] = waiting;
      if (oldest === undefined) return void socket.destroy();
      waiting.delete(oldest);
      oldest.destroy();
    }
    waiting.add(socket);
    socket.once('close', () => {
      waiting.delete(socket);
      serving.delete(socket);
    });
  });
  server.on('request', (request: http.IncomingMessage, response: http.ServerResponse) => {
    const socket = request.socket;
    if (!waiting.delete(socket)) return;
    serving.add(socket);
    // Answered: a kept-alive connection waits for its next request, and may be taken like any waiting one.
    response.once('finish', () => {
      if (serving.delete(socket) && !socket.destroyed) waiting.add(socket);
    });
  });
  server.on('error', (error) => logger.error({ err: error }, 'metrics endpoint error'));
}

const DRAIN_POLL_MS = 25;
/** Once the script calls are done, how long other calls (health checks, Watch streams) get to end. */
const CLOSE_WAIT_MS = 500;

/**
 * While draining the server keeps its port open: new script calls are refused with UNAVAILABLE
 * (a message saying why, instead of a dropped connection) and health checks answer NOT_SERVING,
 * so a load balancer or orchestrator sees the state. The port closes once the calls in flight end.
 */
async function callsEnded(metrics: Metrics, deadline: number): Promise<void> {
  while (metrics.callsInFlight > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, Math.min(DRAIN_POLL_MS, Math.max(1, deadline - Date.now()))));
  }
}

/** tryShutdown lets calls still open finish; at the deadline, forceShutdown cancels them. */
async function shutdownServer(running: RunningServer, deadline: number): Promise<void> {
  const waitMs = Math.max(0, Math.min(deadline - Date.now(), CLOSE_WAIT_MS));
  running.stopListening();
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      running.server.forceShutdown();
      resolve();
    }, waitMs);
    running.server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
  running.destroyConnections();
}
