/**
 * require() in scripts, against real sandboxes: each bundled library gives the right values, anything
 * else is refused with INVALID_ARGUMENT naming what is available, what one app, user or script does to a
 * library object is never seen by another (one sandbox thread, so every call lands in the same isolate),
 * and nothing of the host is reachable through a library's objects.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, FunctionType, num, numbers, type QlikClient, str, strings } from '../helpers/qlik-client';
import { assertServing, evalText, textOf } from '../helpers/sandbox-calls';

const AVAILABLE = 'available: simple-statistics, date-fns, d3-array, qlik';

/** An AGGREGATION over one numeric column, as a chart's ScriptAggr would send it. */
async function aggregate(client: QlikClient, script: string, values: number[]): Promise<number> {
  const result = await client.evaluate({
    script,
    functionType: FunctionType.AGGREGATION,
    returnType: DataType.NUMERIC,
    params: [{ dataType: DataType.NUMERIC }],
    bundles: [values.map((v) => [num(v)])],
  });
  assert.equal(result.code, status.OK, result.details);
  return numbers(result)[0] as number;
}

/** A one-row call as app/user, answering text. */
async function textAs(client: QlikClient, script: string, appId: string, userId: string): Promise<string> {
  const result = await evalText(client, script, { common: { appId, userId, cardinality: 1 } });
  assert.equal(result.code, status.OK, result.details);
  return strings(result)[0] as string;
}

describe('libraries: each bundled one works', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin({ SSE_WORKERS: '1' })));
  after(async () => t.stop());

  it('simple-statistics: median and quantile of a chart column (ScriptAggr)', async () => {
    const sales = [12, 7, 3, 41, 19, 8, 25];
    assert.equal(await aggregate(t.client, 'require("simple-statistics").median(args[0])', sales), 12);
    // Interpolated between the two nearest values, as Qlik's Fractile: 25 + 0.4 * (41 - 25).
    assert.equal(await aggregate(t.client, 'Math.round(require("simple-statistics").quantile(args[0], 0.9) * 10) / 10', sales), 31.4);
    assert.equal(
      await aggregate(t.client, 'require("simple-statistics").linearRegression(args[0].map((y, x) => [x, y])).m', [1, 3, 5, 7]),
      2,
    );
  });

  it('date-fns: format and parse', async () => {
    const result = await t.client.evaluate({
      script: 'require("date-fns").format(new Date(args[0]), "yyyy-MM")',
      functionType: FunctionType.SCALAR,
      returnType: DataType.STRING,
      params: [{ dataType: DataType.STRING }],
      bundles: [[[str('2024-01-15')], [str('2023-12-31T12:00:00Z')]]],
    });
    assert.equal(result.code, status.OK, result.details);
    assert.deepEqual(strings(result), ['2024-01', '2023-12']);
    assert.equal(await textOf(t.client, 'require("date-fns").differenceInCalendarDays(new Date(2024, 2, 1), new Date(2024, 1, 1))'), '29');
  });

  it('d3-array: group and rollup', async () => {
    const script = `JSON.stringify([...require("d3-array").rollup([{ r: 'N', v: 2 }, { r: 'S', v: 5 }, { r: 'N', v: 4 }], (g) => require("d3-array").sum(g, (d) => d.v), (d) => d.r)])`;
    assert.equal(await textOf(t.client, script), '[["N",6],["S",5]]');
    assert.equal(await textOf(t.client, `require("d3-array").group([1, 2, 3, 4], (n) => n % 2).get(0).join()`), '2,4');
  });

  it('qlik: serial dates both ways and SHA-256 against known vectors', async () => {
    assert.equal(await textOf(t.client, 'require("qlik").toDate(45306.5).toISOString()'), '2024-01-15T12:00:00.000Z');
    assert.equal(await textOf(t.client, 'require("qlik").fromDate(new Date(Date.UTC(1970, 0, 1)))'), '25569');
    assert.equal(await textOf(t.client, 'require("qlik").fromDate(require("qlik").toDate(45306.25))'), '45306.25');
    assert.equal(await textOf(t.client, 'require("qlik").sha256("")'), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    assert.equal(
      await textOf(t.client, 'require("qlik").sha256("abc")'),
      'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
    // UTF-8: "é" is c3 a9.
    assert.equal(await textOf(t.client, 'require("qlik").sha256("é")'), '4a99557e4033c3539de2eb65472017cad5f9557f7a0625a09f1c3f6e2ba69c4c');
    // Astral characters are one code point of four bytes (a surrogate pair in JavaScript).
    assert.equal(
      await textOf(t.client, 'require("qlik").sha256("\\u{1F600}")'),
      'f0443a342c5ef54783a111b51ba56c938e474c32324d90c3a60c9c8e3a37e2d9',
    );
  });

  it('qlik: the helpers', async () => {
    assert.equal(await textOf(t.client, 'require("qlik").titleCase("aNNA-maria de la CRUZ")'), 'Anna-Maria De La Cruz');
    assert.equal(await textOf(t.client, 'require("qlik").splitList(" a; b;;c ", ";").join("|")'), 'a|b|c');
    assert.equal(await textOf(t.client, 'require("qlik").similarity("kitten", "sitting").toFixed(3)'), '0.571');
    assert.equal(
      await textOf(t.client, '[require("qlik").isNull(NaN), require("qlik").isNull(""), require("qlik").isNull(0)].join()'),
      'true,true,false',
    );
    assert.equal(await textOf(t.client, 'require("qlik").num({ num: 3, str: "three" }) + require("qlik").num(" 4 ")'), '7');
  });

  it('the same library twice in a call is the same object', async () => {
    assert.equal(await textOf(t.client, 'require("date-fns") === require("date-fns")'), 'true');
  });
});

