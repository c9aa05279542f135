/**
 * Entry point: validate the environment and the certificates, start the plugin, log how to reach
 * it, and stop cleanly on SIGTERM/SIGINT (drain calls, dispose sandboxes, close the pool, exit 0).
 */
import { type Plugin, startPlugin } from './app';
import { type Config, ConfigError, loadConfig } from './ops/config';
import { abandonPendingLogLines, createLogger, type Logger, logLinesWritten } from './ops/log';
import { logStartup } from './ops/startup-log';
import { loadTlsFiles, type TlsFiles } from './ops/tls';
import { logConfinement } from './sandboxes/sandbox-confinement';

/** After stop() the process should end by itself; if a handle still holds it, exit anyway. */
const EXIT_WATCHDOG_MS = 3_000;
/**
 * A second signal exits without waiting for calls, but gives stdout this long to take the last lines:
 * exiting at once dropped its own "second signal" line now and then (the write was still in flight).
 */
const LAST_LINES_WAIT_MS = 200;

const EXIT_CONFIG = 2;
const EXIT_FAILURE = 1;

/** Start-up failures go to stderr for a person at a console and as a JSON line for the log pipeline. */
function failStart(logger: Logger | undefined, error: unknown): void {
  const configProblem = error instanceof ConfigError;
  const message = error instanceof Error ? error.message : String(error);
  const text = configProblem ? `configuration error: ${message}` : `failed to start: ${message}${bindHint(message)}`;
  logger?.fatal(text);
  process.stderr.write(`${text}\n`);
  process.exitCode = configProblem ? EXIT_CONFIG : EXIT_FAILURE;
}

function bindHint(message: string): string {
  const variable = message.includes('SSE_METRICS_PORT') ? 'SSE_METRICS_PORT' : 'SSE_PORT';
  if (/EADDRINUSE/.test(message)) return ` — another process already uses that port: stop it or choose another ${variable}`;
  if (/EADDRNOTAVAIL/.test(message)) return ' — SSE_HOST is not an address of this machine';
  if (/EACCES/.test(message)) return ' — this user may not listen on that port (ports below 1024 need privileges)';
  return '';
}

function handleSignals(logger: Logger, config: Config, plugin: Plugin): void {
  let signals = 0;
  const stopThenExit = (reason: string, code: number): void => {
    if (++signals > 1) {
      logger.warn({ reason }, 'second signal: exiting without waiting for calls in flight');
      return exitNow(EXIT_FAILURE);
    }
    const started = performance.now();
    logger.info(
      { reason, graceMs: config.shutdownGraceMs },
      'stopping: refusing new calls, finishing calls in flight (SSE_SHUTDOWN_GRACE_MS)',
    );
    plugin.stop().then(
      () => {
        logger.info({ stopMs: Math.round(performance.now() - started) }, 'stopped: sandbox processes ended');
        exitWhenIdle(logger, code);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'error while stopping');
        exitWhenIdle(logger, EXIT_FAILURE);
      },
    );
  };
  process.on('SIGTERM', () => stopThenExit('SIGTERM', 0));
  process.on('SIGINT', () => stopThenExit('SIGINT', 0));
}

/**
 * Exits without waiting for calls, once stdout took the last lines or LAST_LINES_WAIT_MS passed; sandbox
 * processes end themselves when their channel closes (workers/sandbox-main.ts).
 */
function exitNow(code: number): void {
  process.exitCode = code;
  void logLinesWritten(LAST_LINES_WAIT_MS).then(() => {
    abandonPendingLogLines();
    process.exit(code);
  });
}

function exitWhenIdle(logger: Logger, code: number): void {
  // A second signal's exit code stands (exitNow may still be waiting for stdout).
  process.exitCode ??= code;
  setTimeout(() => {
    logger.warn({ handles: process.getActiveResourcesInfo() }, 'still running after stop; exiting');
    abandonPendingLogLines();
    process.exit(code);
  }, EXIT_WATCHDOG_MS).unref();
}

/** The bounds on connections, and the descriptor limit the connection limit was derived from. */
function logConnectionLimits(logger: Logger, config: Config, plugin: Plugin): void {
  const { descriptorLimit, reserved, maxConnections, maxConnectionsPerHost } = plugin.connections;
  logger.info(
    {
      descriptorLimit,
      reservedDescriptors: reserved,
      maxConnections,
      maxConnectionsPerHost,
      handshakeTimeoutMs: config.handshakeTimeoutMs,
      idleTimeoutMs: config.idleTimeoutMs,
    },
    `connections: at most ${maxConnections} open, ${maxConnectionsPerHost} from one host (SSE_MAX_CONNECTIONS, SSE_MAX_CONNECTIONS_PER_HOST; descriptor limit ${descriptorLimit ?? 'unknown'}, ${reserved} kept for the plugin and its sandboxes), ${config.handshakeTimeoutMs} ms to start (SSE_HANDSHAKE_TIMEOUT_MS), closed after ${config.idleTimeoutMs} ms without a call (SSE_IDLE_TIMEOUT_MS)`,
  );
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (error) {
    failStart(undefined, error);
    return;
  }
  const logger = createLogger(config.logLevel, undefined, config.logFormat);
  let plugin: Plugin;
  let tls: TlsFiles | undefined;
  try {
    // Checked before the pool starts, so a certificate mistake stops the start at once.
    tls = config.tlsDir === undefined ? undefined : loadTlsFiles(config.tlsDir);
    plugin = await startPlugin(config, logger);
  } catch (error) {
    failStart(logger, error);
    return;
  }
  logStartup(logger, config, { port: plugin.port, metricsPort: plugin.metricsPort, tls });
  plugin.libraries.logOffered();
  logConnectionLimits(logger, config, plugin);
  logConfinement(logger, plugin.confinement);
  handleSignals(logger, config, plugin);
}

main().catch((error: unknown) => failStart(undefined, error));
