/** The SPEC's result mapping table, table results for LOAD … EXTENSION, and the caching header. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { decodeMessage, messages } from '../../src/grpc/proto';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { type CallResult, DataType, FunctionType, num, numbers, str, strings } from '../helpers/qlik-client';

const N = DataType.NUMERIC;
const S = DataType.STRING;

let t: TestPlugin;
before(async () => (t = await startTestPlugin()));
after(async () => t.stop());

/** Evaluates `script` once per given numeric row (SCALAR: never a table), with the given return type. */
function evalRows(script: string, returnType: DataType, xs: number[] = [1]): Promise<CallResult> {
  const functionType = FunctionType.SCALAR;
  return t.client.evaluate({ script, functionType, returnType, params: [{ dataType: N, name: 'x' }], bundles: [xs.map((x) => [num(x)])] });
}

async function numeric(script: string): Promise<number> {
  const r = await evalRows(script, N);
  assert.equal(r.code, status.OK, r.details);
  assert.equal(r.rows.length, 1);
  return numbers(r)[0] as number;
}

async function text(script: string): Promise<string> {
  const r = await evalRows(script, S);
  assert.equal(r.code, status.OK, r.details);
  assert.equal(r.rows.length, 1);
  return strings(r)[0] as string;
}

const serial = (iso: string): number => Date.parse(iso) / 86_400_000 + 25_569;

describe('NUMERIC return', () => {
  it('number → that number; NaN and ±Infinity → null (NaN)', async () => {
    assert.equal(await numeric('1.5'), 1.5);
    assert.equal(await numeric('0'), 0);
    assert.equal(await numeric('-0.25'), -0.25);
    assert.ok(Number.isNaN(await numeric('NaN')));
    assert.ok(Number.isNaN(await numeric('Infinity')));
    assert.ok(Number.isNaN(await numeric('-1/0')));
  });
  it('boolean → 1 or 0', async () => {
    assert.deepEqual(numbers(await evalRows('x > 1', N, [0, 2])), [0, 1]);
  });
  it('string → Number when the trimmed text is a number, else null', async () => {
    assert.equal(await numeric('" 12.5 "'), 12.5);
    assert.ok(Number.isNaN(await numeric('"abc"')));
    assert.ok(Number.isNaN(await numeric('""')));
    assert.ok(Number.isNaN(await numeric('"   "')));
  });
  it('null, undefined, function, symbol → null', async () => {
    for (const script of ['null', 'undefined', '() => 1', 'Symbol("s")']) assert.ok(Number.isNaN(await numeric(script)), script);
  });
  it('Date → Qlik serial date (days since 1899-12-30 UTC); invalid → null', async () => {
    assert.equal(await numeric('new Date(Date.UTC(2024, 0, 1, 12))'), serial('2024-01-01T12:00:00Z'));
    assert.equal(await numeric('new Date("1899-12-30T00:00:00Z")'), 0);
    assert.ok(Number.isNaN(await numeric('new Date("nope")')));
  });
  it('bigint → Number(v)', async () => {
    assert.equal(await numeric('2n ** 60n'), 2 ** 60);
  });
  it('{ num, str } → num', async () => {
    assert.equal(await numeric('({ num: 7, str: "seven" })'), 7);
  });
  it('other objects, arrays and promises → null', async () => {
    for (const script of ['({ a: 1 })', '[1, 2]', 'Promise.resolve(5)', '({ then(r) { r(1); } })', '({ num: 1, str: "a", extra: 2 })']) {
      assert.ok(Number.isNaN(await numeric(script)), script);
    }
  });
});

