/** Short-hands for the sandbox and limits suites: one-row script calls and a "still serving" check. */
import assert from 'node:assert/strict';

import { status } from '@grpc/grpc-js';

import {
  type CallResult,
  DataType,
  type Dual,
  FunctionType,
  num,
  numbers,
  type QlikClient,
  type ScriptCallOptions,
  str,
  strings,
} from './qlik-client';

export { DataType, FunctionType };

/** A SCALAR call of `script` over one numeric row (args[0] = 1), answering text. */
export function evalText(client: QlikClient, script: string, extra: Partial<ScriptCallOptions> = {}): Promise<CallResult> {
  return client.evaluate({
    script,
    functionType: FunctionType.SCALAR,
    returnType: DataType.STRING,
    params: [{ dataType: DataType.NUMERIC }],
    bundles: [[[num(1)]]],
    ...extra,
  });
}

export interface CallShape {
  /** The one parameter's type; NUMERIC unless said. */
  readonly paramType?: DataType;
  readonly returnType?: DataType;
  readonly functionType?: FunctionType;
  readonly cancelAfterMs?: number;
}

/** A call of `script` over `rows` (one value each), SCALAR and NUMERIC in and out unless said. */
export function evalRows(
  client: QlikClient,
  script: string,
  rows: readonly (readonly Dual[])[],
  shape: CallShape = {},
): Promise<CallResult> {
  return client.evaluate({
    script,
    functionType: shape.functionType ?? FunctionType.SCALAR,
    returnType: shape.returnType ?? DataType.NUMERIC,
    params: [{ dataType: shape.paramType ?? DataType.NUMERIC }],
    bundles: [rows],
    ...(shape.cancelAfterMs === undefined ? {} : { cancelAfterMs: shape.cancelAfterMs }),
  });
}

/**
 * Polls `test` until it holds; fails naming `what` after withinMs. withinMs only turns a hang into a
 * failure: give it several times what the wait takes on a busy machine. Resolves with the time it took
 * (for diagnostics, never for an assertion).
 */
export async function waitFor(what: string, test: () => boolean, withinMs: number): Promise<number> {
  const started = performance.now();
  while (!test()) {
    if (performance.now() - started > withinMs) assert.fail(`${what} did not happen within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return performance.now() - started;
}

/** The text a one-row call answered, after asserting it succeeded. */
export async function textOf(client: QlikClient, script: string): Promise<string> {
  const result = await evalText(client, script);
  assert.equal(result.code, status.OK, `${script} failed: ${result.details}`);
  assert.equal(result.rows.length, 1);
  return strings(result)[0] as string;
}

/** Wall-clock time of a call. */
export async function timed<T>(run: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await run();
  return { value, ms: performance.now() - started };
}

/**
 * Proves the plugin still answers correctly, on every worker (two calls per worker, concurrently).
 * Asserted on the answers only: how long they take depends on the machine, and a plugin that stopped
 * serving fails here on the call's deadline or the test's timeout.
 */
export async function assertServing(client: QlikClient, workers = 2): Promise<void> {
  const rows = Array.from({ length: 50 }, (_, i) => [num(i)]);
  const results = await Promise.all(Array.from({ length: workers * 2 }, () => evalRows(client, 'args[0] * 2 + 1', rows)));
  for (const result of results) {
    assert.equal(result.code, status.OK, `a normal call failed: ${result.details}`);
    assert.deepEqual(
      numbers(result),
      rows.map((_, i) => i * 2 + 1),
    );
  }
}

/** One row whose single STRING value is `chars` long: at 256 KiB and more it is a chunk of its own. */
export function bigRow(chars: number, fill = 'x'): ReturnType<typeof str>[] {
  return [str(fill.repeat(chars))];
}

/** Waits until `count` sandbox processes are ready again (after one was replaced). */
export async function readySandboxes(
  t: { readonly plugin: { readonly pool: { processes(): { ready: boolean }[] } } },
  count: number,
  withinMs: number,
): Promise<void> {
  await waitFor(`${count} ready sandbox processes`, () => t.plugin.pool.processes().filter((p) => p.ready).length === count, withinMs);
}
