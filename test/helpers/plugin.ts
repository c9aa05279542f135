/** Starts the real plugin on 127.0.0.1:0 with a real pool, and a client connected to it. */
import { type Plugin, startPlugin } from '../../src/app';
import { type Config, loadConfig } from '../../src/ops/config';
import { createLogger, type Logger } from '../../src/ops/log';
import type { PoolSettings } from '../../src/sandboxes/pool';
import { QlikClient } from './qlik-client';

export interface TestPlugin {
  readonly plugin: Plugin;
  readonly client: QlikClient;
  readonly config: Config;
  readonly address: string;
  stop(): Promise<void>;
}

/**
 * A test that is not about the time limit must never meet it: ordinary work (100,000 rows, tables
 * over many chunks) takes a second or two here but several times that on a busy 2-core machine, and
 * against the 5 s default such a call failed DEADLINE_EXCEEDED under load. Tests of the time limit set
 * SSE_SCRIPT_TIMEOUT_MS themselves; this one only turns a script that never ends into a failure.
 */
const UNTESTED_TIMEOUT_MS = '60000';

/**
 * logger: to read what the plugin logs (e.g. createLogger with a destination that collects lines).
 * pool: settings no variable sets, made small by a test (maxOpenCalls, usageHalfLifeMs); the pool takes them with the config.
 */
export async function startTestPlugin(
  env: Record<string, string> = {},
  logger?: Logger,
  pool: Partial<Pick<PoolSettings, 'maxOpenCalls' | 'usageHalfLifeMs'>> = {},
): Promise<TestPlugin> {
  const config = loadConfig({
    SSE_PORT: '0',
    SSE_HOST: '127.0.0.1',
    SSE_WORKERS: '2',
    SSE_SCRIPT_TIMEOUT_MS: UNTESTED_TIMEOUT_MS,
    SSE_LOG_LEVEL: process.env['TEST_LOG_LEVEL'] ?? 'error',
    ...env,
  });
  const plugin = await startPlugin(Object.assign({}, config, pool), logger ?? createLogger(config.logLevel));
  const address = `127.0.0.1:${plugin.port}`;
  const client = new QlikClient(address);
  return {
    plugin,
    client,
    config,
    address,
    async stop() {
      client.close();
      await plugin.stop(1_000);
    },
  };
}
