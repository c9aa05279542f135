/** Prints the bench's figures, each next to the ceiling's from the same run, and the targets. */
import type { Concurrent, Soak, Throughput } from './measure';
import { type Latency, mb, ms, rate, ratio } from './stats';
import type { Workload } from './workloads';

export const CEILING = 'ceiling';
export const PLUGIN = 'plugin';

export interface TargetCheck {
  readonly name: string;
  readonly value: string;
  readonly target: string;
  readonly met: boolean;
}

const print = (line = ''): void => {
  process.stdout.write(`${line}\n`);
};

export function heading(text: string): void {
  print();
  print(`== ${text}`);
}

function throughputLine(name: string, t: Throughput): void {
  const runs = t.runsMs.map((v, i) => `${v.toFixed(0)} (${((t.othersShares[i] ?? 0) * 100).toFixed(0)}%)`).join(', ');
  const checked = t.valuesChecked > 0 ? `, ${t.valuesChecked} values checked` : '';
  print(
    `  ${name.padEnd(10)} ${rate(t.rowsPerSec).padStart(15)}  median ${ms(t.medianMs)} of [${runs}] ms (others' CPU share)  CPU server ${t.cpuMs.toFixed(0)} ms, client ${t.clientCpuMs.toFixed(0)} ms` +
      `  RSS ${mb(t.baseRssBytes)} -> peak ${mb(t.peakRssBytes)}${checked}`,
  );
}

/** Prints one throughput workload; returns plugin / ceiling rows per second. */
export function printThroughput(workload: Workload, results: Map<string, Throughput>): number {
  const ceiling = results.get(CEILING);
  const plugin = results.get(PLUGIN);
  heading(`${workload.name}: ${workload.messages.length} request messages, ${mb(workload.requestBytes)} on the wire in`);
  for (const [name, t] of results) throughputLine(name, t);
  const value = ceiling && plugin ? plugin.rowsPerSec / ceiling.rowsPerSec : Number.NaN;
  const cpuRatio = ceiling && plugin ? ceiling.cpuMs / plugin.cpuMs : Number.NaN;
  print(
    `  plugin/ceiling ${ratio(value)} in rows/s; ceiling CPU / plugin CPU ${ratio(cpuRatio)}` +
      `   (reply ${mb(plugin?.replyBytes ?? 0)} from the plugin, ${mb(ceiling?.replyBytes ?? 0)} from the ceiling)`,
  );
  return value;
}

function latencyLine(name: string, l: Latency): string {
  return `  ${name.padEnd(10)} p50 ${ms(l.p50Ms)}  p95 ${ms(l.p95Ms)}  p99 ${ms(l.p99Ms)}`;
}

export function printLatency(title: string, ceiling: Latency, plugin: Latency & { valuesChecked: number }): void {
  heading(title);
  print(latencyLine(CEILING, ceiling));
  print(`${latencyLine(PLUGIN, plugin)}  (${plugin.valuesChecked} values checked)`);
  print(
    `  plugin-ceiling p50 +${ms(plugin.p50Ms - ceiling.p50Ms)}, p95 +${ms(plugin.p95Ms - ceiling.p95Ms)}, p99 +${ms(plugin.p99Ms - ceiling.p99Ms)};` +
      ` p50 ratio ${ratio(plugin.p50Ms / ceiling.p50Ms)}`,
  );
}

export function printConcurrent(title: string, ceiling: Concurrent, plugin: Concurrent): void {
  heading(title);
  for (const [name, c] of [
    [CEILING, ceiling],
    [PLUGIN, plugin],
  ] as const) {
    print(`${latencyLine(name, c)}  ${rate(c.rowsPerSec).padStart(15)} over ${ms(c.wallMs)}  peak RSS ${mb(c.peakRssBytes)}`);
  }
  print(`  plugin/ceiling rows/s ${ratio(plugin.rowsPerSec / ceiling.rowsPerSec)}, p50 ratio ${ratio(plugin.p50Ms / ceiling.p50Ms)}`);
}

export function printSoak(soak: Soak, rowsPerCall: number): void {
  heading(`memory soak: ${soak.calls} calls of ${rowsPerCall} rows (numeric and string alternating), plugin`);
  const samples = soak.rssBytes.map((b, i) => `${i * soak.everyCalls}: ${(b / 1024 / 1024).toFixed(1)}`).join('  ');
  print(`  RSS (MiB) after N calls: ${samples}`);
  const first = soak.rssBytes[0] ?? 0;
  const last = soak.rssBytes[soak.rssBytes.length - 1] ?? 0;
  const mid = soak.rssBytes[Math.floor(soak.rssBytes.length / 2)] ?? 0;
  print(
    `  before ${mb(first)}, after ${mb(last)} (${(((last - first) / first) * 100).toFixed(1)}%); second half ${mb(mid)} -> ${mb(last)}` +
      ` (${(((last - mid) / mid) * 100).toFixed(1)}%); ${ms(soak.wallMs / soak.calls)} a call`,
  );
}

export function printInFlight(label: string, t: Throughput, wireBytes: number): number {
  const extra = t.peakRssBytes - t.baseRssBytes;
  const multiple = extra / wireBytes;
  print(
    `  ${label}: RSS ${mb(t.baseRssBytes)} before, peak ${mb(t.peakRssBytes)} (+${mb(extra)}) for ${mb(wireBytes)} on the wire = ${ratio(multiple)}x wire size`,
  );
  return multiple;
}

export function printTargets(checks: readonly TargetCheck[]): void {
  heading('targets');
  for (const c of checks) print(`  ${c.met ? 'MET ' : 'MISS'}  ${c.name.padEnd(40)} ${c.value.padEnd(22)} target ${c.target}`);
}
