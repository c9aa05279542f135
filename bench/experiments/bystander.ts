/**
 * A bystander's LOAD (one-row calls of one app, one after another) beside another app whose rows
 * busy-wait: every 21st row, every row, every row under a new app id each call (unique), or none. It
 * shows what a script that holds the sandbox's main thread costs others (workers/fast-path.ts: the
 * budget, a proven script's allowance, the unproven share). Each checkout runs its own plugin in this
 * process (2 workers, the other defaults), one after the other.
 *
 *   npm run build
 *   node --no-node-snapshot dist/bench/experiments/bystander.js [every21|steady|unique|none] [seconds] [busyMs]
 *   BENCH_BASELINE=/path/to/checkout node --no-node-snapshot dist/bench/experiments/bystander.js every21 10
 */
import path from 'node:path';

import type { TestPlugin } from '../../test/helpers/plugin';
import type * as Client from '../../test/helpers/qlik-client';

interface Checkout {
  readonly startTestPlugin: (env: Record<string, string>) => Promise<TestPlugin>;
  readonly client: typeof Client;
}

function load(root: string): Checkout {
  return {
    startTestPlugin: (require(path.join(root, 'dist/test/helpers/plugin.js')) as typeof import('../../test/helpers/plugin'))
      .startTestPlugin,
    client: require(path.join(root, 'dist/test/helpers/qlik-client.js')) as typeof Client,
  };
}

/** Busy-waits args[0] ms (0: none), then answers. */
const ATTACKER = '{ if (args[0] > 0) { const end = Date.now() + args[0]; while (Date.now() < end); } return 1; }';

async function run(name: string, checkout: Checkout, pattern: string, seconds: number, busyMs: number): Promise<void> {
  const { DataType, FunctionType, num, QlikClient } = checkout.client;
  const t = await checkout.startTestPlugin({ SSE_WORKERS: '2' });
  const attackerClient = new QlikClient(t.address);
  const row = (client: InstanceType<typeof QlikClient>, script: string, value: number, appId: string) =>
    client.evaluate({
      script,
      functionType: FunctionType.SCALAR,
      returnType: DataType.NUMERIC,
      params: [{ dataType: DataType.NUMERIC }],
      bundles: [[[num(value)]]],
      common: { appId, userId: 'user', cardinality: 1 },
    });
  const end = Date.now() + seconds * 1000;
  let attacks = 0;
  let slow = 0;
  const attacker = async (): Promise<void> => {
    while (pattern !== 'none' && Date.now() < end) {
      const busy = pattern === 'steady' || pattern === 'unique' || attacks % 21 === 20 ? busyMs : 0;
      // unique: a new app id each call, so each has a context key (and strikes) of its own.
      const appId = pattern === 'unique' ? `attacker-${attacks}` : 'attacker';
      attacks++;
      if (busy > 0) slow++;
      await row(attackerClient, ATTACKER, busy, appId);
    }
  };
  const waits: number[] = [];
  let failed = 0;
  const bystander = async (): Promise<void> => {
    for (let i = 0; Date.now() < end; i++) {
      const started = performance.now();
      const result = await row(t.client, 'args[0] * 2', i, 'bystander');
      if (result.code !== 0) failed++;
      waits.push(performance.now() - started);
    }
  };
  try {
    await Promise.all([attacker(), bystander()]);
  } finally {
    attackerClient.close();
    await t.stop();
  }
  waits.sort((a, b) => a - b);
  const at = (p: number): string => (waits[Math.floor((p / 100) * (waits.length - 1))] ?? Number.NaN).toFixed(2);
  process.stdout.write(
    `${name}: ${pattern}, bystander ${waits.length} calls (${failed} failed) p50 ${at(50)} p90 ${at(90)} p99 ${at(99)} max ${at(100)} ms; attacker ${attacks} rows, ${slow} of ${busyMs} ms\n`,
  );
}

async function main(): Promise<void> {
  const pattern = process.argv[2] ?? 'every21';
  const seconds = Number(process.argv[3] ?? '10');
  const busyMs = Number(process.argv[4] ?? '45');
  await run('this checkout', load(path.resolve(__dirname, '../../..')), pattern, seconds, busyMs);
  const baseline = process.env['BENCH_BASELINE'];
  if (baseline) await run(path.basename(baseline), load(baseline), pattern, seconds, busyMs);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
