/**
 * The memory bombs of security.md ("Memory, measured"), re-measured for the sandbox-process design.
 * Each bomb runs alone on a fresh plugin (started in this process, so this process is the front),
 * while every sandbox process's resident memory is sampled every 50 ms from /proc. Reported per bomb:
 * the outcome, the call's time, the peak growth of each sandbox process over its idle size, the
 * sandbox restarts by reason, whether the sandboxes' memory is back 1.5 s after the call, the front's
 * RSS before and after, and how busy the rest of the machine was (the cores are shared).
 *
 *   npx tsc -p tsconfig.json
 *   node --no-node-snapshot --no-concurrent-recompilation dist/bench/experiments/bombs.js [limitMb…]
 *
 * Linux only (it reads /proc). BOMBS_TIMEOUT_MS (default 3000), BOMBS_RUNS (default 1) and
 * BOMBS_ONLY (a substring of a bomb's name) narrow a run.
 */
import { loadavg } from 'node:os';
import type { RestartReason } from '../../src/sandboxes/pool';
import { startTestPlugin, type TestPlugin } from '../../test/helpers/plugin';
import { evalText } from '../../test/helpers/sandbox-calls';
import { NoiseMonitor } from '../noise';

const SAMPLE_MS = 50;
const SETTLE_MS = 1_500;
const MB = 1024 * 1024;
const REASONS: readonly RestartReason[] = ['crash', 'exit', 'memory-fence', 'stuck', 'fatal', 'start-failure'];

const BOMBS: readonly (readonly [string, string])[] = [
  ['strings pushed for ever', '{ const a = []; for (;;) a.push("x".repeat(1000) + Math.random()); }'],
  ['numbers pushed for ever', '{ const a = []; for (let i = 0; ; i++) a.push(i); }'],
  ['string concatenation for ever', '{ let s = ""; for (;;) s += "xxxxxxxxxxxxxxxxxxxx" + s.length; }'],
  ['spread of a 1e8-character string', "[...'.'.repeat(1e8)].length"],
  ['JSON.stringify of 1e7 strings', 'JSON.stringify(new Array(1e7).fill("abcdefghij")).length'],
  ['a Map grown for ever', '{ const m = new Map(); for (let i = 0; ; i++) m.set(i, i); }'],
  ['an object grown with keys', '{ const o = {}; for (let i = 0; ; i++) o["k" + i] = i; }'],
  ['new Array(1e8).fill(0)', 'new Array(1e8).fill(0).length'],
  ['Array.from({ length: 1e8 })', 'Array.from({ length: 1e8 }).length'],
  [
    'Intl.DateTimeFormat objects for ever',
    '{ const a = []; for (;;) a.push(new Intl.DateTimeFormat("en", { timeZone: "UTC", dateStyle: "full" })); }',
  ],
  ['new Float64Array(1e9)', 'new Float64Array(1e9).length'],
  ['typed arrays allocated for ever', '{ const a = []; for (;;) a.push(new Float64Array(1e6)); }'],
  ["'x'.repeat(2 ** 29)", "'x'.repeat(2 ** 29).length"],
];

interface Outcome {
  readonly limitMb: number;
  readonly bomb: string;
  readonly status: string;
  readonly details: string;
  readonly ms: number;
  /** Peak growth over the idle size, per sandbox process index, in MB. */
  readonly peakGrowthMb: readonly number[];
  readonly restarts: string;
  /** The sandboxes' resident total 1.5 s after the call, minus before it, in MB. */
  readonly heldMb: number;
  readonly frontBeforeMb: number;
  readonly frontAfterMb: number;
  readonly nextCallOk: boolean;
  readonly othersCpu: number;
  readonly load1: number;
}

const STATUS_NAMES: Record<number, string> = {
  0: 'OK',
  3: 'INVALID_ARGUMENT',
  4: 'DEADLINE_EXCEEDED',
  8: 'RESOURCE_EXHAUSTED',
  13: 'INTERNAL',
  14: 'UNAVAILABLE',
};

function residentByIndex(t: TestPlugin): Map<number, number> {
  return new Map(t.plugin.pool.residentBytes().map(({ index, bytes }) => [index, bytes]));
}

