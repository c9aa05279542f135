/** The two servers the bench compares, each started as a child process from dist/. */
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { ChildServer } from './child';

const DIST = path.join(__dirname, '..');
const CHECKOUT = path.join(DIST, '..');
const PLUGIN_ENTRY = path.join(DIST, 'src', 'main.js');
const CEILING_ENTRY = path.join(DIST, 'bench', 'ceiling-server.js');

/**
 * The real plugin, as `npm start` runs it (the node flags of its checkout's start script), with extra
 * node flags (e.g. --cpu-prof) when asked; `checkout` runs another built checkout of it instead
 * (BENCH_BASELINE), with that checkout's own start flags.
 */
export function startPlugin(
  workers: number,
  extraNodeFlags: readonly string[] = [],
  env: Record<string, string> = {},
  checkout?: string,
): Promise<ChildServer> {
  return ChildServer.start({
    name: `plugin (${workers} workers)${checkout === undefined ? '' : ` from ${checkout}`}`,
    entry: checkout === undefined ? PLUGIN_ENTRY : path.join(checkout, 'dist', 'src', 'main.js'),
    portVariable: 'SSE_PORT',
    // A generous script time limit: a CPU-heavy call on a busy machine must not fail the bench.
    env: { SSE_HOST: '127.0.0.1', SSE_LOG_LEVEL: 'warn', SSE_WORKERS: String(workers), SSE_SCRIPT_TIMEOUT_MS: '60000', ...env },
    extraNodeFlags: [...startFlags(checkout ?? CHECKOUT), ...extraNodeFlags],
  });
}

/** The node flags of a checkout's `npm start` (package.json: `node <flags> dist/src/main.js`). */
function startFlags(checkout: string): string[] {
  const pkg = JSON.parse(readFileSync(path.join(checkout, 'package.json'), 'utf8')) as { scripts?: { start?: string } };
  return (pkg.scripts?.start ?? '').split(/\s+/).filter((word) => word.startsWith('--'));
}

export function startCeiling(): Promise<ChildServer> {
  return ChildServer.start({ name: 'ceiling', entry: CEILING_ENTRY, portVariable: 'BENCH_PORT', env: {} });
}

/**
 * Node flags for the plugin from BENCH_PLUGIN_FLAGS (space separated), for experiments; the baseline's
 * from BENCH_BASELINE_FLAGS when that is set, else the same.
 */
export function pluginFlagsFromEnv(variable = 'BENCH_PLUGIN_FLAGS', env: NodeJS.ProcessEnv = process.env): string[] {
  const flags = env[variable] ?? env['BENCH_PLUGIN_FLAGS'] ?? '';
  return flags.split(' ').filter((flag) => flag !== '');
}
