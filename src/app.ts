/**
 * Composition root: config -> pool -> server (+ metrics). Used by main.ts and by the tests, which
 * start the real plugin on 127.0.0.1:0.
 */
import type http from 'node:http';

import type { Config } from './config';
import { createLogger, type Logger } from './log';
import { Metrics } from './metrics';
import { WorkerPool } from './pool';
import { startServer, type RunningServer } from './server';

export interface Plugin {
  readonly port: number;
  readonly metricsPort: number | undefined;
  readonly pool: WorkerPool;
  readonly logger: Logger;
  /** Stop taking calls, let in-flight calls finish (up to graceMs), close the pool. */
  stop(graceMs?: number): Promise<void>;
}

export async function startPlugin(config: Config, logger: Logger = createLogger(config.logLevel)): Promise<Plugin> {
  const pool = new WorkerPool(config);
  const metrics = new Metrics(pool);
  let draining = false;
  let running: RunningServer;
  try {
    running = await startServer({ config, pool, logger, metrics, draining: () => draining });
  } catch (error) {
    await pool.close();
    throw error;
  }
  let metricsServer: http.Server | undefined;
  let metricsPort: number | undefined;
  if (config.metricsPort !== undefined) {
    ({ server: metricsServer, port: metricsPort } = await metrics.listen(config.metricsHost, config.metricsPort));
  }
  running.setServing('SERVING');

  let stopping: Promise<void> | undefined;
  const stop = (graceMs = config.shutdownGraceMs): Promise<void> => {
    stopping ??= (async () => {
      draining = true;
      running.setServing('NOT_SERVING');
      await shutdownServer(running, graceMs);
      await pool.close();
      await new Promise<void>((resolve) => (metricsServer ? metricsServer.close(() => resolve()) : resolve()));
    })();
    return stopping;
  };
  return { port: running.port, metricsPort, pool, logger, stop };
}

/** tryShutdown lets in-flight calls finish; past the grace period, forceShutdown cancels them. */
async function shutdownServer(running: RunningServer, graceMs: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      running.server.forceShutdown();
      resolve();
    }, graceMs);
    running.server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