describe('STRING return', () => {
  it('number → String(v)', async () => {
    assert.equal(await text('1.5'), '1.5');
    assert.equal(await text('NaN'), 'NaN');
  });
  it("boolean → 'true' / 'false'", async () => {
    assert.deepEqual(strings(await evalRows('x > 1', S, [0, 2])), ['false', 'true']);
  });
  it('string → the string', async () => {
    assert.equal(await text('"a b"'), 'a b');
  });
  it("null, undefined, function, symbol → ''", async () => {
    for (const script of ['null', 'undefined', '() => 1', 'Symbol("s")']) assert.equal(await text(script), '', script);
  });
  it("Date → ISO 8601; invalid → ''", async () => {
    assert.equal(await text('new Date(Date.UTC(2024, 0, 1, 12))'), '2024-01-01T12:00:00.000Z');
    assert.equal(await text('new Date("nope")'), '');
  });
  it('bigint → String(v)', async () => {
    assert.equal(await text('2n ** 70n'), (2n ** 70n).toString());
  });
  it('{ num, str } → str', async () => {
    assert.equal(await text('({ num: 7, str: "seven" })'), 'seven');
  });
  it('other objects and arrays → JSON; promises → {}', async () => {
    assert.equal(await text('({ a: 1, b: [2, "x"] })'), '{"a":1,"b":[2,"x"]}');
    assert.equal(await text('[1, "a"]'), '[1,"a"]');
    assert.equal(await text('Promise.resolve(5)'), '{}');
  });
  it('an object JSON cannot represent fails the call naming the row', async () => {
    const r = await evalRows('x === 2 ? (() => { const o = {}; o.o = o; return o; })() : 1', S, [1, 2]);
    assert.equal(r.code, status.INVALID_ARGUMENT);
    assert.match(r.details, /row 1/);
    assert.match(r.details, /circular/i);
  });
});

function tableDescription(r: CallResult): { fields: { name: string; dataType: number }[]; numberOfRows: number } {
  const bytes = r.initialMetadata?.get('qlik-tabledescription-bin')[0];
  assert.ok(Buffer.isBuffer(bytes), 'qlik-tabledescription-bin in the initial metadata');
  return decodeMessage(messages.TableDescription, bytes) as never;
}

describe('table results (TENSOR, every row an array or a plain object)', () => {
  it('arrays become Field1..FieldN NUMERIC columns', async () => {
    const r = await t.client.evaluate({
      script: '[args[0], args[0] * 2]',
      params: [{ dataType: N, name: 'x' }],
      bundles: [[[num(1)], [num(2)]]],
    });
    assert.equal(r.code, status.OK, r.details);
    assert.deepEqual(
      r.rows.map((row) => row.map((d) => d.numData)),
      [
        [1, 2],
        [2, 4],
      ],
    );
    const desc = tableDescription(r);
    assert.deepEqual(
      desc.fields.map((f) => [f.name, f.dataType]),
      [
        ['Field1', N],
        ['Field2', N],
      ],
    );
    assert.equal(desc.numberOfRows, 2);
  });

  it('objects: union of keys in first-seen order, typed over every row, cells carry both num and str', async () => {
    const r = await t.client.evaluate({
      script: 'x === 1 ? { id: x, name: "one", when: new Date(Date.UTC(2024, 0, 1)) } : { id: x, mixed: x === 2 ? "two" : 3, name: null }',
      params: [{ dataType: N, name: 'x' }],
      bundles: [[[num(1)], [num(2)]], [[num(3)]]],
    });
    assert.equal(r.code, status.OK, r.details);
    const desc = tableDescription(r);
    assert.deepEqual(
      desc.fields.map((f) => [f.name, f.dataType]),
      [
        ['id', N],
        ['name', S],
        ['when', N],
        ['mixed', DataType.DUAL],
      ],
    );
    assert.equal(r.rows.length, 3);
    assert.deepEqual(r.rows[0]?.[0], { numData: 1, strData: '1' });
    assert.equal(r.rows[0]?.[1]?.strData, 'one');
    assert.equal(r.rows[0]?.[2]?.numData, serial('2024-01-01T00:00:00Z'));
    assert.equal(r.rows[1]?.[3]?.strData, 'two');
    assert.equal(r.rows[2]?.[3]?.numData, 3);
    assert.ok(Number.isNaN(r.rows[2]?.[1]?.numData), 'a null cell carries NaN');
  });

  it('a column of only nulls is NUMERIC', async () => {
    const r = await t.client.evaluate({ script: '({ a: x, b: null })', params: [{ dataType: N, name: 'x' }], bundles: [[[num(1)]]] });
    assert.deepEqual(
      tableDescription(r).fields.map((f) => [f.name, f.dataType]),
      [
        ['a', N],
        ['b', N],
      ],
    );
  });

  it('is a table across many chunks and workers (LOAD * EXTENSION with many rows)', async () => {
    const rows = 60_000;
    const bundles = Array.from({ length: 30 }, (_, b) => Array.from({ length: rows / 30 }, (_, i) => [num(b * (rows / 30) + i)]));
    const r = await t.client.evaluate({
      script: '({ id: args[0], square: args[0] * args[0] })',
      params: [{ dataType: N, name: 'id' }],
      bundles,
    });
    assert.equal(r.code, status.OK, r.details);
    assert.equal(tableDescription(r).numberOfRows, rows);
    assert.equal(r.rows.length, rows);
    assert.ok(r.rows.every((row, i) => row[0]?.numData === i && row[1]?.numData === i * i));
  });

  it('is not a table when one row is not table-shaped: arrays map to null / JSON', async () => {
    const r = await t.client.evaluate({
      script: 'x === 3 ? 7 : [x]',
      returnType: S,
      params: [{ dataType: N, name: 'x' }],
      bundles: [[[num(1)], [num(2)], [num(3)]]],
    });
    assert.equal(r.initialMetadata?.get('qlik-tabledescription-bin').length ?? 0, 0);
    assert.deepEqual(strings(r), ['[1]', '[2]', '7']);
  });

  it('{ num, str } rows are duals, not tables', async () => {
    const r = await t.client.evaluate({
      script: '({ num: x, str: "n" + x })',
      returnType: S,
      params: [{ dataType: N, name: 'x' }],
      bundles: [[[num(1)]]],
    });
    assert.equal(r.initialMetadata?.get('qlik-tabledescription-bin').length ?? 0, 0);
    assert.deepEqual(strings(r), ['n1']);
  });

  it('aggregations and SCALAR calls never answer tables', async () => {
    const r = await t.client.evaluate({
      script: '[1, 2]',
      functionType: FunctionType.AGGREGATION,
      returnType: S,
      params: [{ dataType: N }],
      bundles: [[[num(1)]]],
    });
    assert.deepEqual(strings(r), ['[1,2]']);
    assert.equal(r.initialMetadata?.get('qlik-tabledescription-bin').length ?? 0, 0);
  });
});