describe('libraries: refusals', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin({ SSE_WORKERS: '1' })));
  after(async () => t.stop());

  for (const name of ['fs', 'child_process', 'node:net', './secret.js', '/etc/passwd', '__proto__', 'constructor', 'toString']) {
    it(`require(${JSON.stringify(name)}) fails the call with INVALID_ARGUMENT naming it and what is available`, async () => {
      const result = await evalText(t.client, `require(${JSON.stringify(name)})`);
      assert.equal(result.code, status.INVALID_ARGUMENT);
      assert.equal(
        result.details,
        `Error: require('${name}'): scripts run in a sandbox and may require only the plugin's libraries; ${AVAILABLE} (at row 0)`,
      );
    });
  }

  it('require of something that is not text is a TypeError', async () => {
    const result = await evalText(t.client, 'require({ toString() { return "fs"; } })');
    assert.equal(result.code, status.INVALID_ARGUMENT);
    assert.match(result.details, /^TypeError: require\(\) takes a library name as text/);
    await assertServing(t.client, 1);
  });
});

describe('libraries: SSE_LIBRARIES', () => {
  it('none: every require is refused, saying none is available', async () => {
    const t = await startTestPlugin({ SSE_WORKERS: '1', SSE_LIBRARIES: 'none' });
    try {
      const result = await evalText(t.client, 'require("simple-statistics")');
      assert.equal(result.code, status.INVALID_ARGUMENT);
      assert.match(result.details, /no library is available on this plugin \(SSE_LIBRARIES=none/);
      assert.equal(await textOf(t.client, 'typeof console.log'), 'function');
    } finally {
      await t.stop();
    }
  });

  it('a list offers those only', async () => {
    const t = await startTestPlugin({ SSE_WORKERS: '1', SSE_LIBRARIES: 'qlik, d3-array' });
    try {
      assert.equal(await textOf(t.client, 'require("qlik").fromDate(new Date(0))'), '25569');
      const result = await evalText(t.client, 'require("date-fns")');
      assert.match(result.details, /available: d3-array, qlik \(at row 0\)$/);
    } finally {
      await t.stop();
    }
  });

  it('a name that is not bundled stops the start, naming the bundled ones', async () => {
    await assert.rejects(
      startTestPlugin({ SSE_LIBRARIES: 'lodash' }),
      /SSE_LIBRARIES names lodash, not bundled: .*simple-statistics, date-fns, d3-array, qlik/,
    );
  });
});

describe('libraries: isolation between tenants', () => {
  let t: TestPlugin;
  // One thread, one isolate: every call below shares it, so a leak between contexts would show.
  before(async () => (t = await startTestPlugin({ SSE_WORKERS: '1' })));
  after(async () => t.stop());

  it("replacing a library's function is never seen by another app, user or script", async () => {
    const tamper = '{ const ss = require("simple-statistics"); ss.mean = () => 42; ss.injected = 1; return ss.mean([1, 2, 3]); }';
    const probe = '{ const ss = require("simple-statistics"); return [ss.mean([1, 2, 3]), typeof ss.injected].join(); }';
    assert.equal(await textAs(t.client, tamper, 'app-1', 'user-1'), '42');
    assert.equal(await textAs(t.client, probe, 'app-2', 'user-1'), '2,undefined', 'another app');
    assert.equal(await textAs(t.client, probe, 'app-1', 'user-2'), '2,undefined', 'another user');
    assert.equal(await textAs(t.client, probe, 'app-1', 'user-1'), '2,undefined', 'another script');
  });

  it("a prototype changed through a library's objects is never seen by another tenant", async () => {
    const tamper = `{ const d3 = require("d3-array"); Object.getPrototypeOf(new d3.InternMap()).get = () => "poisoned";
      Object.getPrototypeOf(require("qlik").toDate(0)).toISOString = () => "poisoned"; Object.prototype.polluted = 1; return 1; }`;
    const probe = `[require("d3-array").group([1, 1, 2], (n) => n).get(1).length, require("qlik").toDate(0).toISOString(), typeof {}.polluted].join()`;
    assert.equal(await textAs(t.client, tamper, 'app-3', 'user-3'), '1');
    assert.equal(await textAs(t.client, probe, 'app-4', 'user-3'), '2,1899-12-30T00:00:00.000Z,undefined');
  });

  it('require and console replaced by a call are back for the next call of the same script, user and app', async () => {
    const script = '{ const seen = [typeof require, typeof console.log].join(); globalThis.require = null; console = 1; return seen; }';
    assert.equal(await textAs(t.client, script, 'app-5', 'user-5'), 'function,function');
    assert.equal(await textAs(t.client, script, 'app-5', 'user-5'), 'function,function');
  });

  it("nothing of the host through a library's objects or require itself", async () => {
    const probes = [
      `require("simple-statistics").mean.constructor("return typeof process")()`,
      `typeof require.constructor("return this")().process`,
      `Object.getPrototypeOf(require("date-fns")).constructor.constructor("return typeof Buffer")()`,
      `require("d3-array").sum.constructor === Function`,
      `typeof require("qlik").sha256.call.constructor("return require")()("fs")`,
    ];
    assert.equal(await textOf(t.client, `[${probes.slice(0, 4).join(', ')}].join()`), 'undefined,undefined,undefined,true');
    const viaFunction = await evalText(t.client, probes[4] as string);
    assert.equal(viaFunction.code, status.INVALID_ARGUMENT);
    assert.match(viaFunction.details, /require\('fs'\): scripts run in a sandbox/);
  });
});

describe('libraries: limits', () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin({ SSE_WORKERS: '1', SSE_SCRIPT_TIMEOUT_MS: '1000' })));
  after(async () => t.stop());

  it("a library runs under the call's time limit", async () => {
    const slow = await t.client.evaluate({
      script: '{ const ss = require("simple-statistics"); for (;;) ss.median([3, 1, 2]); }',
      params: [{ dataType: DataType.NUMERIC }],
      bundles: [[[num(1)]]],
    });
    assert.equal(slow.code, status.DEADLINE_EXCEEDED);
    assert.equal(await textOf(t.client, 'require("simple-statistics").median([3, 1, 2])'), '2');
  });
});
