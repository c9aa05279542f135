/** Many bundles, several workers, row order, reply size, concurrent calls and no state between calls. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { MAX_REPLY_BYTES } from '../../src/contract/replies';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, dual, FunctionType, num, numbers, str, strings } from '../helpers/qlik-client';

const N = DataType.NUMERIC;
const S = DataType.STRING;

let t: TestPlugin;
before(async () => (t = await startTestPlugin({ SSE_WORKERS: '2' })));
after(async () => t.stop());

function sequence(rows: number, perBundle: number, at: (i: number) => number = (i) => i): ReturnType<typeof num>[][][] {
  const bundles = [];
  for (let first = 0; first < rows; first += perBundle) {
    bundles.push(Array.from({ length: Math.min(perBundle, rows - first) }, (_, k) => [num(at(first + k))]));
  }
  return bundles;
}

describe('row order', () => {
  it('200,000 rows in 2000-row bundles come back in order, each message ≤ 4 MiB', async () => {
    const r = await t.client.evaluate({ script: 'args[0] + 1', params: [{ dataType: N }], bundles: sequence(200_000, 2000) });
    assert.equal(r.code, status.OK, r.details);
    assert.equal(r.rows.length, 200_000);
    assert.ok(
      numbers(r).every((v, i) => v === i + 1),
      'every row in its place',
    );
    assert.ok(r.messageSizes.every((size) => size <= MAX_REPLY_BYTES));
  });

  it('rows evaluated on both workers keep their order (slow early chunks, fast late ones)', async () => {
    // Rows < 30000 spin a little: the early chunks finish after later ones on the other worker.
    const script = 'if (args[0] < 30000) { let s = 0; for (let i = 0; i < 300; i++) s += i; } return args[0] * 3;';
    const r = await t.client.evaluate({ script, params: [{ dataType: N }], bundles: sequence(120_000, 5000) });
    assert.equal(r.code, status.OK, r.details);
    assert.ok(numbers(r).every((v, i) => v === i * 3));
  });

  it('one row per bundle, 3000 bundles', async () => {
    const r = await t.client.evaluate({ script: 'args[0] * 2', params: [{ dataType: N }], bundles: sequence(3000, 1) });
    assert.deepEqual(
      numbers(r),
      Array.from({ length: 3000 }, (_, i) => i * 2),
    );
  });

  it('empty bundles between full ones change nothing', async () => {
    const r = await t.client.evaluate({
      script: 'args[0]',
      params: [{ dataType: N }],
      bundles: [[], [[num(1)]], [], [[num(2)], [num(3)]], []],
    });
    assert.deepEqual(numbers(r), [1, 2, 3]);
  });
});

describe('reply size', () => {
  it('10,000 rows of 4000-character strings are split into messages ≤ 4 MiB', async () => {
    const bundles = [Array.from({ length: 10_000 }, () => [str('abcd')])];
    const r = await t.client.evaluate({ script: 'args[0].repeat(1000)', returnType: S, params: [{ dataType: S }], bundles });
    assert.equal(r.code, status.OK, r.details);
    assert.equal(r.rows.length, 10_000);
    assert.ok(strings(r).every((s) => s.length === 4000 && s.startsWith('abcdabcd')));
    assert.ok(r.messageSizes.length >= 10, `${r.messageSizes.length} messages`);
    assert.ok(r.messageSizes.every((size) => size <= MAX_REPLY_BYTES));
  });

  it('a single value larger than one reply message fails with RESOURCE_EXHAUSTED', async () => {
    const r = await t.client.evaluate({
      script: '"x".repeat(5 * 1024 * 1024)',
      functionType: FunctionType.SCALAR,
      returnType: S,
      params: [{ dataType: N }],
      bundles: [[[num(1)]]],
    });
    assert.equal(r.code, status.RESOURCE_EXHAUSTED);
    assert.match(r.details, /reply message/);
  });
});

describe('aggregation across bundles and workers', () => {
  it('sums 300,000 rows from 150 bundles in one answer', async () => {
    const r = await t.client.evaluate({
      script: 'args[0].reduce((a, b) => a + b, 0)',
      functionType: FunctionType.AGGREGATION,
      params: [{ dataType: N }],
      bundles: sequence(300_000, 2000),
    });
    assert.equal(r.code, status.OK, r.details);
    assert.deepEqual(numbers(r), [(299_999 * 300_000) / 2]);
  });
});

describe('no state between calls', () => {
  it('globals set by one call are gone in the next (on every worker)', async () => {
    const set = 'globalThis.leak = (globalThis.leak || 0) + 1; var v = 5; Array.prototype.polluted = 1; return 1;';
    const check = 'return (typeof leak) + "," + (typeof v) + "," + ([].polluted === undefined);';
    for (let i = 0; i < 6; i++) {
      const a = await t.client.evaluate({
        script: set,
        functionType: FunctionType.SCALAR,
        params: [{ dataType: N }],
        bundles: [[[num(1)]]],
      });
      assert.equal(a.code, status.OK, a.details);
      const b = await t.client.evaluate({
        script: check,
        functionType: FunctionType.SCALAR,
        returnType: S,
        params: [{ dataType: N }],
        bundles: [[[num(1)]]],
      });
      assert.deepEqual(strings(b), ['undefined,undefined,true']);
    }
  });

  it('20 concurrent calls see only their own rows', async () => {
    const calls = Array.from({ length: 20 }, (_, k) =>
      t.client.evaluate({
        script: `globalThis.k = ${k}; return args[0] + globalThis.k;`,
        params: [{ dataType: N }],
        bundles: sequence(2000, 500, (i) => i),
      }),
    );
    const results = await Promise.all(calls);
    results.forEach((r, k) => {
      assert.equal(r.code, status.OK, r.details);
      assert.ok(
        numbers(r).every((v, i) => v === i + k),
        `call ${k}`,
      );
    });
  });
});

describe('the LOAD pattern beside calls that are not one row', () => {
  /** Row i of the LOAD: a number, a text, a Qlik null (NaN, no text) or a dual, in turn. */
  function loadValue(i: number): ReturnType<typeof dual> {
    switch (i % 4) {
      case 0:
        return dual(i, '');
      case 1:
        return dual(Number.NaN, `text ${i}`);
      case 2:
        return dual(Number.NaN, '');
      default:
        return dual(i / 4, `dual ${i}`);
    }
  }
  const describeValue =
    'Number.isNaN(args[0].num) ? (args[0].str === "" ? "null" : "s:" + args[0].str) : "n:" + args[0].num + "|" + args[0].str';
  function expected(i: number): string {
    const value = loadValue(i);
    if (Number.isNaN(value.numData)) return value.strData === '' ? 'null' : `s:${value.strData}`;
    return `n:${value.numData}|${value.strData}`;
  }

  it('300 sequential one-row calls of mixed values answer right, with many-bundle and large calls between them', async () => {
    for (let i = 0; i < 300; i++) {
      const row = await t.client.evaluate({
        script: describeValue,
        functionType: FunctionType.SCALAR,
        returnType: S,
        params: [{ dataType: DataType.DUAL }],
        bundles: [[[loadValue(i)]]],
        common: { appId: 'load-app', userId: 'load-user', cardinality: 1 },
      });
      assert.equal(row.code, status.OK, row.details);
      assert.deepEqual(strings(row), [expected(i)], `row ${i}`);
      if (i % 100 !== 50) continue;
      // Between two rows of the LOAD: 60 bundles of 500 rows, then one bundle of 40,000 rows (~600 KB).
      const many = await t.client.evaluate({ script: 'args[0] * 2', params: [{ dataType: N }], bundles: sequence(30_000, 500) });
      assert.equal(many.code, status.OK, many.details);
      assert.ok(
        numbers(many).every((v, k) => v === k * 2),
        'every row of the many-bundle call in its place',
      );
      const big = await t.client.evaluate({
        script: 'args[0] + "!"',
        returnType: S,
        params: [{ dataType: S }],
        bundles: [Array.from({ length: 40_000 }, (_, k) => [str(`value ${k}`)])],
      });
      assert.equal(big.code, status.OK, big.details);
      assert.ok(
        strings(big).every((v, k) => v === `value ${k}!`),
        'every row of the large call in its place',
      );
    }
  });
});
