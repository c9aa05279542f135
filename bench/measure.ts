/**
 * Measurements, each run the same way against the ceiling and the plugin: throughput of one big
 * call, latency of many small sequential calls, many concurrent clients, and the memory soak.
 */
import type * as grpc from '@grpc/grpc-js';

import type { ChildServer } from './child';
import { type CallOutcome, connect, evaluate, expectOk } from './client';
import { NoiseMonitor } from './noise';
import { cpuTicks, processTree, TICK_MS } from './proc';
import { type Latency, latency, median } from './stats';
import { verifyReplies, type Workload } from './workloads';

export interface Target {
  readonly name: string;
  readonly server: ChildServer;
  readonly client: grpc.Client;
  /** True for the plugin: its reply values are checked, not only its row counts. */
  readonly checkValues: boolean;
}

export function target(name: string, server: ChildServer, checkValues: boolean): Target {
  return { name, server, client: connect(server.address), checkValues };
}

/** Clock ticks a second in /proc/<pid>/stat (USER_HZ, 100 on Linux). */

/** CPU time of the server's processes, in ms (10 ms resolution). */
function serverCpuMs(server: ChildServer): number {
  return processTree(server.pid).reduce((sum, pid) => sum + cpuTicks(pid), 0) * TICK_MS;
}

interface MeasuredCall {
  readonly outcome: CallOutcome;
  readonly baseRssBytes: number;
  readonly peakRssBytes: number;
  /** CPU the server used for the call: unlike wall time, barely moved by other processes' load. */
  readonly cpuMs: number;
  /** CPU the bench's client used for the call. */
  readonly clientCpuMs: number;
  /** Share of the CPUs other processes used during the call. */
  readonly othersShare: number;
  readonly checked: number;
}

const noise = new NoiseMonitor();
/** Before each timed call, wait up to QUIET_WAIT_MS for half a second in which others use under 10% of the CPUs. */
const QUIET_WAIT_MS = Number(process.env['BENCH_QUIET_WAIT_MS'] ?? '10000');

/** One call, with the server's peak RSS and CPU over it; the replies are checked after the clock stops. */
async function measuredCall(t: Target, workload: Workload): Promise<MeasuredCall> {
  await noise.waitForQuiet(0.1, 500, QUIET_WAIT_MS);
  const noiseBefore = noise.sample();
  t.server.resetPeak();
  const baseRssBytes = t.server.rssBytes();
  const cpuBeforeMs = serverCpuMs(t.server);
  const clientBefore = process.cpuUsage();
  const outcome = expectOk(
    await evaluate(t.client, workload.metadata, workload.messages, true),
    workload.rowsOut,
    `${t.name} ${workload.name}`,
  );
  const clientUsage = process.cpuUsage(clientBefore);
  const clientCpuMs = (clientUsage.user + clientUsage.system) / 1000;
  const cpuMs = serverCpuMs(t.server) - cpuBeforeMs;
  const othersShare = noise.foreignShare(noiseBefore);
  const peakRssBytes = t.server.peakRssBytes();
  const checked = t.checkValues ? verifyReplies(workload, outcome.replies) : 0;
  return { outcome, baseRssBytes, peakRssBytes, cpuMs, clientCpuMs, othersShare, checked };
}

export interface Throughput {
  readonly rowsPerSec: number;
  readonly medianMs: number;
  readonly runsMs: number[];
  /** Share of the CPUs other processes used during each run. */
  readonly othersShares: number[];
  readonly baseRssBytes: number;
  readonly peakRssBytes: number;
  readonly replyBytes: number;
  readonly valuesChecked: number;
  /** Median server CPU time of a call. */
  readonly cpuMs: number;
  /** Median client CPU time of a call. */
  readonly clientCpuMs: number;
}

/** One warm-up call each, then `reps` calls alternating between the targets; median per target. */
export async function throughput(targets: readonly Target[], workload: Workload, reps: number): Promise<Map<string, Throughput>> {
  const runs = new Map<string, MeasuredCall[]>();
  for (const t of targets) {
    await measuredCall(t, workload);
    runs.set(t.name, []);
  }
  for (let rep = 0; rep < reps; rep++) {
    for (const t of targets) runs.get(t.name)?.push(await measuredCall(t, workload));
  }
  const results = new Map<string, Throughput>();
  for (const [name, list] of runs) {
    const runsMs = list.map((r) => r.outcome.ms);
    const medianMs = median(runsMs);
    results.set(name, {
      rowsPerSec: workload.rowsIn / (medianMs / 1000),
      medianMs,
      runsMs,
      othersShares: list.map((r) => r.othersShare),
      baseRssBytes: Math.min(...list.map((r) => r.baseRssBytes)),
      peakRssBytes: Math.max(...list.map((r) => r.peakRssBytes)),
      replyBytes: list[0]?.outcome.replyBytes ?? 0,
      valuesChecked: list.reduce((sum, r) => sum + r.checked, 0),
      cpuMs: median(list.map((r) => r.cpuMs)),
      clientCpuMs: median(list.map((r) => r.clientCpuMs)),
    });
  }
  return results;
}

