/**
 * What a finished call leaves to V8's young-generation collections (scavenges). A LOAD makes one
 * call per row, each a few dozen KB of short-lived objects; when something old keeps pointing at
 * them, every call since the last scavenge is copied, then promoted, and waits for a full collection:
 * 2.5-3.8 MB surviving each scavenge and 6-15 ms pauses on the front's one thread (a function-valued
 * property added to each call's decoder, src/grpc/incoming.ts, and to each task, src/sandboxes/pool.ts).
 * Read from V8's own trace (--trace-gc-nvp) of the real entry point, so what is measured is the
 * front's heap alone, not this test process's.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { DataType, FunctionType, num, numbers, QlikClient } from '../helpers/qlik-client';
import { type PluginProcess, startMain } from './process';

const CALLS = 2_000;
/** Measured: ~0.1 MB with both fixes, ~0.5 MB with the task's onAbort added after, ~2 MB and more with the decoder's write too. */
const MAX_MEDIAN_SURVIVED_BYTES = 256 * 1024;

/** new_space_survived of each scavenge V8 traced after `fromLine`. */
function survivedBytes(plugin: PluginProcess, fromLine: number): number[] {
  const survived: number[] = [];
  for (const line of plugin.lines.slice(fromLine)) {
    const text = typeof line.msg === 'string' ? line.msg : '';
    if (!/\bgc=s\b/.test(text)) continue;
    const match = /\bnew_space_survived=(\d+)/.exec(text);
    if (match) survived.push(Number(match[1]));
  }
  return survived;
}

describe("a one-row call's objects die young", () => {
  let plugin: PluginProcess;
  let client: QlikClient;
  before(async () => {
    plugin = await startMain({ SSE_WORKERS: '1' }, { nodeFlags: ['--trace-gc-nvp'] });
    client = new QlikClient(`127.0.0.1:${plugin.port}`);
  });
  after(async () => {
    client.close();
    await plugin.kill();
  });

  it(`${CALLS} sequential one-row calls: what survives a scavenge stays far below one call's objects per call`, async () => {
    const fromLine = plugin.lines.length;
    for (let row = 0; row < CALLS; row++) {
      const result = await client.evaluate({
        script: 'args[0] * 2',
        functionType: FunctionType.SCALAR,
        returnType: DataType.NUMERIC,
        params: [{ dataType: DataType.NUMERIC }],
        bundles: [[[num(row)]]],
        common: { appId: 'load-app', userId: 'load-user', cardinality: 1 },
      });
      assert.equal(result.code, status.OK, result.details);
      assert.deepEqual(numbers(result), [row * 2]);
    }
    const survived = survivedBytes(plugin, fromLine).sort((a, b) => a - b);
    assert.ok(survived.length >= 2, `V8 traced ${survived.length} scavenges during ${CALLS} calls`);
    const median = survived[Math.floor(survived.length / 2)] as number;
    assert.ok(median < MAX_MEDIAN_SURVIVED_BYTES, `median ${median} bytes survived a scavenge (all: ${survived.join(', ')})`);
  });
});
