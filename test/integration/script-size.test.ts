/**
 * Scripts up to SSE_MAX_SCRIPT_BYTES work; anything larger gets a prompt, clear error and never a
 * hang — with grpc-js clients and with a gRPC C-core client, the library Qlik's engine uses.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { type CcoreOutcome, ccoreCall, hasCcore } from '../helpers/ccore';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, num, numbers } from '../helpers/qlik-client';

/** The client's deadline: what a refusal that never comes would cost. */
const DEADLINE_S = 30;
/**
 * Prompt: a refusal takes tens of milliseconds here, so 10 s is hundreds of times that, room for a
 * slow or busy machine, and still a third of the deadline that a hang would run into.
 */
const PROMPT_MS = 10_000;

function scriptOf(bytes: number): string {
  const head = 'args[0] + 1 /*';
  return `${head}${'x'.repeat(bytes - head.length - 2)}*/`;
}

type Outcome = Omit<CcoreOutcome, 'table_header_bytes'>;

function ccore(port: number, bytes: number): Promise<Outcome> {
  return ccoreCall(port, bytes, DEADLINE_S);
}

/** The status by name, as the C-core client reports it. */
async function grpcJs(t: TestPlugin, bytes: number): Promise<Outcome> {
  const started = Date.now();
  const r = await t.client.evaluate({
    script: scriptOf(bytes),
    params: [{ dataType: DataType.NUMERIC, name: 'X' }],
    bundles: [[[num(1)]]],
    deadlineMs: DEADLINE_S * 1000,
  });
  return {
    code: status[r.code] ?? String(r.code),
    details: r.details,
    ms: Date.now() - started,
    rows: numbers(r).filter((v) => v === 2).length,
  };
}

describe('script size at the default limit (32768 bytes)', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin()));
  after(async () => t.stop());

  it('a 32768-byte script works', async () => {
    assert.deepEqual(await grpcJs(t, 32_768).then((o) => [o.code, o.rows]), ['OK', 1]);
  });

  it('a 32769-byte script is refused with INVALID_ARGUMENT naming the size and the limit', async () => {
    const o = await grpcJs(t, 32_769);
    assert.equal(o.code, 'INVALID_ARGUMENT');
    assert.match(o.details, /32769 bytes, more than the limit of 32768 bytes \(SSE_MAX_SCRIPT_BYTES\)/);
  });
});

describe('script size at the largest limit (49152 bytes)', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin({ SSE_MAX_SCRIPT_BYTES: '49152' })));
  after(async () => t.stop());

  it('a 49152-byte script works (grpc-js client)', async () => {
    assert.deepEqual(await grpcJs(t, 49_152).then((o) => [o.code, o.rows]), ['OK', 1]);
  });

  it('a 49152-byte script works (C-core client)', { skip: !hasCcore && 'python3-grpcio is not installed' }, async () => {
    const o = await ccore(t.plugin.port, 49_152);
    assert.deepEqual([o.code, o.rows], ['OK', 1], o.details);
  });

  for (const bytes of [57_000, 100_000, 1_000_000]) {
    it(`a ${bytes}-byte script fails promptly (grpc-js client)`, async () => {
      const o = await grpcJs(t, bytes);
      assert.notEqual(o.code, 'OK');
      assert.ok(o.ms < PROMPT_MS, `${o.ms} ms`);
    });

    it(`a ${bytes}-byte script fails promptly (C-core client, as Qlik's engine)`, {
      skip: !hasCcore && 'python3-grpcio is not installed',
    }, async () => {
      const o = await ccore(t.plugin.port, bytes);
      assert.ok(['RESOURCE_EXHAUSTED', 'UNAVAILABLE', 'INTERNAL'].includes(o.code), `${o.code}: ${o.details}`);
      assert.ok(o.ms < PROMPT_MS, `${o.ms} ms: must not wait for the ${DEADLINE_S} s deadline`);
    });
  }

  it('serves normal calls afterwards', async () => {
    assert.deepEqual(await grpcJs(t, 100).then((o) => [o.code, o.rows]), ['OK', 1]);
  });
});
