/**
 * A table's column names against the real plugin. The names travel with every table chunk; one
 * cached 40 MB key returned by every row was one string in the isolate but a new 40 MB string per
 * chunk in the front, counted nowhere, held until the call's end: a call left open grew the front by
 * gigabytes while its held bytes showed 2 MB. Now the sandbox refuses a chunk past MAX_TABLE_COLUMNS
 * or MAX_TABLE_KEY_BYTES before it leaves, naming the bounds, and what the front keeps of a chunk's
 * names counts in its held bytes (SSE_MAX_HELD_MB). Scaled down: a 1 MB key.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, type Dual, FunctionType, num, str } from '../helpers/qlik-client';
import { openRawCall, rawCall } from '../helpers/raw-call';
import { waitFor } from '../helpers/sandbox-calls';

const MB = 1024 * 1024;
const TABLE = { functionType: FunctionType.TENSOR, returnType: DataType.NUMERIC, params: [{ dataType: DataType.NUMERIC }] };
const NAMES_BOUND = /more than 1024 columns or more than 8192 bytes of column names/;

/** About 16 KiB of numeric rows, numbered from `from`. */
function bundleOf(from: number): Dual[][] {
  return Array.from({ length: 1_200 }, (_, i) => [num(from + i)]);
}

describe('table column names (SSE_MAX_HELD_MB=16, SSE_CHUNK_KB=16)', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin({ SSE_WORKERS: '2', SSE_MAX_HELD_MB: '16', SSE_CHUNK_KB: '16' })));
  after(async () => t.stop());
  afterEach(async () => {
    await waitFor('every held byte given back', () => t.plugin.held.bytes === 0 && t.plugin.held.accounts === 0, 5_000);
  });

  it('rows that all return one cached 1 MB key fail at once naming the bounds, while the client is still sending', async (ctx) => {
    const call = openRawCall(t.client.client, { script: "globalThis.k ??= 'k'.repeat(1e6); return { [k]: args[0] }", ...TABLE });
    let sent = 0;
    const sending = setInterval(() => call.send(bundleOf(1_200 * sent++)), 5);
    const result = await call.result.finally(() => clearInterval(sending));
    ctx.diagnostic(
      `${grpc.status[result.code]} after ${sent} bundles: ${result.details}; held peak ${(t.plugin.held.peakBytes / MB).toFixed(1)} MB`,
    );
    assert.equal(result.code, grpc.status.RESOURCE_EXHAUSTED, result.details);
    assert.match(result.details, NAMES_BOUND);
    call.call.cancel();
  });

  it('an array of 2,000 elements per row is refused naming the bounds (Qlik reads at most 815 columns)', async () => {
    const result = await rawCall(t.client.client, { script: 'Array.from({ length: 2000 }, () => args[0])', ...TABLE }, [bundleOf(0)]);
    assert.equal(result.code, grpc.status.RESOURCE_EXHAUSTED, result.details);
    assert.match(result.details, NAMES_BOUND);
  });

  it('a name within the bounds, held with every chunk of a call left open, counts in the held bytes', async (ctx) => {
    const name = 'n'.repeat(8_000);
    const call = openRawCall(t.client.client, {
      script: `({ ['${name}']: 1 })`,
      ...TABLE,
      params: [{ dataType: DataType.STRING }],
    });
    // One row of 16,500 characters is a chunk of its own (SSE_CHUNK_KB=16): its cells take 11 bytes, its name 8,000.
    const chunks = 20;
    const row = 'x'.repeat(16_500);
    for (let i = 0; i < chunks; i++) call.send([[str(row)]]);
    // More than every row sent (each is gone once evaluated) and each chunk's name at 2 bytes a character:
    // reached only when the names are counted (uncounted, 20 held one-cell chunks are ~500 bytes).
    const expected = chunks * row.length + chunks * 2 * name.length;
    await waitFor(`the names of ${chunks} held chunks counted`, () => t.plugin.held.bytes >= expected, 10_000);
    ctx.diagnostic(`held ${(t.plugin.held.bytes / MB).toFixed(2)} MB for ${chunks} one-row table chunks named by an 8,000-character key`);
    assert.ok(t.plugin.held.bytes <= 16 * MB);
    call.call.cancel();
    await call.result;
  });
});
