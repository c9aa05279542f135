/**
 * What the process boundary alone costs: the ceiling, the same ceiling with each message relayed
 * through a child process (bench/relay-ceiling.ts: no row decoded, no script run), the same relay
 * with each message passed through an isolated-vm isolate in the child, the plugin, and a
 * baseline checkout of the plugin (BENCH_BASELINE, e.g. the thread design), measured alternately in
 * one run: bulk rows per second, sequential 1-row and 10-row calls, and several clients' 1-row calls.
 *
 *   npm run build
 *   BENCH_BASELINE=/work/wt/thread-design node --no-node-snapshot --no-concurrent-recompilation dist/bench/experiments/relay.js
 *
 * BENCH_QUICK=1 takes a tenth of the sizes.
 */
import path from 'node:path';

import { ChildServer } from '../child';
import { concurrentClients, sequentialLatencies, type Target, target, throughput } from '../measure';
import { CEILING, PLUGIN } from '../report';
import { startCeiling, startPlugin } from '../servers';
import { benchSizes } from '../sizes';
import { ms, rate, ratio } from '../stats';
import { numericWorkload, scalarWorkload, stringWorkload, type Workload } from '../workloads';

const RELAY = 'relay ceiling';
const ISOLATE_RELAY = 'isolate relay';
const BASELINE = 'baseline';

async function bulk(targets: readonly Target[], workload: Workload, reps: number): Promise<void> {
  const results = await throughput(targets, workload, reps);
  const ceiling = results.get(CEILING)?.rowsPerSec ?? Number.NaN;
  const baseline = results.get(BASELINE)?.rowsPerSec;
  console.log(workload.name);
  for (const t of targets) {
    const r = results.get(t.name);
    if (!r) continue;
    const vsBaseline = baseline === undefined ? '' : `, ${ratio(r.rowsPerSec / baseline)} of the baseline`;
    console.log(
      `  ${t.name.padEnd(14)} ${rate(r.rowsPerSec)} = ${ratio(r.rowsPerSec / ceiling)} of the ceiling${vsBaseline}, server CPU ${r.cpuMs.toFixed(0)} ms`,
    );
  }
}

async function main(): Promise<void> {
  const sizes = benchSizes();
  const baselineCheckout = process.env['BENCH_BASELINE'];
  const ceilingServer = await startCeiling();
  const relayServer = await ChildServer.start({
    name: RELAY,
    entry: path.join(__dirname, '..', 'relay-ceiling.js'),
    portVariable: 'BENCH_PORT',
    env: {},
  });
  const isolateServer = await ChildServer.start({
    name: ISOLATE_RELAY,
    entry: path.join(__dirname, '..', 'relay-ceiling.js'),
    portVariable: 'BENCH_PORT',
    env: { BENCH_RELAY_ISOLATE: '1' },
  });
  const pluginServer = await startPlugin(2);
  const baselineServer = baselineCheckout === undefined ? undefined : await startPlugin(2, [], {}, baselineCheckout);
  const targets = [
    target(CEILING, ceilingServer, false),
    target(RELAY, relayServer, false),
    target(ISOLATE_RELAY, isolateServer, false),
    target(PLUGIN, pluginServer, true),
    ...(baselineServer === undefined ? [] : [target(BASELINE, baselineServer, true)]),
  ];
  try {
    await bulk(targets, numericWorkload(sizes.numericRows, sizes.rowsPerBundle), sizes.reps);
    await bulk(targets, stringWorkload(sizes.stringRows, sizes.rowsPerBundle), sizes.reps);
    for (const [label, workload, calls] of [
      [`${sizes.scalarCalls} sequential 1-row SCALAR calls`, scalarWorkload(), sizes.scalarCalls],
      [`${sizes.smallCalls} sequential 10-row calls`, numericWorkload(sizes.smallCallRows, sizes.rowsPerBundle), sizes.smallCalls],
    ] as const) {
      const latencies = await sequentialLatencies(targets, workload, calls, sizes.smallWarmupCalls);
      const ceiling = latencies.get(CEILING);
      console.log(`${label}, p50 / p95`);
      for (const t of targets) {
        const l = latencies.get(t.name);
        if (!l || !ceiling) continue;
        console.log(
          `  ${t.name.padEnd(14)} ${ms(l.p50Ms)} / ${ms(l.p95Ms)} (+${ms(l.p50Ms - ceiling.p50Ms)} / +${ms(l.p95Ms - ceiling.p95Ms)})`,
        );
      }
    }
    // The LOAD pattern from several clients at once: calls a second, each server in turn.
    console.log(`${sizes.scalarClients} clients x ${sizes.scalarCallsPerClient} sequential 1-row calls, calls/s`);
    let ceilingRate = Number.NaN;
    for (const t of targets) {
      const c = await concurrentClients(t, scalarWorkload(), sizes.scalarClients, sizes.scalarCallsPerClient);
      if (t.name === CEILING) ceilingRate = c.rowsPerSec;
      console.log(`  ${t.name.padEnd(14)} ${rate(c.rowsPerSec)} = ${ratio(c.rowsPerSec / ceilingRate)} of the ceiling`);
    }
  } finally {
    for (const t of targets) t.client.close();
    await Promise.all([ceilingServer.stop(), relayServer.stop(), isolateServer.stop(), pluginServer.stop(), baselineServer?.stop()]);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
