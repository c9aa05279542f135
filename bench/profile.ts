/**
 * Where the plugin's time goes for one workload: starts the plugin and its sandbox worker
 * processes with `node --cpu-prof` (the latter through the fork-override preload), runs the
 * workload against it (as `npm run bench` does, without the ceiling), stops it so every process
 * writes its profile, and prints a summary per process and thread.
 *
 *   node --no-node-snapshot dist/bench/profile.js numeric|string|aggregate|small|cpu [workers]
 *
 * BENCH_QUICK=1 and extra plugin node flags (BENCH_PLUGIN_FLAGS, space separated) apply.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { printSummary, summariseDir } from './cpu-profile';
import { sequentialLatency, target, throughput } from './measure';
import { pluginFlagsFromEnv, startPlugin } from './servers';
import { benchSizes } from './sizes';
import { ms, rate } from './stats';
import { aggregateWorkload, cpuHeavyWorkload, numericWorkload, stringWorkload, type Workload } from './workloads';

function workloadFor(kind: string): Workload {
  const sizes = benchSizes();
  switch (kind) {
    case 'numeric':
      return numericWorkload(sizes.numericRows, sizes.rowsPerBundle);
    case 'string':
      return stringWorkload(sizes.stringRows, sizes.rowsPerBundle);
    case 'aggregate':
      return aggregateWorkload(sizes.aggregateRows, sizes.rowsPerBundle);
    case 'small':
      return numericWorkload(sizes.smallCallRows, sizes.rowsPerBundle);
    case 'cpu':
      return cpuHeavyWorkload(sizes.cpuRows, sizes.rowsPerBundle, sizes.sinesPerRow);
    default:
      throw new Error(`unknown workload ${kind}: numeric, string, aggregate, small or cpu`);
  }
}

async function main(): Promise<void> {
  const kind = process.argv[2] ?? 'numeric';
  const workers = Number(process.argv[3] ?? '2');
  const workload = workloadFor(kind);
  const dir = mkdtempSync(path.join(tmpdir(), 'sse-cpuprof-'));
  const extraFlags = pluginFlagsFromEnv();
  const profileFlags = ['--cpu-prof', `--cpu-prof-dir=${dir}`];
  const server = await startPlugin(workers, [...extraFlags, ...profileFlags, '-r', path.join(__dirname, 'fork-override.js')], {
    BENCH_SANDBOX_FLAGS: profileFlags.join(' '),
  });
  const plugin = target('plugin', server, true);
  try {
    if (kind === 'small') {
      const l = await sequentialLatency(plugin, workload, 500, 50);
      process.stdout.write(`${workload.name} x 500: p50 ${ms(l.p50Ms)} p95 ${ms(l.p95Ms)} p99 ${ms(l.p99Ms)}\n`);
    } else {
      const result = (await throughput([plugin], workload, 5)).get('plugin');
      process.stdout.write(`${workload.name}: ${rate(result?.rowsPerSec ?? 0)} under the profiler (5 calls after 1 warm-up)\n`);
    }
  } finally {
    plugin.client.close();
    await server.stop();
  }
  process.stdout.write(`profiles in ${dir}\n`);
  for (const summary of summariseDir(dir, server.pid)) printSummary(summary);
}

main().catch((error: unknown) => {
  process.stderr.write(`profile failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
