/**
 * Entry point: validate the environment, start the plugin, log how to reach it, and stop cleanly
 * on SIGTERM/SIGINT (drain calls, dispose sandboxes, close the pool, exit 0).
 */
import { startPlugin } from './app';
import { loadConfig, ConfigError, type Config } from './config';
import { createLogger, type Logger } from './log';
import { PLUGIN_VERSION } from './capabilities';

function logStartup(logger: Logger, config: Config, port: number, metricsPort: number | undefined): void {
  const tls = config.tlsDir !== undefined;
  const reachableHost = ['0.0.0.0', '::'].includes(config.host) ? '<this machine\'s host name>' : config.host;
  logger.info(
    {
      version: PLUGIN_VERSION,
      host: config.host,
      port,
      tls,
      tlsDir: config.tlsDir,
      workers: config.workers,
      scriptTimeoutMs: config.scriptTimeoutMs,
      memoryLimitMb: config.memoryLimitMb,
      maxScriptBytes: config.maxScriptBytes,
      maxQueue: config.maxQueue,
      maxMessageBytes: config.maxMessageBytes,
      allowScript: config.allowScript,
      metricsPort,
    },
    `listening on ${config.host}:${port} (${tls ? 'mutual TLS' : 'plaintext, no TLS'})`,
  );
  logger.info(
    `Qlik Settings.ini [Settings 7]: SSEPlugin=JS,${reachableHost}:${port}${tls ? ',<folder with root_cert.pem, sse_client_cert.pem, sse_client_key.pem>' : ''}` +
      ` | QMC > Analytic connections: Name=JS, Host=${reachableHost}, Port=${port}${tls ? ', Certificate file path=<that folder>' : ''}`,
  );
  if (['127.0.0.1', 'localhost', '::1'].includes(config.host)) {
    logger.warn('listening on loopback only: a Qlik engine on another machine cannot connect; set SSE_HOST=0.0.0.0 (and SSE_TLS_DIR) to accept remote engines');
  }
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`configuration error: ${error.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw error;
  }
  const logger = createLogger(config.logLevel);
  const plugin = await startPlugin(config, logger);
  logStartup(logger, config, plugin.port, plugin.metricsPort);
  const shutdown = (signal: string): void => {
    logger.info({ signal, graceMs: config.shutdownGraceMs }, 'stopping: no new calls, finishing calls in flight');
    plugin.stop().then(
      () => {
        logger.info('stopped');
        process.exitCode = 0;
      },
      (error: unknown) => {
        logger.error({ err: error }, 'error while stopping');
        process.exitCode = 1;
      },
    );
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

main().catch((error: unknown) => {
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`failed to start: ${message}\n`);
  process.exitCode = 1;
});