/** `calls` sequential calls after `warmupCalls`; per-call wall time from first write to status. */
export async function sequentialLatency(
  t: Target,
  workload: Workload,
  calls: number,
  warmupCalls: number,
): Promise<Latency & { valuesChecked: number }> {
  const results = await sequentialLatencies([t], workload, calls, warmupCalls);
  return results.get(t.name) as Latency & { valuesChecked: number };
}

/**
 * The same, for several servers at once, call by call in turn (one call to each, then the next
 * round), so a noisy moment of the machine falls on all of them alike: by server name.
 */
export async function sequentialLatencies(
  targets: readonly Target[],
  workload: Workload,
  calls: number,
  warmupCalls: number,
): Promise<Map<string, Latency & { valuesChecked: number }>> {
  for (let i = 0; i < warmupCalls; i++)
    for (const t of targets) expectOk(await evaluate(t.client, workload.metadata, workload.messages), workload.rowsOut, t.name);
  const timesMs = targets.map((): number[] => []);
  const valuesChecked = targets.map(() => 0);
  for (let i = 0; i < calls; i++) {
    for (const [k, t] of targets.entries()) {
      const outcome = expectOk(await evaluate(t.client, workload.metadata, workload.messages, t.checkValues), workload.rowsOut, t.name);
      timesMs[k]?.push(outcome.ms);
      if (t.checkValues && i % 50 === 0) valuesChecked[k] = (valuesChecked[k] ?? 0) + verifyReplies(workload, outcome.replies);
    }
  }
  return new Map(targets.map((t, k) => [t.name, { ...latency(timesMs[k] ?? []), valuesChecked: valuesChecked[k] ?? 0 }]));
}

export interface Concurrent extends Latency {
  readonly rowsPerSec: number;
  readonly wallMs: number;
  readonly peakRssBytes: number;
}

/** `clients` channels of their own, each making `callsPerClient` sequential calls at once. */
export async function concurrentClients(t: Target, workload: Workload, clients: number, callsPerClient: number): Promise<Concurrent> {
  const channels = Array.from({ length: clients }, () => connect(t.server.address));
  try {
    await Promise.all(channels.map((c) => evaluate(c, workload.metadata, workload.messages)));
    t.server.resetPeak();
    const timesMs: number[] = [];
    const started = performance.now();
    await Promise.all(
      channels.map(async (channel) => {
        for (let i = 0; i < callsPerClient; i++) {
          const outcome = expectOk(
            await evaluate(channel, workload.metadata, workload.messages, i === 0 && t.checkValues),
            workload.rowsOut,
            t.name,
          );
          if (i === 0 && t.checkValues) verifyReplies(workload, outcome.replies);
          timesMs.push(outcome.ms);
        }
      }),
    );
    const wallMs = performance.now() - started;
    return {
      ...latency(timesMs),
      rowsPerSec: (clients * callsPerClient * workload.rowsIn) / (wallMs / 1000),
      wallMs,
      peakRssBytes: t.server.peakRssBytes(),
    };
  } finally {
    for (const c of channels) c.close();
  }
}

export interface Soak {
  readonly calls: number;
  /** RSS after every `everyCalls` calls, the first taken after the warm-up. */
  readonly rssBytes: number[];
  readonly everyCalls: number;
  readonly wallMs: number;
}

/** `calls` calls cycling through the workloads, RSS sampled along the way. */
export async function soak(
  t: Target,
  workloads: readonly Workload[],
  calls: number,
  everyCalls: number,
  warmupCalls: number,
): Promise<Soak> {
  const call = async (i: number): Promise<void> => {
    const w = workloads[i % workloads.length] as Workload;
    expectOk(await evaluate(t.client, w.metadata, w.messages), w.rowsOut, `${t.name} soak`);
  };
  for (let i = 0; i < warmupCalls; i++) await call(i);
  const rssBytes = [t.server.rssBytes()];
  const started = performance.now();
  for (let i = 0; i < calls; i++) {
    await call(i);
    if ((i + 1) % everyCalls === 0) rssBytes.push(t.server.rssBytes());
  }
  return { calls, rssBytes, everyCalls, wallMs: performance.now() - started };
}
