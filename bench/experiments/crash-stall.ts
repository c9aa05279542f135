/**
 * What a sandbox crash costs a bystander: a LOAD-style client (one-row SCALAR calls of another app and
 * user, one after another) runs while a script ends its sandbox process in each way a script can, on a
 * plugin started with the default process count for SSE_WORKERS=2 (one process). Reported per way of
 * dying: the bystander's worst gap between two answers while the crash happens, its worst gap in the
 * same run before the crash (the noise floor), its failed calls, and what the crasher's call got.
 * Variants are started one after another in the same run, interleaved per round, so a shared machine's
 * noise falls on each alike.
 *
 *   npm run build
 *   node --no-node-snapshot --no-concurrent-recompilation dist/bench/experiments/crash-stall.js [rounds]
 *
 * CRASH_VARIANTS: semicolon-separated variants, each `name:VAR=value,VAR=value` (default: today's one
 * process without a spare against one process with a spare, and two processes of one thread).
 */
import { status } from '@grpc/grpc-js';
import { QlikClient } from '../../src/cli/qlik-client';
import { startTestPlugin, type TestPlugin } from '../../test/helpers/plugin';
import { num, numbers } from '../../test/helpers/qlik-client';
import { evalRows, evalText } from '../../test/helpers/sandbox-calls';

const BASELINE_MS = 1_500;
const AFTER_MS = 1_000;

/** Ways a script ends its sandbox process, with the settings that make each cheap to trigger. */
const CRASHES: readonly { readonly name: string; readonly script: string; readonly env: Record<string, string> }[] = [
  { name: 'V8 out of memory', script: 'new Array(1e8).fill(0).length', env: { SSE_MEMORY_LIMIT_MB: '32' } },
  { name: 'Array.from 1e8', script: 'Array.from({ length: 1e8 }).length', env: { SSE_MEMORY_LIMIT_MB: '32' } },
  {
    name: 'Intl bomb (fence)',
    script: '{ const a = []; for (;;) a.push(new Intl.DateTimeFormat("en", { timeZone: "UTC", dateStyle: "full" })); }',
    env: { SSE_SANDBOX_MEMORY_MB: '300', SSE_SCRIPT_TIMEOUT_MS: '30000' },
  },
  {
    name: 'stuck (regex compile)',
    env: { SSE_SCRIPT_TIMEOUT_MS: '800' },
    script:
      "{ const p = Array.from({ length: 4096 }, (_, i) => 'a' + i.toString(36)).join('|'); new RegExp((p + '|').repeat(300) + 'zz').test('zz'); for (;;) {} }",
  },
];

interface Variant {
  readonly name: string;
  readonly env: Record<string, string>;
}

function variants(): Variant[] {
  const spec =
    process.env['CRASH_VARIANTS'] ??
    'one process:SSE_SPARE_SANDBOXES=0;one process + spare:SSE_SPARE_SANDBOXES=1;two processes:SSE_SANDBOX_PROCESSES=2,SSE_SPARE_SANDBOXES=0';
  return spec.split(';').map((part) => {
    const [name, vars = ''] = part.split(':');
    const env = Object.fromEntries(
      vars
        .split(',')
        .filter((v) => v !== '')
        .map((v) => v.split('=') as [string, string]),
    );
    return { name: name ?? part, env };
  });
}

interface Gaps {
  worstMs: number;
  calls: number;
  failures: string[];
}

/** Sequential one-row calls until stopped; the worst gap between answers, and what failed. */
function loadBystander(address: string): { stop(): Promise<Gaps>; mark(): Gaps } {
  const client = new QlikClient(address);
  let running = true;
  let current: Gaps = { worstMs: 0, calls: 0, failures: [] };
  let last = performance.now();
  const loop = (async () => {
    let row = 0;
    while (running) {
      const result = await evalRows(client, 'args[0] * 2', [[num(row)]], {});
      const now = performance.now();
      current.worstMs = Math.max(current.worstMs, now - last);
      last = now;
      current.calls++;
      if (result.code !== status.OK || numbers(result)[0] !== row * 2) current.failures.push(`${result.code} ${result.details}`);
      row++;
    }
  })();
  return {
    /** Ends the current window and starts a new one. */
    mark() {
      const ended = current;
      current = { worstMs: 0, calls: 0, failures: [] };
      return ended;
    },
    async stop() {
      running = false;
      await loop;
      client.close();
      return current;
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function settled(t: TestPlugin): Promise<void> {
  const until = performance.now() + 20_000;
  // Loosely typed: the same script measures trees from before the spare existed.
  const pool = t.plugin.pool as unknown as { spareProcesses?: () => { ready: boolean }[] };
  const config = t.config as unknown as { spareSandboxes?: number };
  const spares = (): number => pool.spareProcesses?.().filter((p) => p.ready).length ?? 0;
  const want = config.spareSandboxes ?? 0;
  while (performance.now() < until) {
    if (t.plugin.pool.processes().every((p) => p.ready && p.busy === 0) && spares() >= want) return;
    await sleep(20);
  }
}

async function oneCrash(variant: Variant, crash: (typeof CRASHES)[number]): Promise<string> {
  const t = await startTestPlugin({ SSE_WORKERS: '2', SSE_SCRIPT_TIMEOUT_MS: '5000', ...crash.env, ...variant.env });
  try {
    await settled(t);
    const bystander = loadBystander(t.address);
    await sleep(BASELINE_MS);
    const before = bystander.mark();
    const crasher = new QlikClient(t.address);
    const started = performance.now();
    const result = await evalText(crasher, crash.script, { common: { appId: 'other-app', userId: 'UserDirectory=X; UserId=crasher' } });
    const crashMs = performance.now() - started;
    crasher.close();
    await sleep(AFTER_MS);
    const during = await bystander.stop();
    const restarts = t.plugin.pool.restarts;
    return [
      variant.name.padEnd(22),
      crash.name.padEnd(22),
      `before ${before.worstMs.toFixed(0).padStart(4)} ms`,
      `during ${during.worstMs.toFixed(0).padStart(5)} ms`,
      `calls ${String(during.calls).padStart(5)}`,
      `failed ${during.failures.length}${during.failures.length > 0 ? ` (${during.failures[0]})` : ''}`,
      `crasher ${status[result.code]} in ${crashMs.toFixed(0)} ms, restarts ${restarts}`,
    ].join(' | ');
  } finally {
    await t.stop();
  }
}

async function main(): Promise<void> {
  const rounds = Number(process.argv[2] ?? 1);
  const only = process.env['CRASH_ONLY'];
  for (let round = 0; round < rounds; round++) {
    for (const crash of CRASHES) {
      if (only !== undefined && !crash.name.includes(only)) continue;
      for (const variant of variants()) console.log(await oneCrash(variant, crash));
    }
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