describe('caching', () => {
  function noStore(r: CallResult): boolean {
    const values = [...(r.initialMetadata?.get('qlik-cache') ?? []), ...(r.trailers?.get('qlik-cache') ?? [])];
    return values.includes('no-store');
  }

  for (const script of ['Math.random()', 'Date.now()', 'Date()', 'new Date().getTime()']) {
    it(`${script} answers with qlik-cache: no-store`, async () => {
      const r = await evalRows(script, S);
      assert.equal(r.code, status.OK, r.details);
      assert.ok(noStore(r));
    });
  }

  it('deterministic scripts, and Dates with arguments, carry no qlik-cache', async () => {
    for (const script of ['x * 2', 'new Date(2020, 1, 1).getTime()', 'Date.UTC(2020, 1, 1)']) {
      const r = await evalRows(script, N);
      assert.equal(r.code, status.OK, r.details);
      assert.equal(noStore(r), false, script);
    }
  });

  it('a random value in one call does not mark the next call', async () => {
    assert.ok(noStore(await evalRows('Math.random()', N)));
    assert.equal(noStore(await evalRows('x', N)), false);
  });
});

describe('DUAL return type (never sent by Qlik)', () => {
  it('answers both numData and strData', async () => {
    const r = await t.client.evaluate({ script: 'args[0]', returnType: DataType.DUAL, params: [{ dataType: N }], bundles: [[[num(5)]]] });
    assert.deepEqual(r.rows, [[{ numData: 5, strData: '5' }]]);
  });
});

describe('STRING parameters with numbers', () => {
  it('a STRING parameter keeps leading zeros', async () => {
    const r = await t.client.evaluate({ script: 'args[0]', returnType: S, params: [{ dataType: S }], bundles: [[[str('007')]]] });
    assert.deepEqual(strings(r), ['007']);
  });
});
