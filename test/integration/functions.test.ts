/** Every script function, in chart (TENSOR) and load-script (SCALAR) form; parameters and names. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, type Dual, dual, FunctionType, num, numbers, str, strings } from '../helpers/qlik-client';

const N = DataType.NUMERIC;
const S = DataType.STRING;
const D = DataType.DUAL;

let t: TestPlugin;
before(async () => (t = await startTestPlugin()));
after(async () => t.stop());

const duals14: Dual[][] = [[dual(10, '10')], [dual(NaN, 'ten')], [dual(11, '11')], [dual(NaN, 'eleven')]];

describe('ScriptEval family (TENSOR, once per row)', () => {
  it('ScriptEval adds two numeric columns, row by row', async () => {
    const r = await t.client.evaluate({
      script: 'args[0] + args[1]',
      params: [
        { dataType: N, name: 'A' },
        { dataType: N, name: 'B' },
      ],
      bundles: [
        [
          [num(1), num(10)],
          [num(2), num(20)],
          [num(3), num(30)],
        ],
      ],
    });
    assert.equal(r.code, status.OK, r.details);
    assert.deepEqual(numbers(r), [11, 22, 33]);
  });

  it('keeps the order rows came in (not sorted)', async () => {
    const r = await t.client.evaluate({
      script: 'args[0] * 2',
      params: [{ dataType: N, name: 'X' }],
      bundles: [[[num(5)], [num(1)], [num(3)]]],
    });
    assert.deepEqual(numbers(r), [10, 2, 6]);
  });

  it('binds parameters by name', async () => {
    const r = await t.client.evaluate({
      script: 'A * B',
      params: [
        { dataType: N, name: 'A' },
        { dataType: N, name: 'B' },
      ],
      bundles: [
        [
          [num(2), num(3)],
          [num(4), num(5)],
        ],
      ],
    });
    assert.deepEqual(numbers(r), [6, 20]);
  });

  it('binds Unicode identifiers, skips reserved words, globals and duplicates', async () => {
    const r = await t.client.evaluate({
      script: 'Försäljning + (typeof Math === "object" ? 1 : 0) + Kostnad',
      params: [
        { dataType: N, name: 'Försäljning' },
        { dataType: N, name: 'Math' },
        { dataType: N, name: 'Kostnad' },
        { dataType: N, name: 'Kostnad' },
        { dataType: N, name: 'Sum(Sales)' },
        { dataType: N, name: 'args' },
      ],
      bundles: [[[num(100), num(7), num(10), num(99), num(5), num(6)]]],
    });
    assert.equal(r.code, status.OK, r.details);
    assert.deepEqual(numbers(r), [111]);
  });

  it('accepts a function body when the text is not an expression', async () => {
    const r = await t.client.evaluate({
      script: 'const x = args[0];\nreturn x * x;',
      params: [{ dataType: N }],
      bundles: [[[num(3)], [num(-4)]]],
    });
    assert.deepEqual(numbers(r), [9, 16]);
  });

  it('ignores trailing semicolons and white space of an expression', async () => {
    const r = await t.client.evaluate({ script: 'args[0] + 1 ;;  \n', params: [{ dataType: N }], bundles: [[[num(1)]]] });
    assert.deepEqual(numbers(r), [2]);
  });

  it('an expression may end in a line comment', async () => {
    const r = await t.client.evaluate({ script: 'args[0] + 1 // plus one', params: [{ dataType: N }], bundles: [[[num(1)]]] });
    assert.deepEqual(numbers(r), [2]);
  });

  it('NUMERIC parameters arrive as numbers, Qlik null as NaN', async () => {
    const r = await t.client.evaluate({
      script: 'Number.isNaN(args[0]) ? -1 : args[0] + 1',
      params: [{ dataType: N }],
      bundles: [[[num(NaN)], [num(1)], [{}]]],
    });
    assert.deepEqual(numbers(r), [-1, 2, 1]);
  });

  it('ScriptEvalStr concatenates strings (STRING parameters, null as empty text)', async () => {
    const r = await t.client.evaluate({
      script: 'args[0] + args[1]',
      returnType: S,
      params: [
        { dataType: S, name: 'str1' },
        { dataType: S, name: 'str2' },
      ],
      bundles: [
        [
          [str('Hello'), str('World')],
          [{}, str('x')],
        ],
      ],
    });
    assert.deepEqual(strings(r), ['HelloWorld', 'x']);
  });

  it('ScriptEvalStr round-trips UTF-8', async () => {
    const r = await t.client.evaluate({
      script: 'args[0].toUpperCase()',
      returnType: S,
      params: [{ dataType: S, name: 's' }],
      bundles: [[[str('a')], [str('')], [str('åäö')], [str('😀x')]]],
    });
    assert.deepEqual(strings(r), ['A', '', 'ÅÄÖ', '😀X']);
  });

  it('ScriptEvalEx with a STRING parameter and NUMERIC return', async () => {
    const r = await t.client.evaluate({
      script: 'args[0].length',
      params: [{ dataType: S, name: 's' }],
      bundles: [[[str('abc')], [str('')], [str('héllo')]]],
    });
    assert.deepEqual(numbers(r), [3, 0, 5]);
  });

  it('ScriptEvalExStr mixes NUMERIC and STRING parameters', async () => {
    const r = await t.client.evaluate({
      script: 'args[1] + ":" + args[0]',
      returnType: S,
      params: [
        { dataType: N, name: 'n' },
        { dataType: S, name: 's' },
      ],
      bundles: [
        [
          [num(1), str('a')],
          [num(2.5), str('b')],
        ],
      ],
    });
    assert.deepEqual(strings(r), ['a:1', 'b:2.5']);
  });

  it('ScriptEvalEx DUAL parameters arrive as { num, str }, num NaN without a number', async () => {
    const r = await t.client.evaluate({ script: 'args[0].num', params: [{ dataType: D, name: 'd' }], bundles: [duals14] });
    assert.deepEqual(numbers(r), [10, NaN, 11, NaN]);
  });

  it('ScriptEvalExStr reads the text of DUAL parameters', async () => {
    const r = await t.client.evaluate({ script: 'args[0].str', returnType: S, params: [{ dataType: D, name: 'd' }], bundles: [duals14] });
    assert.deepEqual(strings(r), ['10', 'ten', '11', 'eleven']);
  });
});

describe('ScriptEval in a regular LOAD (SCALAR, one call per row)', () => {
  it('answers each one-row call with exactly one row', async () => {
    const results = [];
    for (const x of [1, 2, 3, 4]) {
      results.push(
        await t.client.evaluate({
          script: 'args[0] * args[0]',
          functionType: FunctionType.SCALAR,
          params: [{ dataType: N, name: 'x' }],
          bundles: [[[num(x)]]],
        }),
      );
    }
    assert.deepEqual(
      results.map((r) => numbers(r)),
      [[1], [4], [9], [16]],
    );
  });

  it('ScriptEvalStr in a load', async () => {
    const r = await t.client.evaluate({
      script: 'args[0].toUpperCase()',
      functionType: FunctionType.SCALAR,
      returnType: S,
      params: [{ dataType: S, name: 'Name' }],
      bundles: [[[str('anna')]]],
    });
    assert.deepEqual(strings(r), ['ANNA']);
  });
});

describe('ScriptAggr family (AGGREGATION, once per call)', () => {
  const aggr = FunctionType.AGGREGATION;

  it('ScriptAggr sums over every row of every bundle and answers once', async () => {
    const r = await t.client.evaluate({
      script: 'args[0].reduce((s, x) => s + x, 0)',
      functionType: aggr,
      params: [{ dataType: N, name: 'X' }],
      bundles: [
        [[num(1)], [num(2)]],
        [[num(3)], [num(4)]],
      ],
    });
    assert.deepEqual(numbers(r), [10]);
  });

  it('ScriptAggr sees all 2500 rows of three bundles, in arrival order', async () => {
    const bundles = [1000, 1000, 500].map((n, b) => Array.from({ length: n }, (_, i) => [num(b * 1000 + i)]));
    const r = await t.client.evaluate({
      script: 'args[0].length * 1e7 + (args[0].every((x, i) => x === i) ? 1 : 0)',
      functionType: aggr,
      params: [{ dataType: N }],
      bundles,
    });
    assert.deepEqual(numbers(r), [2500 * 1e7 + 1]);
  });

  it('args[i] is a real array (map/filter/join work)', async () => {
    const r = await t.client.evaluate({
      script: 'args[0].filter(x => !Number.isNaN(x)).reduce((a, b) => a + b, 0)',
      functionType: aggr,
      params: [{ dataType: N }],
      bundles: [[[num(1)], [num(NaN)], [num(3)]]],
    });
    assert.deepEqual(numbers(r), [4]);
  });

  it('ScriptAggrStr joins text', async () => {
    const r = await t.client.evaluate({
      script: 'args[0].join(", ")',
      functionType: aggr,
      returnType: S,
      params: [{ dataType: S, name: 'Country' }],
      bundles: [[[str('a')], [str('b')], [str('c')]]],
    });
    assert.deepEqual(strings(r), ['a, b, c']);
  });

  it('ScriptAggrEx counts DUAL values with a number', async () => {
    const r = await t.client.evaluate({
      script: 'args[0].filter(d => !Number.isNaN(d.num)).length',
      functionType: aggr,
      params: [{ dataType: D, name: 'd' }],
      bundles: [duals14],
    });
    assert.deepEqual(numbers(r), [2]);
  });

  it('ScriptAggrExStr joins DUAL texts', async () => {
    const r = await t.client.evaluate({
      script: 'args[0].map(d => d.str).join(", ")',
      functionType: aggr,
      returnType: S,
      params: [{ dataType: D, name: 'd' }],
      bundles: [duals14],
    });
    assert.deepEqual(strings(r), ['10, ten, 11, eleven']);
  });

  it('named parameters hold the whole column in an aggregation', async () => {
    const r = await t.client.evaluate({
      script: 'Sales.reduce((a, b) => a + b, 0) - Cost.reduce((a, b) => a + b, 0)',
      functionType: aggr,
      params: [
        { dataType: N, name: 'Sales' },
        { dataType: N, name: 'Cost' },
      ],
      bundles: [
        [
          [num(10), num(1)],
          [num(20), num(2)],
        ],
      ],
    });
    assert.deepEqual(numbers(r), [27]);
  });

  it('an aggregation over no rows runs once with empty arrays', async () => {
    const r = await t.client.evaluate({ script: 'args[0].length', functionType: aggr, params: [{ dataType: N }], bundles: [] });
    assert.deepEqual(numbers(r), [0]);
  });
});

describe('calls with no parameters', () => {
  it('run once with args = [] when no bundle arrives', async () => {
    const r = await t.client.evaluate({ script: '40 + 2 + args.length', functionType: FunctionType.SCALAR, bundles: [] });
    assert.deepEqual(numbers(r), [42]);
  });

  it('run once when a bundle with one empty row arrives', async () => {
    const r = await t.client.evaluate({ script: '40 + 2', functionType: FunctionType.SCALAR, bundles: [[[]]] });
    assert.deepEqual(numbers(r), [42]);
  });

  it('ScriptEvalStr with no parameters', async () => {
    const r = await t.client.evaluate({ script: '"The answer"', functionType: FunctionType.SCALAR, returnType: S, bundles: [] });
    assert.deepEqual(strings(r), ['The answer']);
  });

  it('works without the common request header', async () => {
    const r = await t.client.evaluate({
      script: 'args[0] + args[1]',
      common: null,
      params: [
        { dataType: N, name: 'num1' },
        { dataType: N, name: 'num2' },
      ],
      bundles: [[[num(42), num(42)]]],
    });
    assert.deepEqual(numbers(r), [84]);
  });
});
