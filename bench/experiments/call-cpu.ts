/**
 * What one small call costs each process in CPU time, beside its latency: the ceiling, the plugin
 * (its front and each sandbox process apart) and, with BENCH_BASELINE, another built checkout, all
 * driven call by call in turn. CPU time per call is steadier than latency on a shared VM, and it is
 * what several clients at once run out of. Each process's time is split between its main thread and
 * its other threads (a sandbox's pool threads, V8's and libuv's helpers), read from
 * /proc/<pid>/task/<tid>/schedstat (nanoseconds on the CPU, not clock ticks).
 *
 *   npm run build
 *   node --no-node-snapshot dist/bench/experiments/call-cpu.js [scalar|small|numeric|string] [calls]
 *   BENCH_BASELINE=/path/to/checkout node --no-node-snapshot dist/bench/experiments/call-cpu.js scalar 3000
 */
import type { ChildServer } from '../child';
import { sequentialLatencies, type Target, target } from '../measure';
import { threadCpuNs } from '../proc';
import { CEILING, PLUGIN } from '../report';
import { pluginFlagsFromEnv, startCeiling, startPlugin } from '../servers';
import { ms } from '../stats';
import { numericWorkload, scalarWorkload, stringWorkload, type Workload } from '../workloads';

/** CPU time (ns) of each process's main thread and of its other threads together, by pid. */
function sample(server: ChildServer): Map<number, { main: number; others: number }> {
  return new Map(
    server.processes().map((pid) => {
      const threads = threadCpuNs(pid);
      const main = threads.get(pid) ?? 0;
      let all = 0;
      for (const ns of threads.values()) all += ns;
      return [pid, { main, others: all - main }];
    }),
  );
}

async function main(): Promise<void> {
  const kind = process.argv[2] ?? 'scalar';
  const calls = Number(process.argv[3] ?? '2000');
  const workloads: Record<string, () => Workload> = {
    small: () => numericWorkload(10, 2000),
    // Bulk: where the rows' own cost shows, call by call (the calls are few; ask for 20-50).
    numeric: () => numericWorkload(200_000, 2000),
    string: () => stringWorkload(100_000, 2000),
  };
  const workload = (workloads[kind] ?? scalarWorkload)();
  const servers: [string, ChildServer][] = [
    [CEILING, await startCeiling()],
    [PLUGIN, await startPlugin(2, pluginFlagsFromEnv())],
  ];
  const baseline = process.env['BENCH_BASELINE'];
  if (baseline) servers.push(['baseline', await startPlugin(2, pluginFlagsFromEnv(), {}, baseline)]);
  const targets: Target[] = servers.map(([name, server]) => target(name, server, name !== CEILING));
  try {
    await sequentialLatencies(targets, workload, Math.min(200, calls), Math.min(100, calls));
    const before = servers.map(([, server]) => sample(server));
    const clientBefore = process.cpuUsage();
    const results = await sequentialLatencies(targets, workload, calls, 0);
    const client = process.cpuUsage(clientBefore);
    process.stdout.write(`${calls} sequential ${workload.name} calls per server, in turn; CPU µs per call\n`);
    servers.forEach(([name, server], k) => {
      const after = sample(server);
      const parts = [...after].map(([pid, cpu], i) => {
        const was = before[k]?.get(pid) ?? { main: 0, others: 0 };
        const us = (ns: number): string => (ns / 1000 / calls).toFixed(0);
        const main = cpu.main - was.main;
        const others = cpu.others - was.others;
        return `${i === 0 ? 'main' : `sandbox ${i}`} ${us(main + others)} (main thread ${us(main)}, other threads ${us(others)})`;
      });
      const latency = results.get(name);
      process.stdout.write(
        `  ${name.padEnd(9)} p50 ${ms(latency?.p50Ms ?? Number.NaN)}  p99 ${ms(latency?.p99Ms ?? Number.NaN)}  CPU ${parts.join(', ')}\n`,
      );
    });
    process.stdout.write(`  client ${Math.round((client.user + client.system) / (calls * servers.length))} µs a call\n`);
  } finally {
    for (const t of targets) t.client.close();
    for (const [, server] of servers) await server.stop();
  }
}

void main();