function sumMb(sizes: Map<number, number>): number {
  let total = 0;
  for (const bytes of sizes.values()) total += bytes;
  return total / MB;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function allReady(t: TestPlugin, processes: number, withinMs: number): Promise<void> {
  const until = performance.now() + withinMs;
  while (t.plugin.pool.processes().filter((p) => p.ready).length < processes && performance.now() < until) await sleep(20);
}

async function runBomb(limitMb: number, name: string, script: string, timeoutMs: number): Promise<Outcome> {
  const t = await startTestPlugin({
    SSE_WORKERS: '2',
    SSE_SANDBOX_PROCESSES: '2',
    SSE_MEMORY_LIMIT_MB: String(limitMb),
    SSE_SCRIPT_TIMEOUT_MS: String(timeoutMs),
  });
  try {
    await sleep(500); // let start-up garbage settle before the idle figures
    const idle = residentByIndex(t);
    const frontBeforeMb = process.memoryUsage.rss() / MB;
    const peak = new Map<number, number>();
    const sampler = setInterval(() => {
      for (const [index, bytes] of residentByIndex(t)) peak.set(index, Math.max(peak.get(index) ?? 0, bytes - (idle.get(index) ?? bytes)));
    }, SAMPLE_MS);
    const noise = new NoiseMonitor();
    const from = noise.sample();
    const started = performance.now();
    const result = await evalText(t.client, script);
    const ms = performance.now() - started;
    const othersCpu = noise.foreignShare(from);
    await sleep(SETTLE_MS);
    clearInterval(sampler);
    await allReady(t, 2, 10_000);
    const heldMb = sumMb(residentByIndex(t)) - sumMb(idle);
    const next = await evalText(t.client, 'args[0] + 1');
    const restarts = REASONS.map((reason) => [reason, t.plugin.pool.restartsFor(reason)] as const)
      .filter(([, n]) => n > 0)
      .map(([reason, n]) => `${n} ${reason}`)
      .join(', ');
    return {
      limitMb,
      bomb: name,
      status: STATUS_NAMES[result.code] ?? String(result.code),
      details: result.details,
      ms,
      peakGrowthMb: [0, 1].map((index) => (peak.get(index) ?? 0) / MB),
      restarts: restarts || 'none',
      heldMb,
      frontBeforeMb,
      frontAfterMb: process.memoryUsage.rss() / MB,
      nextCallOk: next.code === 0,
      othersCpu,
      load1: loadavg()[0] ?? 0,
    };
  } finally {
    await t.stop();
  }
}

function line(o: Outcome): string {
  const peaks = o.peakGrowthMb.map((mb) => mb.toFixed(0)).join(' / ');
  return [
    `${o.limitMb} MB`,
    o.bomb,
    o.status,
    `${(o.ms / 1000).toFixed(2)} s`,
    `peak +${peaks} MB`,
    `restarts: ${o.restarts}`,
    `held ${o.heldMb.toFixed(0)} MB after ${SETTLE_MS} ms`,
    `front ${o.frontBeforeMb.toFixed(0)} → ${o.frontAfterMb.toFixed(0)} MB`,
    `next call ${o.nextCallOk ? 'OK' : 'FAILED'}`,
    `others' CPU ${(o.othersCpu * 100).toFixed(0)} %, load ${o.load1.toFixed(1)}`,
    o.details,
  ].join(' | ');
}

async function main(): Promise<void> {
  const limits = process.argv
    .slice(2)
    .map(Number)
    .filter((n) => n > 0);
  const timeoutMs = Number(process.env['BOMBS_TIMEOUT_MS'] ?? '3000');
  const runs = Number(process.env['BOMBS_RUNS'] ?? '1');
  const only = process.env['BOMBS_ONLY'];
  for (const limitMb of limits.length > 0 ? limits : [64, 128]) {
    for (const [name, script] of BOMBS) {
      if (only !== undefined && !name.includes(only)) continue;
      for (let run = 0; run < runs; run++) process.stdout.write(`${line(await runBomb(limitMb, name, script, timeoutMs))}\n`);
    }
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exitCode = 1;
});
