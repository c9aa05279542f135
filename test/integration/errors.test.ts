/** The SPEC's error table: each cause gets its status and a one-line message; the plugin keeps serving. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { encodeMessage, messages } from '../../src/grpc/proto';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { type CallResult, DataType, FunctionType, num, numbers, scriptMetadata } from '../helpers/qlik-client';
import { openRawCall } from '../helpers/raw-call';

const N = DataType.NUMERIC;
const INVALID_ARGUMENT = 3;

let t: TestPlugin;
before(async () => (t = await startTestPlugin({ SSE_SCRIPT_TIMEOUT_MS: '500', SSE_MAX_SCRIPT_BYTES: '1000' })));
after(async () => t.stop());

function assertOneLine(r: CallResult): void {
  assert.ok(r.details.length > 0);
  assert.doesNotMatch(r.details, /\n/);
  assert.doesNotMatch(r.details, /\bat .*\.(js|ts):\d+/, 'no host stack trace');
}

async function assertStillServing(): Promise<void> {
  const r = await t.client.evaluate({
    script: 'args[0] + args[1]',
    params: [{ dataType: N }, { dataType: N }],
    bundles: [[[num(1), num(10)]]],
  });
  assert.deepEqual(numbers(r), [11]);
}

describe('request errors → INVALID_ARGUMENT', () => {
  it('a missing script header', async () => {
    const r = await t.client.evaluate({ script: 'x', scriptHeaderBytes: null, bundles: [[[num(1)]]] });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.match(r.details, /qlik-scriptrequestheader-bin/);
    assert.equal(r.rows.length, 0);
    assertOneLine(r);
    await assertStillServing();
  });

  it('a garbled script header', async () => {
    const r = await t.client.evaluate({ script: 'x', scriptHeaderBytes: Buffer.from([0x0a, 0xff, 0xff, 0x01]), bundles: [[[num(1)]]] });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.match(r.details, /qlik-scriptrequestheader-bin header cannot be read/);
    assertOneLine(r);
    await assertStillServing();
  });

  it('an unknown function type', async () => {
    // script '1', functionType 9, returnType NUMERIC: written by hand, protobufjs refuses unknown enums.
    const header = Buffer.from([0x0a, 0x01, 0x31, 0x10, 0x09, 0x18, 0x01]);
    const r = await t.client.evaluate({ script: '1', scriptHeaderBytes: header });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.match(r.details, /functionType 9/);
  });

  it('a row with fewer values than parameters fails promptly, naming the row', async () => {
    const r = await t.client.evaluate({
      script: 'args[0]',
      params: [{ dataType: N }, { dataType: N }],
      bundles: [[[num(1), num(2)], [num(1)]]],
    });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.match(r.details, /row 1 has 1 value but the script takes 2 parameters/);
    await assertStillServing();
  });

  it('a row with more values than parameters', async () => {
    const r = await t.client.evaluate({ script: 'args[0]', params: [{ dataType: N }], bundles: [[[num(1), num(2), num(3)]]] });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.match(r.details, /row 0 has 3 values but the script takes 1 parameter/);
  });

  it('a script larger than SSE_MAX_SCRIPT_BYTES, naming the size and the limit', async () => {
    const r = await t.client.evaluate({ script: `1 + ${'0'.repeat(1200)}`, params: [{ dataType: N }], bundles: [[[num(1)]]] });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.match(r.details, /1204 bytes, more than the limit of 1000 bytes \(SSE_MAX_SCRIPT_BYTES\)/);
    await assertStillServing();
  });
});

describe('script errors → INVALID_ARGUMENT', () => {
  it('a syntax error carries SyntaxError and the engine message', async () => {
    const r = await t.client.evaluate({ script: 'args[0] +', params: [{ dataType: N }], bundles: [[[num(1)]]] });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.match(r.details, /^SyntaxError: /);
    assertOneLine(r);
    await assertStillServing();
  });

  it('a function body with a syntax error reports the body error', async () => {
    const r = await t.client.evaluate({ script: 'const x = ; return x;', params: [{ dataType: N }], bundles: [[[num(1)]]] });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.match(r.details, /SyntaxError: Unexpected token ';'/);
  });

  it('a script that does not compile fails while the client is still sending (no half-close needed)', async () => {
    const open = openRawCall(t.client.client, { script: 'args[0](', functionType: FunctionType.TENSOR, params: [{ dataType: N }] });
    open.send([[num(1)], [num(2)]]);
    const result = await open.result;
    assert.equal(result.code, status.INVALID_ARGUMENT);
    assert.match(result.details, /SyntaxError/);
    open.call.end();
  });

  it('over many chunks, the error names the first row that fails, whichever chunk finishes first', async () => {
    const bundles = [0, 1, 2].map((b) => Array.from({ length: 50_000 }, (_, i) => [num(b * 50_000 + i)]));
    const r = await t.client.evaluate({ script: 'null.x', params: [{ dataType: N }], bundles });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.match(r.details, /^TypeError: .*\(at row 0\)$/);
    await assertStillServing();
  });

  it('a thrown error carries its name, message and 0-based row', async () => {
    const r = await t.client.evaluate({
      script: 'if (args[0] === 2) throw new RangeError("boom\\nsecond line"); return 1;',
      params: [{ dataType: N }],
      bundles: [[[num(1)]], [[num(2)]]],
    });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.equal(r.details, 'RangeError: boom (at row 1)');
    await assertStillServing();
  });

  it('a thrown non-Error value', async () => {
    const r = await t.client.evaluate({ script: '(() => { throw "plain" })()', params: [{ dataType: N }], bundles: [[[num(1)]]] });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.match(r.details, /plain \(at row 0\)/);
  });

  it('a failing aggregation says the aggregation failed', async () => {
    const r = await t.client.evaluate({
      script: 'args[0].nope()',
      functionType: FunctionType.AGGREGATION,
      params: [{ dataType: N }],
      bundles: [[[num(1)]]],
    });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.match(r.details, /^TypeError: .*nope.* \(the aggregation failed\)$/);
  });

  it('an empty script', async () => {
    const r = await t.client.evaluate({ script: '   ', params: [{ dataType: N }], bundles: [[[num(1)]]] });
    assert.equal(r.code, INVALID_ARGUMENT);
    assert.match(r.details, /empty/);
  });
});

describe('limits', () => {
  it('a script past its time limit → DEADLINE_EXCEEDED naming the limit and the variable', async () => {
    const restarts = t.plugin.pool.restarts;
    const r = await t.client.evaluate({ script: 'while (true) {}', params: [{ dataType: N }], bundles: [[[num(1)]]] });
    assert.equal(r.code, status.DEADLINE_EXCEEDED);
    assert.equal(r.details, 'the script ran past its time limit of 500 ms (SSE_SCRIPT_TIMEOUT_MS)');
    // The time limit itself ended it, not the watchdog (which would have replaced the sandbox process).
    assert.equal(t.plugin.pool.restarts, restarts);
    await assertStillServing();
  });
});

describe('ExecuteFunction', () => {
  it('is UNIMPLEMENTED: the plugin offers no plugin functions', async () => {
    const md = scriptMetadata({ script: 'x' });
    md.set('qlik-functionrequestheader-bin', encodeMessage(messages.FunctionRequestHeader, { functionId: 0, version: '1' }));
    const r = await t.client.stream('/qlik.sse.Connector/ExecuteFunction', md, { bundles: [[[num(1)]]] });
    assert.equal(r.code, status.UNIMPLEMENTED);
    assertOneLine(r);
  });
});

describe('scripts disabled', () => {
  it('SSE_ALLOW_SCRIPT=false: allowScript false and PERMISSION_DENIED', async () => {
    const off = await startTestPlugin({ SSE_ALLOW_SCRIPT: 'false' });
    try {
      const caps = await off.client.getCapabilities();
      assert.equal(caps['allowScript'], false);
      const r = await off.client.evaluate({ script: '1', params: [{ dataType: N }], bundles: [[[num(1)]]] });
      assert.equal(r.code, status.PERMISSION_DENIED);
      assert.match(r.details, /scripts are disabled.*SSE_ALLOW_SCRIPT=false/);
    } finally {
      await off.stop();
    }
  });
});

describe('GetCapabilities', () => {
  it('answers allowScript, the plugin identifier and the package version', async () => {
    const caps = await t.client.getCapabilities();
    assert.equal(caps['allowScript'], true);
    assert.equal(caps['pluginIdentifier'], 'qlik-sse-js-sandbox');
    assert.match(String(caps['pluginVersion']), /^\d+\.\d+\.\d+/);
    assert.deepEqual(caps['functions'], []);
  });
});
