/**
 * Tries plugin variants side by side, without editing src/ or workers/: each variant restarts the
 * plugin with experiment preloads, then runs the chosen workloads against it and the ceiling,
 * alternating, as `npm run bench` does. Used to choose CHUNK_BYTES and to price a warm JIT.
 *
 *   node --no-node-snapshot dist/bench/experiment.js base chunk=64 chunk=1024 warm chunk=1024+warm
 *
 * Variant options, joined by '+': base; chunk=<KiB> (CHUNK_BYTES); warm (UNSAFE: one context for
 * every task of a sandbox process, see warm-context-override.ts); rr (tasks to workers round robin).
 * BENCH_EXPERIMENT_WORKLOADS: comma list of numeric, string, cpu (2 and 1 workers), small.
 */
import path from 'node:path';

import { sequentialLatency, target, throughput, type Target } from './measure';
import { NoiseMonitor } from './noise';
import { CEILING, PLUGIN } from './report';
import { startCeiling, startPlugin } from './servers';
import { benchSizes, type Sizes } from './sizes';
import { ms, rate, ratio } from './stats';
import { cpuHeavyWorkload, numericWorkload, stringWorkload, type Workload } from './workloads';

interface Variant {
  readonly name: string;
  readonly flags: string[];
  readonly env: Record<string, string>;
}

function parseVariant(text: string): Variant {
  const flags: string[] = [];
  const env: Record<string, string> = {};
  for (const option of text.split('+')) {
    const [key, value] = option.split('=');
    if (key === 'chunk') {
      flags.push('-r', path.join(__dirname, 'chunk-override.js'));
      env['BENCH_CHUNK_BYTES'] = String(Number(value) * 1024);
    } else if (key === 'warm') {
      flags.push('-r', path.join(__dirname, 'warm-context-override.js'), '-r', path.join(__dirname, 'fork-override.js'));
      env['BENCH_SANDBOX_FLAGS'] = `-r ${path.join(__dirname, 'warm-context-override.js')}`;
      env['BENCH_WARM_CONTEXT'] = '1';
    } else if (key === 'rr') {
      flags.push('-r', path.join(__dirname, 'round-robin-override.js'));
      env['BENCH_ROUND_ROBIN'] = '1';
    } else if (key !== 'base') {
      throw new Error(`unknown variant option ${option}: base, chunk=<KiB>, warm or rr`);
    }
  }
  return { name: text, flags, env };
}

async function withPlugin<T>(variant: Variant, workers: number, body: (plugin: Target) => Promise<T>): Promise<T> {
  const server = await startPlugin(workers, variant.flags, variant.env);
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
    if (kinds.includes('numeric')) out.push(`numeric ${await compare(ceiling, plugin, numericWorkload(sizes.numericRows, sizes.rowsPerBundle), sizes.reps)}`);
    if (kinds.includes('string')) out.push(`string ${await compare(ceiling, plugin, stringWorkload(sizes.stringRows, sizes.rowsPerBundle), sizes.reps)}`);
    if (kinds.includes('small')) {
      const small = numericWorkload(sizes.smallCallRows, sizes.rowsPerBundle);
      const c = await sequentialLatency(ceiling, small, sizes.smallCalls, sizes.smallWarmupCalls);
      const p = await sequentialLatency(plugin, small, sizes.smallCalls, sizes.smallWarmupCalls);
      out.push(`10-row p50 ${ms(p.p50Ms)} vs ceiling ${ms(c.p50Ms)} (+${ms(p.p50Ms - c.p50Ms)})`);
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
    out.push(`cpu-heavy 2w ${rate(two)}, 1w ${rate(one)}, scaling ${(two / one).toFixed(2)}x (others ${(noise.foreignShare(before) * 100).toFixed(0)}%)`);
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
