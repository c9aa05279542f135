/**
 * `npm run bench`: the plugin side by side with a transport ceiling, in one run, on one machine.
 * Both servers run as child processes (so their RSS and CPU are their own) and are driven by the
 * same grpc-js client with the same pre-encoded bundles and real Qlik headers. Results are in
 * bench/RESULTS.md. Environment:
 * - BENCH_QUICK=1: a tenth of the sizes, one timed run each (for iterating, not for results);
 * - BENCH_JSON=<file>: also write the figures as JSON;
 * - BENCH_QUIET_WAIT_MS (10000), BENCH_QUIET_BUDGET_MS (60000): how long to wait for other
 *   processes to leave the CPUs alone before each part and each timed call, and in all;
 * - BENCH_PLUGIN_FLAGS: extra node flags for the plugin (experiments only);
 * - BENCH_COMMIT: what to print as the code measured, outside a git checkout.
 */
import { execSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';

import type { ChildServer } from './child';
import { concurrentClients, sequentialLatency, soak, target, throughput, type Target } from './measure';
import {
  CEILING, PLUGIN, heading, printConcurrent, printInFlight, printLatency, printSoak, printTargets, printThroughput, type TargetCheck,
} from './report';
import { NoiseMonitor } from './noise';
import { pluginFlagsFromEnv, startCeiling, startPlugin } from './servers';
import { benchSizes, type Sizes } from './sizes';
import { ms, ratio } from './stats';
import { aggregateWorkload, cpuHeavyWorkload, numericWorkload, stringWorkload, type Workload } from './workloads';

/** Before each part, wait up to QUIET_WAIT_MS for a second in which others use under QUIET_SHARE of the CPUs. */
const QUIET_SHARE = 0.1;
const QUIET_WAIT_MS = Number(process.env['BENCH_QUIET_WAIT_MS'] ?? '10000');

const ONE_WORKER = 'plugin-1w';

const print = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

function describeCode(): string {
  if (process.env['BENCH_COMMIT']) return process.env['BENCH_COMMIT'];
  try {
    return execSync('git describe --always --dirty', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return 'unknown (not a git checkout; set BENCH_COMMIT)';
  }
}

function encodeWorkloads(sizes: Sizes): Record<string, Workload> {
  return {
    numeric: numericWorkload(sizes.numericRows, sizes.rowsPerBundle),
    strings: stringWorkload(sizes.stringRows, sizes.rowsPerBundle),
    aggregate: aggregateWorkload(sizes.aggregateRows, sizes.rowsPerBundle),
    small: numericWorkload(sizes.smallCallRows, sizes.rowsPerBundle),
    perClient: numericWorkload(sizes.clientCallRows, sizes.rowsPerBundle),
    soakNumeric: numericWorkload(sizes.soakRows, sizes.rowsPerBundle),
    soakStrings: stringWorkload(sizes.soakRows, sizes.rowsPerBundle),
    cpuHeavy: cpuHeavyWorkload(sizes.cpuRows, sizes.rowsPerBundle, sizes.sinesPerRow),
  };
}

class Bench {
  readonly checks: TargetCheck[] = [];
  readonly json: Record<string, unknown> = {};
  readonly failures: string[] = [];
  readonly noise = new NoiseMonitor();
  /** Share of the CPUs other processes used during each part. */
  readonly foreign = new Map<string, number>();

  serve(server: ChildServer, servers: ChildServer[]): ChildServer {
    servers.push(server);
    return server;
  }

  /** Runs one part; a failure is reported and the rest of the bench still runs. */
  async part<T>(name: string, body: () => Promise<T>): Promise<T | undefined> {
    await this.noise.waitForQuiet(QUIET_SHARE, 1_000, QUIET_WAIT_MS);
    const before = this.noise.sample();
    try {
      const result = await body();
      this.json[name] = result instanceof Map ? Object.fromEntries(result) : result;
      this.foreign.set(name, this.noise.foreignShare(before));
      return result;
    } catch (error) {
      this.failures.push(name);
      heading(`${name}: FAILED`);
      print(`  ${error instanceof Error ? error.message : String(error)}`);
      return undefined;
    }
  }

  check(name: string, value: number, shown: string, target: string, met: (v: number) => boolean): void {
    this.checks.push({ name, value: shown, target, met: Number.isFinite(value) && met(value) });
  }
}

async function runAll(bench: Bench, sizes: Sizes, w: Record<string, Workload>, ceiling: Target, servers: ChildServer[]): Promise<void> {
  const W = (key: string): Workload => w[key] as Workload;
  const startedPlugin = bench.serve(await startPlugin(2, pluginFlagsFromEnv()), servers);
  const plugin = target(PLUGIN, startedPlugin, true);
  const idleRssBytes = startedPlugin.rssBytes();
  const numericRuns = await bench.part('numeric', () => throughput([ceiling, plugin], W('numeric'), sizes.reps));
  const numericRatio = numericRuns ? printThroughput(W('numeric'), numericRuns) : Number.NaN;
  bench.check('numeric rows/s vs ceiling', numericRatio, ratio(numericRatio), '>= 0.70', (v) => v >= 0.7);

  const stringRuns = await bench.part('strings', () => throughput([ceiling, plugin], W('strings'), sizes.reps));
  const stringRatio = stringRuns ? printThroughput(W('strings'), stringRuns) : Number.NaN;
  bench.check('string rows/s vs ceiling', stringRatio, ratio(stringRatio), '>= 0.40', (v) => v >= 0.4);

  const aggregateRuns = await bench.part('aggregate', () => throughput([ceiling, plugin], W('aggregate'), sizes.reps));
  if (aggregateRuns) printThroughput(W('aggregate'), aggregateRuns);

  const small = await bench.part('small', async () => ({
    ceiling: await sequentialLatency(ceiling, W('small'), sizes.smallCalls, sizes.smallWarmupCalls),
    plugin: await sequentialLatency(plugin, W('small'), sizes.smallCalls, sizes.smallWarmupCalls),
  }));
  if (small) printLatency(`${sizes.smallCalls} sequential ${sizes.smallCallRows}-row chart calls (numeric x 2 cols)`, small.ceiling, small.plugin);
  const p50GapMs = small ? small.plugin.p50Ms - small.ceiling.p50Ms : Number.NaN;
  bench.check(`${sizes.smallCallRows}-row call p50 minus ceiling p50`, p50GapMs, `+${ms(p50GapMs)}`, '<= 1 ms', (v) => v <= 1);

  const concurrent = await bench.part('concurrent', async () => ({
    ceiling: await concurrentClients(ceiling, W('perClient'), sizes.clients, sizes.callsPerClient),
    plugin: await concurrentClients(plugin, W('perClient'), sizes.clients, sizes.callsPerClient),
  }));
  if (concurrent) {
    const title = `${sizes.clients} concurrent clients (own connections), ${sizes.callsPerClient} sequential calls each of ${sizes.clientCallRows} numeric rows`;
    printConcurrent(title, concurrent.ceiling, concurrent.plugin);
  }

  const soaked = await bench.part('soak', () => soak(plugin, [W('soakNumeric'), W('soakStrings')], sizes.soakCalls, sizes.soakCalls / 10, sizes.soakWarmupCalls));
  if (soaked) printSoak(soaked, sizes.soakRows);

  heading('memory with rows in flight (plugin peak RSS over the call minus RSS before it)');
  print(`  plugin idle RSS after start: ${(idleRssBytes / 1024 / 1024).toFixed(1)} MiB`);
  const aggregatePlugin = aggregateRuns?.get(PLUGIN);
  const numericPlugin = numericRuns?.get(PLUGIN);
  if (aggregatePlugin) printInFlight(`ScriptAggr, all ${W('aggregate').rowsIn} rows held at once`, aggregatePlugin, W('aggregate').requestBytes);
  if (numericPlugin) printInFlight(`ScriptEval streaming ${W('numeric').rowsIn} rows`, numericPlugin, W('numeric').requestBytes);

  // One worker against two, alternating call by call so that a change in the machine's load
  // falls on both alike; both plugins stay up, the one not called is idle.
  const oneWorker = bench.serve(await startPlugin(1, pluginFlagsFromEnv()), servers);
  const pluginOne = target(ONE_WORKER, oneWorker, true);
  const cpu = await bench.part('cpuHeavy', () => throughput([ceiling, plugin, pluginOne], W('cpuHeavy'), sizes.reps));
  if (cpu) printThroughput(W('cpuHeavy'), cpu);
  pluginOne.client.close();
  plugin.client.close();
  const scaling = (cpu?.get(PLUGIN)?.rowsPerSec ?? Number.NaN) / (cpu?.get(ONE_WORKER)?.rowsPerSec ?? Number.NaN);
  print(`  scaling 1 -> 2 workers: ${scaling.toFixed(2)}x (median rows/s of ${PLUGIN} / ${ONE_WORKER})`);
  bench.check('cpu-heavy scaling 1 -> 2 workers', scaling, `${scaling.toFixed(2)}x`, '>= 1.70x', (v) => v >= 1.7);
  bench.json['scaling'] = scaling;
  bench.json['idleRssBytes'] = idleRssBytes;

  printTargets(bench.checks);
  heading('memory (issue 5, item 4)');
  if (soaked) {
    const first = soaked.rssBytes[0] ?? 0;
    const last = soaked.rssBytes[soaked.rssBytes.length - 1] ?? 0;
    print(`  soak: RSS ${(((last - first) / first) * 100).toFixed(1)}% from after the warm-up to after ${soaked.calls} calls`);
  }
  if (aggregatePlugin) printInFlight(`1M rows in flight (ScriptAggr)`, aggregatePlugin, W('aggregate').requestBytes);
}

async function main(): Promise<void> {
  const sizes = benchSizes();
  const started = performance.now();
  const machine = { nproc: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version, code: describeCode(), when: new Date().toISOString() };
  print(`bench: ${machine.nproc} CPUs (${machine.cpu}), node ${machine.node}, code ${machine.code}, ${sizes.quick ? 'QUICK sizes' : 'full sizes'}, ${sizes.rowsPerBundle} rows a request message`);
  const encodeStarted = performance.now();
  const workloads = encodeWorkloads(sizes);
  print(`encoded every request once in ${ms(performance.now() - encodeStarted)} (before any timing)`);

  const bench = new Bench();
  Object.assign(bench.json, { machine, sizes });
  const servers: ChildServer[] = [];
  const ceilingServer = bench.serve(await startCeiling(), servers);
  const ceiling = target(CEILING, ceilingServer, false);
  try {
    await runAll(bench, sizes, workloads, ceiling, servers);
  } finally {
    ceiling.client.close();
    await Promise.all(servers.map((s) => s.stop()));
  }
  bench.json['checks'] = bench.checks;
  bench.json['foreignCpuShare'] = Object.fromEntries(bench.foreign);
  heading("other processes' share of all CPUs during each part (waits for quiet included; each timed run's own share is printed with it)");
  print(`  ${[...bench.foreign].map(([name, share]) => `${name} ${(share * 100).toFixed(0)}%`).join(', ')}`);
  const jsonPath = process.env['BENCH_JSON'];
  if (jsonPath) writeFileSync(jsonPath, JSON.stringify(bench.json, null, 2));
  print(`\nbench finished in ${((performance.now() - started) / 1000).toFixed(1)} s${bench.failures.length > 0 ? `; FAILED parts: ${bench.failures.join(', ')}` : ''}`);
  if (bench.failures.length > 0) process.exitCode = 1;
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
