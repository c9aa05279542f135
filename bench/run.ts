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
 * - BENCH_BASELINE_FLAGS: the baseline's node flags, when they differ (an A/B of a flag: the same
 *   commit as BENCH_BASELINE, flags only on one side);
 * - BENCH_COMMIT: what to print as the code measured, outside a git checkout;
 * - BENCH_ONLY=latency: only the small-call parts (for iterating on latency);
 * - BENCH_BASELINE=<dir>: a built checkout of another commit, run beside the plugin in the
 *   throughput, 1-row and 10-row parts as "baseline" (e.g. the thread design at 5c40db7, see RESULTS.md).
 */
import { execSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';

import type { ChildServer } from './child';
import { concurrentClients, type Soak, sequentialLatencies, soak, type Target, type Throughput, target, throughput } from './measure';
import { NoiseMonitor } from './noise';
import {
  CEILING,
  heading,
  PLUGIN,
  printConcurrent,
  printInFlight,
  printLatency,
  printSoak,
  printTargets,
  printThroughput,
  type TargetCheck,
} from './report';
import { pluginFlagsFromEnv, startCeiling, startPlugin } from './servers';
import { benchSizes, type Sizes } from './sizes';
import { type Latency, ms, ratio } from './stats';
import { aggregateWorkload, cpuHeavyWorkload, numericWorkload, scalarWorkload, stringWorkload, type Workload } from './workloads';

/** Before each part, wait up to QUIET_WAIT_MS for a second in which others use under QUIET_SHARE of the CPUs. */
const QUIET_SHARE = 0.1;
const QUIET_WAIT_MS = Number(process.env['BENCH_QUIET_WAIT_MS'] ?? '10000');

const ONE_WORKER = 'plugin-1w';
const BASELINE = 'baseline';

type LatencyChecked = Latency & { valuesChecked: number };

interface SequentialParts {
  readonly ceiling: LatencyChecked;
  readonly plugin: LatencyChecked;
  readonly baseline: LatencyChecked | undefined;
}

function printBaselineLatency(plugin: Latency, baseline: Latency | undefined): void {
  if (!baseline) return;
  const p50 = plugin.p50Ms - baseline.p50Ms;
  const p99 = plugin.p99Ms - baseline.p99Ms;
  print(
    `  baseline p50 ${ms(baseline.p50Ms)} p99 ${ms(baseline.p99Ms)}: plugin-baseline p50 ${p50 < 0 ? '' : '+'}${ms(p50)}, p99 ${p99 < 0 ? '' : '+'}${ms(p99)}`,
  );
}

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
    scalar: scalarWorkload(),
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

/** The parts of one run, in order, against the ceiling and a 2-worker plugin. */
class Parts {
  private aggregatePlugin: Throughput | undefined;
  private soaked: Soak | undefined;

  constructor(
    private readonly bench: Bench,
    private readonly sizes: Sizes,
    private readonly workloads: Record<string, Workload>,
    private readonly ceiling: Target,
    private readonly plugin: Target,
    private readonly baseline: Target | undefined,
  ) {}

  /** Sequential calls to the ceiling, the plugin and the baseline (if any), call by call in turn. */
  private async sequential(workload: Workload, calls: number): Promise<SequentialParts> {
    const results = await sequentialLatencies(this.compared, workload, calls, this.sizes.smallWarmupCalls);
    const get = (name: string): LatencyChecked => results.get(name) as LatencyChecked;
    return { ceiling: get(CEILING), plugin: get(PLUGIN), baseline: this.baseline ? get(BASELINE) : undefined };
  }

  /** The servers of a throughput part: the ceiling, the plugin, and the baseline when there is one. */
  private get compared(): Target[] {
    return this.baseline ? [this.ceiling, this.plugin, this.baseline] : [this.ceiling, this.plugin];
  }

  private checkBaseline(name: string, results: Map<string, Throughput> | undefined): void {
    const base = results?.get(BASELINE)?.rowsPerSec;
    if (base === undefined) return;
    const value = (results?.get(PLUGIN)?.rowsPerSec ?? Number.NaN) / base;
    print(`  plugin/baseline ${ratio(value)} in rows/s`);
    this.bench.check(`${name} rows/s vs baseline`, value, ratio(value), '>= 1.00', (v) => v >= 1);
  }

  private w(key: string): Workload {
    return this.workloads[key] as Workload;
  }

  async throughputs(): Promise<void> {
    const { bench, ceiling, plugin, sizes } = this;
    const numeric = await bench.part('numeric', () => throughput(this.compared, this.w('numeric'), sizes.reps));
    const numericRatio = numeric ? printThroughput(this.w('numeric'), numeric) : Number.NaN;
    this.checkBaseline('numeric', numeric);
    bench.check('numeric rows/s vs ceiling', numericRatio, ratio(numericRatio), '>= 0.75', (v) => v >= 0.75);
    const strings = await bench.part('strings', () => throughput(this.compared, this.w('strings'), sizes.reps));
    const stringRatio = strings ? printThroughput(this.w('strings'), strings) : Number.NaN;
    this.checkBaseline('string', strings);
    bench.check('string rows/s vs ceiling', stringRatio, ratio(stringRatio), '>= 0.50', (v) => v >= 0.5);
    const aggregate = await bench.part('aggregate', () => throughput([ceiling, plugin], this.w('aggregate'), sizes.reps));
    if (aggregate) printThroughput(this.w('aggregate'), aggregate);
    this.aggregatePlugin = aggregate?.get(PLUGIN);
    heading('memory with rows in flight (plugin peak RSS over the call minus RSS before it)');
    if (this.aggregatePlugin)
      printInFlight(
        `ScriptAggr, all ${this.w('aggregate').rowsIn} rows held at once`,
        this.aggregatePlugin,
        this.w('aggregate').requestBytes,
      );
    const numericPlugin = numeric?.get(PLUGIN);
    if (numericPlugin)
      printInFlight(`ScriptEval streaming ${this.w('numeric').rowsIn} rows`, numericPlugin, this.w('numeric').requestBytes);
  }

  /** The LOAD pattern: one 1-row SCALAR call per row, one after another, then from 4 clients. */
  async scalar(): Promise<void> {
    const { bench, ceiling, plugin, sizes } = this;
    const one = await bench.part('scalar', () => this.sequential(this.w('scalar'), sizes.scalarCalls));
    if (one) {
      printLatency(`${sizes.scalarCalls} sequential 1-row SCALAR calls (the LOAD pattern)`, one.ceiling, one.plugin);
      printBaselineLatency(one.plugin, one.baseline);
    }
    const p50GapMs = one ? one.plugin.p50Ms - one.ceiling.p50Ms : Number.NaN;
    const p95GapMs = one ? one.plugin.p95Ms - one.ceiling.p95Ms : Number.NaN;
    bench.check('1-row SCALAR p50 minus ceiling p50', p50GapMs, `+${ms(p50GapMs)}`, '<= 0.15 ms', (v) => v <= 0.15);
    bench.check('1-row SCALAR p95 minus ceiling p95', p95GapMs, `+${ms(p95GapMs)}`, '<= 0.5 ms', (v) => v <= 0.5);
    const many = await bench.part('scalarConcurrent', async () => ({
      ceiling: await concurrentClients(ceiling, this.w('scalar'), sizes.scalarClients, sizes.scalarCallsPerClient),
      plugin: await concurrentClients(plugin, this.w('scalar'), sizes.scalarClients, sizes.scalarCallsPerClient),
    }));
    if (many)
      printConcurrent(
        `${sizes.scalarClients} clients, ${sizes.scalarCallsPerClient} sequential 1-row SCALAR calls each (calls/s = rows/s)`,
        many.ceiling,
        many.plugin,
      );
    const callRatio = many ? many.plugin.rowsPerSec / many.ceiling.rowsPerSec : Number.NaN;
    bench.check(`${sizes.scalarClients}-client 1-row calls/s vs ceiling`, callRatio, ratio(callRatio), '>= 0.70', (v) => v >= 0.7);
  }

  async latency(): Promise<void> {
    const { bench, ceiling, plugin, sizes } = this;
    const small = await bench.part('small', () => this.sequential(this.w('small'), sizes.smallCalls));
    if (small) {
      printLatency(`${sizes.smallCalls} sequential ${sizes.smallCallRows}-row chart calls (numeric x 2 cols)`, small.ceiling, small.plugin);
      printBaselineLatency(small.plugin, small.baseline);
    }
    const p50GapMs = small ? small.plugin.p50Ms - small.ceiling.p50Ms : Number.NaN;
    bench.check(`${sizes.smallCallRows}-row call p50 minus ceiling p50`, p50GapMs, `+${ms(p50GapMs)}`, '<= 0.15 ms', (v) => v <= 0.15);
    const concurrent = await bench.part('concurrent', async () => ({
      ceiling: await concurrentClients(ceiling, this.w('perClient'), sizes.clients, sizes.callsPerClient),
      plugin: await concurrentClients(plugin, this.w('perClient'), sizes.clients, sizes.callsPerClient),
    }));
    const title = `${sizes.clients} concurrent clients (own connections), ${sizes.callsPerClient} sequential calls each of ${sizes.clientCallRows} numeric rows`;
    if (concurrent) printConcurrent(title, concurrent.ceiling, concurrent.plugin);
  }

  async soak(): Promise<void> {
    const { sizes } = this;
    this.soaked = await this.bench.part('soak', () =>
      soak(this.plugin, [this.w('soakNumeric'), this.w('soakStrings')], sizes.soakCalls, sizes.soakCalls / 10, sizes.soakWarmupCalls),
    );
    if (this.soaked) printSoak(this.soaked, sizes.soakRows);
  }

  /**
   * One worker against two, alternating call by call so that a change in the machine's load falls
   * on both alike; both plugins stay up, the one not called is idle.
   */
  async scaling(servers: ChildServer[]): Promise<void> {
    const { bench, ceiling, plugin } = this;
    const pluginOne = target(ONE_WORKER, bench.serve(await startPlugin(1, pluginFlagsFromEnv()), servers), true);
    try {
      const cpu = await bench.part('cpuHeavy', () => throughput([ceiling, plugin, pluginOne], this.w('cpuHeavy'), this.sizes.reps));
      if (cpu) printThroughput(this.w('cpuHeavy'), cpu);
      const scaling = (cpu?.get(PLUGIN)?.rowsPerSec ?? Number.NaN) / (cpu?.get(ONE_WORKER)?.rowsPerSec ?? Number.NaN);
      print(`  scaling 1 -> 2 workers: ${scaling.toFixed(2)}x (median rows/s of ${PLUGIN} / ${ONE_WORKER})`);
      bench.check('cpu-heavy scaling 1 -> 2 workers', scaling, `${scaling.toFixed(2)}x`, '>= 1.70x', (v) => v >= 1.7);
      bench.json['scaling'] = scaling;
    } finally {
      pluginOne.client.close();
    }
  }

  summary(): void {
    printTargets(this.bench.checks);
    heading('memory');
    if (this.soaked) {
      const first = this.soaked.rssBytes[0] ?? 0;
      const last = this.soaked.rssBytes[this.soaked.rssBytes.length - 1] ?? 0;
      print(`  soak: RSS ${(((last - first) / first) * 100).toFixed(1)}% from after the warm-up to after ${this.soaked.calls} calls`);
    }
    if (this.aggregatePlugin) printInFlight('1M rows in flight (ScriptAggr)', this.aggregatePlugin, this.w('aggregate').requestBytes);
  }
}

async function runAll(
  bench: Bench,
  sizes: Sizes,
  workloads: Record<string, Workload>,
  ceiling: Target,
  servers: ChildServer[],
): Promise<void> {
  const pluginServer = bench.serve(await startPlugin(2, pluginFlagsFromEnv()), servers);
  const plugin = target(PLUGIN, pluginServer, true);
  bench.json['idleRssBytes'] = pluginServer.rssBytes();
  print(`plugin RSS after start (all its processes): ${(pluginServer.rssBytes() / 1024 / 1024).toFixed(1)} MiB`);
  const baselineDir = process.env['BENCH_BASELINE'];
  const baseline = baselineDir
    ? target(BASELINE, bench.serve(await startPlugin(2, pluginFlagsFromEnv('BENCH_BASELINE_FLAGS'), {}, baselineDir), servers), true)
    : undefined;
  const parts = new Parts(bench, sizes, workloads, ceiling, plugin, baseline);
  try {
    if (process.env['BENCH_ONLY'] !== 'latency') await parts.throughputs();
    await parts.scalar();
    await parts.latency();
    if (process.env['BENCH_ONLY'] === 'latency') return parts.summary();
    await parts.soak();
    await parts.scaling(servers);
    parts.summary();
  } finally {
    plugin.client.close();
    baseline?.client.close();
  }
}

async function main(): Promise<void> {
  const sizes = benchSizes();
  const started = performance.now();
  const machine = {
    nproc: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    code: describeCode(),
    when: new Date().toISOString(),
  };
  print(
    `bench: ${machine.nproc} CPUs (${machine.cpu}), node ${machine.node}, code ${machine.code}, ${sizes.quick ? 'QUICK sizes' : 'full sizes'}, ${sizes.rowsPerBundle} rows a request message`,
  );
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
  print(
    `\nbench finished in ${((performance.now() - started) / 1000).toFixed(1)} s${bench.failures.length > 0 ? `; FAILED parts: ${bench.failures.join(', ')}` : ''}`,
  );
  if (bench.failures.length > 0) process.exitCode = 1;
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
