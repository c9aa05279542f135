/**
 * Tries settings of the plugin side by side: each variant restarts the plugin (the front and its
 * sandbox processes) with its own environment, then runs the chosen workloads against it and the
 * ceiling, alternating, as `npm run bench` does. Only real options are varied, so what wins can be
 * set in production as it was measured. Used to choose SSE_CHUNK_KB (bench/RESULTS.md).
 *
 *   npm run build
 *   node --no-node-snapshot --no-concurrent-recompilation dist/bench/experiments/experiment.js base chunk=128 chunk=512
 *   BENCH_QUICK=1 BENCH_EXPERIMENT_WORKLOADS=numeric,small node --no-node-snapshot dist/bench/experiments/experiment.js chunk=64
 *
 * A variant is options joined by '+': base (the defaults); chunk=<KiB> (SSE_CHUNK_KB); or any
 * SSE_<NAME>=<value> the plugin reads, e.g. chunk=128+SSE_SANDBOX_PROCESSES=1. The bench's own
 * settings (SSE_WORKERS, SSE_SCRIPT_TIMEOUT_MS, ...) stay unless a variant names them.
 * BENCH_EXPERIMENT_WORKLOADS: comma list of numeric, string, cpu (2 and 1 workers), small (10-row),
 * scalar (1-row, sequential) and scalar4 (1-row from several clients).
 * BENCH_QUICK=1 (a tenth of the sizes) and BENCH_PLUGIN_FLAGS (extra node flags for the front) apply.
 */
import { concurrentClients, sequentialLatencies, sequentialLatency, type Target, target, throughput } from '../measure';
import { NoiseMonitor } from '../noise';
import { CEILING, PLUGIN } from '../report';
import { pluginFlagsFromEnv, startCeiling, startPlugin } from '../servers';
import { benchSizes, type Sizes } from '../sizes';
import { ms, rate, ratio } from '../stats';
import { cpuHeavyWorkload, numericWorkload, scalarWorkload, stringWorkload, type Workload } from '../workloads';

interface Variant {
  readonly name: string;
  readonly env: Record<string, string>;
}

const PLUGIN_VARIABLE = /^SSE_[A-Z_]+$/;

function parseVariant(text: string): Variant {
  const env: Record<string, string> = {};
  for (const option of text.split('+')) {
    const [key = '', value] = option.split('=');
    if (key === 'base' && value === undefined) continue;
    if (value === undefined || value === '')
      throw new Error(`variant option ${option} has no value: base, chunk=<KiB> or SSE_<NAME>=<value>`);
    if (key === 'chunk') env['SSE_CHUNK_KB'] = value;
    else if (PLUGIN_VARIABLE.test(key)) env[key] = value;
    else throw new Error(`unknown variant option ${option}: base, chunk=<KiB> or SSE_<NAME>=<value>`);
  }
  return { name: text, env };
}

async function withPlugin<T>(variant: Variant, workers: number, body: (plugin: Target) => Promise<T>): Promise<T> {
  // An invalid value stops the plugin at start with the variable's name (exit 2): ChildServer reports it.
  const server = await startPlugin(workers, pluginFlagsFromEnv(), variant.env);
  const plugin = target(PLUGIN, server, true);
  try {
    return await body(plugin);
  } finally {
    plugin.client.close();
    await server.stop();
  }
}

async function compare(ceiling: Target, plugin: Target, workload: Workload, reps: number): Promise<string> {
  const noise = new NoiseMonitor();
  const before = noise.sample();
  const results = await throughput([ceiling, plugin], workload, reps);
  const p = results.get(PLUGIN);
  const c = results.get(CEILING);
  if (!p || !c) return 'n/a';
  return `${rate(p.rowsPerSec)} = ${ratio(p.rowsPerSec / c.rowsPerSec)} of ceiling, CPU ${p.cpuMs.toFixed(0)} ms vs ${c.cpuMs.toFixed(0)} ms (others ${(noise.foreignShare(before) * 100).toFixed(0)}%)`;
}

async function runVariant(variant: Variant, kinds: readonly string[], sizes: Sizes, ceiling: Target): Promise<void> {
  const out: string[] = [];
  await withPlugin(variant, 2, async (plugin) => {
    if (kinds.includes('numeric'))
      out.push(`numeric ${await compare(ceiling, plugin, numericWorkload(sizes.numericRows, sizes.rowsPerBundle), sizes.reps)}`);
    if (kinds.includes('string'))
      out.push(`string ${await compare(ceiling, plugin, stringWorkload(sizes.stringRows, sizes.rowsPerBundle), sizes.reps)}`);
    if (kinds.includes('small')) {
      const small = numericWorkload(sizes.smallCallRows, sizes.rowsPerBundle);
      const c = await sequentialLatency(ceiling, small, sizes.smallCalls, sizes.smallWarmupCalls);
      const p = await sequentialLatency(plugin, small, sizes.smallCalls, sizes.smallWarmupCalls);
      out.push(`10-row p50 ${ms(p.p50Ms)} vs ceiling ${ms(c.p50Ms)} (+${ms(p.p50Ms - c.p50Ms)})`);
    }
    if (kinds.includes('scalar')) {
      const results = await sequentialLatencies([ceiling, plugin], scalarWorkload(), sizes.scalarCalls, sizes.smallWarmupCalls);
      const c = results.get(CEILING);
      const p = results.get(PLUGIN);
      if (c && p) out.push(`1-row p50 ${ms(p.p50Ms)} vs ceiling ${ms(c.p50Ms)} (+${ms(p.p50Ms - c.p50Ms)})`);
    }
    if (kinds.includes('scalar4')) {
      const c = await concurrentClients(ceiling, scalarWorkload(), sizes.scalarClients, sizes.scalarCallsPerClient);
      const p = await concurrentClients(plugin, scalarWorkload(), sizes.scalarClients, sizes.scalarCallsPerClient);
      out.push(
        `${sizes.scalarClients} clients 1-row ${rate(p.rowsPerSec)} = ${ratio(p.rowsPerSec / c.rowsPerSec)} of ceiling, p50 ${ms(p.p50Ms)}`,
      );
    }
  });
  if (kinds.includes('cpu')) {
    const cpu = cpuHeavyWorkload(sizes.cpuRows, sizes.rowsPerBundle, sizes.sinesPerRow);
    const rowsPerSec = async (workers: number): Promise<number> =>
      withPlugin(variant, workers, async (plugin) => (await throughput([plugin], cpu, sizes.reps)).get(PLUGIN)?.rowsPerSec ?? Number.NaN);
    const noise = new NoiseMonitor();
    const before = noise.sample();
    const two = await rowsPerSec(2);
    const one = await rowsPerSec(1);
    out.push(
      `cpu-heavy 2w ${rate(two)}, 1w ${rate(one)}, scaling ${(two / one).toFixed(2)}x (others ${(noise.foreignShare(before) * 100).toFixed(0)}%)`,
    );
  }
  process.stdout.write(`${variant.name.padEnd(16)} | ${out.join(' | ')}\n`);
}

async function main(): Promise<void> {
  const sizes = benchSizes();
  const variants = (process.argv.length > 2 ? process.argv.slice(2) : ['base']).map(parseVariant);
  const kinds = (process.env['BENCH_EXPERIMENT_WORKLOADS'] ?? 'numeric,string,cpu').split(',');
  const ceilingServer = await startCeiling();
  const ceiling = target(CEILING, ceilingServer, false);
  try {
    for (const variant of variants) await runVariant(variant, kinds, sizes, ceiling);
  } finally {
    ceiling.client.close();
    await ceilingServer.stop();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`experiment failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
