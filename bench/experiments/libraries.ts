/**
 * What require() and the console cost (docs/libraries.md, bench/RESULTS.md). On one plugin of one
 * sandbox thread, interleaved so that a busy machine weighs on both sides alike:
 *   - warm: the same call with and without a require, each on its kept context (same app, user and
 *     script), p50 and p90 over ROUNDS calls;
 *   - first require in a fresh context: a new app id each call, with and without the require;
 *   - no library: a fresh-context call on a plugin with the default set and one with SSE_LIBRARIES=none;
 *   - start-up time and the sandbox process's resident memory, default set against none, and after
 *     every bundled library was required once.
 * And, on isolated-vm directly, compiling the library script per isolate with and without V8's code cache.
 *
 *   npx tsc -p tsconfig.json && node dist/workers/libraries/build.js
 *   node --no-node-snapshot --no-concurrent-recompilation dist/bench/experiments/libraries.js
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { status } from '@grpc/grpc-js';

import { readBundled } from '../../src/libraries/bundled';
import { startTestPlugin, type TestPlugin } from '../../test/helpers/plugin';
import { evalText } from '../../test/helpers/sandbox-calls';
import { isolatedVm } from '../../workers/thread/isolated-vm';
import { librarySource } from '../../workers/thread/libraries';

const ROUNDS = Number(process.env['LIBRARIES_ROUNDS'] ?? 400);
const LIBRARIES = ['simple-statistics', 'date-fns', 'd3-array', 'qlik'];

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
}

function summary(values: number[]): string {
  return `p50 ${quantile(values, 0.5).toFixed(3)} ms, p90 ${quantile(values, 0.9).toFixed(3)} ms`;
}

async function timedCall(t: TestPlugin, script: string, appId: string): Promise<number> {
  const started = performance.now();
  const result = await evalText(t.client, script, { common: { appId, userId: 'bench', cardinality: 1 } });
  const ms = performance.now() - started;
  if (result.code !== status.OK) throw new Error(`${script}: ${result.details}`);
  return ms;
}

function residentMb(t: TestPlugin): number {
  const pid = t.plugin.pool.processes()[0]?.pid;
  const statusText = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(statusText)?.[1]) / 1024;
}

async function interleaved(t: TestPlugin, a: () => Promise<number>, b: () => Promise<number>): Promise<[number[], number[]]> {
  const as: number[] = [];
  const bs: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    if (i % 2 === 0) {
      as.push(await a());
      bs.push(await b());
    } else {
      bs.push(await b());
      as.push(await a());
    }
  }
  void t;
  return [as, bs];
}

async function warm(t: TestPlugin): Promise<void> {
  for (const name of LIBRARIES) {
    const withLib = `(require(${JSON.stringify(name)}), args[0] * 2)`;
    const without = `(void 0, args[0] * 2)`;
    for (let i = 0; i < 20; i++) await timedCall(t, withLib, 'warm-a');
    const [a, b] = await interleaved(
      t,
      () => timedCall(t, withLib, 'warm-a'),
      () => timedCall(t, without, 'warm-b'),
    );
    console.log(
      `warm ${name}: with require ${summary(a)}; without ${summary(b)}; p50 difference ${(quantile(a, 0.5) - quantile(b, 0.5)).toFixed(3)} ms`,
    );
  }
}

async function firstRequire(t: TestPlugin): Promise<void> {
  let n = 0;
  for (const name of LIBRARIES) {
    const withLib = `(require(${JSON.stringify(name)}), args[0] * 2)`;
    const without = `(void 0, args[0] * 2)`;
    const rounds = Math.min(ROUNDS, 150);
    const as: number[] = [];
    const bs: number[] = [];
    for (let i = 0; i < rounds; i++) {
      as.push(await timedCall(t, withLib, `fresh-${n++}`));
      bs.push(await timedCall(t, without, `fresh-${n++}`));
    }
    console.log(
      `first require of ${name} in a fresh context: ${summary(as)}; without ${summary(bs)}; p50 difference ${(quantile(as, 0.5) - quantile(bs, 0.5)).toFixed(3)} ms`,
    );
  }
}

async function started(env: Record<string, string>): Promise<{ t: TestPlugin; startMs: number }> {
  const at = performance.now();
  const t = await startTestPlugin({ SSE_WORKERS: '1', ...env });
  return { t, startMs: performance.now() - at };
}

async function startupAndMemory(): Promise<void> {
  for (let round = 0; round < 3; round++) {
    const all = await started({});
    const none = await started({ SSE_LIBRARIES: 'none' });
    await timedCall(all.t, '1', 'mem');
    await timedCall(none.t, '1', 'mem');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const idleAll = residentMb(all.t);
    const idleNone = residentMb(none.t);
    await timedCall(all.t, `[${LIBRARIES.map((name) => `require(${JSON.stringify(name)})`).join(', ')}].length`, 'mem');
    const afterRequire = residentMb(all.t);
    const [withDefault, withNone] = await interleaved(
      all.t,
      async () => timedCall(all.t, 'args[0] * 2', `nolib-${Math.random()}`),
      async () => timedCall(none.t, 'args[0] * 2', `nolib-${Math.random()}`),
    );
    console.log(
      `round ${round}: start ${all.startMs.toFixed(0)} ms (default set) vs ${none.startMs.toFixed(0)} ms (none); sandbox RSS ${idleAll.toFixed(1)} MB vs ${idleNone.toFixed(1)} MB idle, ${afterRequire.toFixed(1)} MB after requiring all four`,
    );
    console.log(`  fresh-context call without a library: default set ${summary(withDefault)}; SSE_LIBRARIES=none ${summary(withNone)}`);
    await all.t.stop();
    await none.t.stop();
  }
}

function compileCost(): void {
  const { libraries, inspector } = readBundled(path.join(__dirname, '..', '..', 'libraries'));
  const source = librarySource({ libraries, inspector });
  const isolate0 = new isolatedVm.Isolate({ memoryLimit: 128 });
  const first = isolate0.compileScriptSync(source, { produceCachedData: true });
  const cachedData = (first as typeof first & { cachedData?: InstanceType<typeof isolatedVm.ExternalCopy<ArrayBuffer>> }).cachedData;
  isolate0.dispose();
  const cold: number[] = [];
  const cached: number[] = [];
  const bind: number[] = [];
  for (let i = 0; i < 30; i++) {
    const isolate = new isolatedVm.Isolate({ memoryLimit: 128 });
    let at = performance.now();
    isolate.compileScriptSync(source);
    cold.push(performance.now() - at);
    isolate.dispose();
    const other = new isolatedVm.Isolate({ memoryLimit: 128 });
    at = performance.now();
    const script = other.compileScriptSync(source, cachedData ? { cachedData } : {});
    cached.push(performance.now() - at);
    const heapBefore = other.getHeapStatisticsSync().used_heap_size;
    const context = other.createContextSync();
    at = performance.now();
    script.runSync(context);
    bind.push(performance.now() - at);
    if (i === 0)
      console.log(
        `isolate heap: ${((other.getHeapStatisticsSync().used_heap_size - heapBefore) / 1024).toFixed(0)} KB more after compile and one bind`,
      );
    other.dispose();
  }
  console.log(
    `compile of the library script (${(source.length / 1024).toFixed(0)} KB) per isolate: ${summary(cold)} without code cache; ${summary(cached)} with it; bind per context ${summary(bind)}`,
  );
}

async function main(): Promise<void> {
  compileCost();
  const { t } = await started({});
  try {
    await warm(t);
    await firstRequire(t);
  } finally {
    await t.stop();
  }
  await startupAndMemory();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
