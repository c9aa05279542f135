/**
 * Where the front's time goes for one workload: starts the plugin with `node --cpu-prof`, runs the
 * workload against it (as `npm run bench` does, without the ceiling), stops it so it writes its
 * profile, and prints a summary (bench/experiments/cpu-profile.ts).
 *
 *   npm run build
 *   node --no-node-snapshot dist/bench/experiments/profile.js numeric|string|aggregate|small|scalar|scalar4|cpu [workers]
 *   BENCH_QUICK=1 node --no-node-snapshot dist/bench/experiments/profile.js small 2
 *
 * Only the front (the gRPC process) is profiled: it starts its sandbox processes itself with a fixed
 * list of node flags and an empty environment, so neither these flags nor NODE_OPTIONS reach them,
 * and the time scripts spend in sandbox threads is not in the profile. BENCH_QUICK=1, extra node
 * flags for the front (BENCH_PLUGIN_FLAGS, space separated) and any SSE_* variable set here (e.g.
 * SSE_CHUNK_KB) apply.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { concurrentClients, sequentialLatency, target, throughput } from '../measure';
import { pluginFlagsFromEnv, startPlugin } from '../servers';
import { benchSizes, type Sizes } from '../sizes';
import { ms, rate } from '../stats';
import { aggregateWorkload, cpuHeavyWorkload, numericWorkload, scalarWorkload, stringWorkload, type Workload } from '../workloads';
import { printSummary, summariseDir } from './cpu-profile';

function workloadFor(kind: string, sizes: Sizes): Workload {
  switch (kind) {
    case 'numeric':
      return numericWorkload(sizes.numericRows, sizes.rowsPerBundle);
    case 'string':
      return stringWorkload(sizes.stringRows, sizes.rowsPerBundle);
    case 'aggregate':
      return aggregateWorkload(sizes.aggregateRows, sizes.rowsPerBundle);
    case 'small':
      return numericWorkload(sizes.smallCallRows, sizes.rowsPerBundle);
    case 'scalar':
    case 'scalar4':
      return scalarWorkload();
    case 'cpu':
      return cpuHeavyWorkload(sizes.cpuRows, sizes.rowsPerBundle, sizes.sinesPerRow);
    default:
      throw new Error(`unknown workload ${kind}: numeric, string, aggregate, small, scalar, scalar4 or cpu`);
  }
}

async function main(): Promise<void> {
  const kind = process.argv[2] ?? 'numeric';
  const workers = Number(process.argv[3] ?? '2');
  const sizes = benchSizes();
  const workload = workloadFor(kind, sizes);
  const dir = mkdtempSync(path.join(tmpdir(), 'sse-cpuprof-'));
  const extraFlags = pluginFlagsFromEnv();
  const server = await startPlugin(workers, [...extraFlags, '--cpu-prof', `--cpu-prof-dir=${dir}`]);
  const plugin = target('plugin', server, true);
  try {
    if (kind === 'scalar4') {
      const c = await concurrentClients(plugin, workload, sizes.scalarClients, sizes.scalarCallsPerClient * 4);
      process.stdout.write(`${workload.name} from ${sizes.scalarClients} clients: ${rate(c.rowsPerSec)} calls/s, p50 ${ms(c.p50Ms)}\n`);
    } else if (kind === 'small' || kind === 'scalar') {
      const calls = kind === 'scalar' ? sizes.scalarCalls : sizes.smallCalls;
      const l = await sequentialLatency(plugin, workload, calls, sizes.smallWarmupCalls);
      process.stdout.write(`${workload.name} x ${calls}: p50 ${ms(l.p50Ms)} p95 ${ms(l.p95Ms)} p99 ${ms(l.p99Ms)}\n`);
    } else {
      const result = (await throughput([plugin], workload, sizes.reps)).get('plugin');
      process.stdout.write(`${workload.name}: ${rate(result?.rowsPerSec ?? 0)} under the profiler (${sizes.reps} calls after 1 warm-up)\n`);
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
