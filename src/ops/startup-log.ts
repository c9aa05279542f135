/**
 * The first log lines: where the plugin listens, TLS, the limits in force, and what a Qlik
 * administrator types into Settings.ini or the QMC. "The engine cannot connect" is the most
 * common SSE support case; these lines answer most of it without a debugger.
 */
import { hostname } from 'node:os';
import { PLUGIN_VERSION } from '../grpc/capabilities';
import type { Config } from './config';
import type { Logger } from './log';
import { certificateNamesHost, EXPIRY_WARNING_DAYS, summarizeTls, type TlsFiles } from './tls';

/** The analytic connection name the README and the examples use (JS.ScriptEval(...)). */
export const CONNECTION_NAME = 'JS';

const WILDCARD_HOSTS = ['0.0.0.0', '::', '[::]'];
const LOOPBACK_HOSTS = ['127.0.0.1', 'localhost', '::1', '[::1]'];
const CLIENT_CERT_FOLDER = '<folder on the Qlik machine with root_cert.pem, sse_client_cert.pem, sse_client_key.pem>';

export interface Listening {
  readonly port: number;
  readonly metricsPort: number | undefined;
  readonly tls: TlsFiles | undefined;
}

export function logStartup(logger: Logger, config: Config, listening: Listening): void {
  const { port, metricsPort, tls } = listening;
  const metricsUrl = metricsPort === undefined ? undefined : `http://${config.metricsHost}:${metricsPort}/metrics`;
  logger.info(
    {
      version: PLUGIN_VERSION,
      node: process.version,
      pid: process.pid,
      host: config.host,
      port,
      tls: tls !== undefined,
      tlsDir: config.tlsDir,
      metrics: metricsUrl,
    },
    `listening on ${config.host}:${port} (${tls ? 'mutual TLS: clients must present a certificate signed by root_cert.pem' : 'plaintext, no TLS'})`,
  );
  logLimits(logger, config);
  const host = qlikHost(config, tls);
  if (tls) logCertificates(logger, tls, host);
  logQlikSettings(logger, host, port, tls !== undefined);
  if (LOOPBACK_HOSTS.includes(config.host)) {
    logger.warn(
      `listening on loopback only (SSE_HOST=${config.host}): a Qlik engine on another machine cannot connect; set SSE_HOST=0.0.0.0 (and SSE_TLS_DIR) to accept remote engines`,
    );
  } else if (config.priorityHosts.length === 0) {
    // The fair queue cannot tell an engine from many networks behaving like one (security.md).
    logger.warn(
      `no SSE_PRIORITY_HOSTS: other clients that reach ${config.host}:${port} from many networks can delay the engines' calls; list the Qlik engines' addresses (SSE_PRIORITY_HOSTS=10.0.0.7,10.0.0.8)`,
    );
  }
}

function logLimits(logger: Logger, config: Config): void {
  const limits = {
    SSE_WORKERS: config.workers,
    SSE_SCRIPT_TIMEOUT_MS: config.scriptTimeoutMs,
    SSE_MEMORY_LIMIT_MB: config.memoryLimitMb,
    SSE_MAX_SCRIPT_BYTES: config.maxScriptBytes,
    SSE_MAX_QUEUE: config.maxQueue,
    SSE_MAX_MESSAGE_BYTES: config.maxMessageBytes,
    SSE_SHUTDOWN_GRACE_MS: config.shutdownGraceMs,
    SSE_ALLOW_SCRIPT: config.allowScript,
  };
  const text = Object.entries(limits)
    .map(([name, value]) => `${name}=${String(value)}`)
    .join(' ');
  logger.info({ limits }, `limits: ${text}`);
}

/** The host name Qlik should use: the bind address, or this machine's name for a wildcard bind. */
function qlikHost(config: Config, tls: TlsFiles | undefined): string {
  const host = WILDCARD_HOSTS.includes(config.host) ? hostname() : config.host;
  // Qlik's certificate guide puts localhost (not 127.0.0.1) in the server certificate.
  if (tls && LOOPBACK_HOSTS.includes(host) && !certificateNamesHost(tls.server, host) && certificateNamesHost(tls.server, 'localhost'))
    return 'localhost';
  return host;
}

function logCertificates(logger: Logger, tls: TlsFiles, host: string): void {
  const summary = summarizeTls(tls);
  logger.info(
    { certificate: summary },
    `server certificate ${summary.serverSubject} for ${summary.serverNames.join(', ') || 'no subjectAltName'}, valid until ${summary.validTo} (${summary.daysLeft} days); clients must present a certificate signed by ${summary.rootSubject}`,
  );
  if (summary.daysLeft < EXPIRY_WARNING_DAYS) {
    logger.warn(
      { validTo: summary.validTo },
      `the server certificate expires in ${summary.daysLeft} days: generate new certificates before ${summary.validTo}`,
    );
  }
  if (!certificateNamesHost(tls.server, host)) {
    logger.warn(
      { host, serverNames: summary.serverNames },
      `the server certificate does not name ${host}: a Qlik engine connecting to ${host} will refuse it; use one of its names as Host, or add ${host} to [alt_names] in sse_server_config.txt and generate the certificates again`,
    );
  }
}

function logQlikSettings(logger: Logger, host: string, port: number, tls: boolean): void {
  const settingsIni = `SSEPlugin=${CONNECTION_NAME},${host}:${port}${tls ? `,${CLIENT_CERT_FOLDER}` : ''}`;
  logger.info({ settingsIni }, `Qlik Settings.ini, section [Settings 7] (end the file with an empty line): ${settingsIni}`);
  const qmc = { Name: CONNECTION_NAME, Host: host, Port: port, 'Certificate file path': tls ? CLIENT_CERT_FOLDER : '(empty: no TLS)' };
  const text = Object.entries(qmc)
    .map(([field, value]) => `${field}=${String(value)}`)
    .join(', ');
  logger.info({ qmc }, `QMC > Analytic connections > Create new: ${text}`);
}
