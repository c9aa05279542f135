/**
 * Composition root: config -> pool -> server (+ metrics). Used by main.ts and by the tests, which
 * start the real plugin on 127.0.0.1:0.
 */
import type http from 'node:http';

import type { Config } from './config';
import { FunctionRegistry } from './functions/registry';
import { createLogger, type Logger } from './log';
import { Metrics } from './metrics';
import { WorkerPool } from './pool';
import { startServer, type RunningServer } from './server';

export interface Plugin {
  readonly port: number;
  readonly metricsPort: number | undefined;
  readonly pool: WorkerPool;
  readonly logger: Logger;
  /**
   * Stop taking calls, let in-flight calls finish (up to graceMs, then they are cancelled), close
   * the pool (its workers dispose their isolates), close the metrics endpoint.
   */
  stop(graceMs?: number): Promise<void>;
  /**
   * Called when as many sandbox threads as the pool allows are stuck in native code (src/pool.ts):
   * health is NOT_SERVING from then on and the process should be restarted to free their memory.
   */
  onDegraded(listener: () => void): void;
}

export async function startPlugin(config: Config, logger: Logger = createLogger(config.logLevel)): Promise<Plugin> {
  // Read before anything starts: a folder that cannot be read stops the start (ConfigError).
  const functions = config.functionsDir === undefined ? undefined : await FunctionRegistry.open(config.functionsDir, logger);
  const pool = new WorkerPool(config);
  const metrics = new Metrics(pool);
  let draining = false;
  let running: RunningServer;
  try {
    await pool.ready();
    running = await startServer({ config, pool, logger, metrics, draining: () => draining, functions });
  } catch (error) {
    functions?.close();
    await pool.close();
    throw error;
  }
  let metricsServer: http.Server | undefined;
  let metricsPort: number | undefined;
  if (config.metricsPort !== undefined) {
    try {
      ({ server: metricsServer, port: metricsPort } = await metrics.listen(config.metricsHost, config.metricsPort));
    } catch (error) {
      running.server.forceShutdown();
      functions?.close();
      await pool.close();
      const reason = error instanceof Error ? error.message : String(error);
      throw new Error(`cannot serve metrics on ${config.metricsHost}:${config.metricsPort} (SSE_METRICS_PORT): ${reason}`, { cause: error });
    }
  }
  running.setServing('SERVING');
  const degradedListeners: (() => void)[] = [];
  pool.onDegraded = () => {
    logger.error(
      { lostWorkers: pool.lostWorkers },
      'sandbox threads are stuck in native code after fatal out-of-memory errors in scripts; the plugin must restart to free their memory',
    );
    running.setServing('NOT_SERVING');
    for (const listener of degradedListeners) listener();
  };

  let stopping: Promise<void> | undefined;
  const stop = (graceMs = config.shutdownGraceMs): Promise<void> => {
    stopping ??= (async () => {
      const deadline = Date.now() + graceMs;
      draining = true;
      functions?.close();
      running.setServing('NOT_SERVING');
      await callsEnded(metrics, deadline);
      if (metrics.callsInFlight > 0) logger.warn({ calls: metrics.callsInFlight, graceMs }, 'grace period over: cancelling the calls still running');
      await shutdownServer(running, deadline);
      await pool.close();
      await new Promise<void>((resolve) => (metricsServer ? metricsServer.close(() => resolve()) : resolve()));
    })();
    return stopping;
  };
  return { port: running.port, metricsPort, pool, logger, stop, onDegraded: (listener) => void degradedListeners.push(listener) };
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
}
