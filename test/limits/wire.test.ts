/**
 * Malformed and hostile protocol input: garbled headers, wrong field types, rows of the wrong width,
 * empty bundles, thousands of empty rows, NaN/Infinity, invalid UTF-8, empty and very long strings,
 * truncated and garbage messages. Each gets a clear status; the plugin is alive after all of them.
 * Messages are built here byte by byte, independently of the plugin's codec.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { type CallResult, encodeBundle, num, numbers, type ScriptCallOptions, scriptHeader, str, strings } from '../helpers/qlik-client';
import { assertServing, DataType, FunctionType } from '../helpers/sandbox-calls';

const OK = 0;
const INVALID_ARGUMENT = 3;

function varint(value: number): Buffer {
  const bytes: number[] = [];
  let v = value;
  while (v >= 0x80) {
    bytes.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  bytes.push(v);
  return Buffer.from(bytes);
}
const tag = (field: number, wireType: number): Buffer => varint(field * 8 + wireType);
const lengthDelimited = (field: number, payload: Buffer): Buffer => Buffer.concat([tag(field, 2), varint(payload.length), payload]);
function double(field: number, value: number): Buffer {
  const bytes = Buffer.alloc(8);
  bytes.writeDoubleLE(value);
  return Buffer.concat([tag(field, 1), bytes]);
}
/** BundledRows.rows = 1, Row.duals = 1, Dual.numData = 1 (double), Dual.strData = 2 (string). */
const bundle = (...rows: Buffer[]): Buffer => Buffer.concat(rows.map((row) => lengthDelimited(1, row)));
const row = (...duals: Buffer[]): Buffer => Buffer.concat(duals.map((dual) => lengthDelimited(1, dual)));
const textDual = (utf8: Buffer): Buffer => lengthDelimited(2, utf8);

const ONE_NUMBER: Partial<ScriptCallOptions> = {
  functionType: FunctionType.SCALAR,
  returnType: DataType.NUMERIC,
  params: [{ dataType: DataType.NUMERIC }],
};
const ONE_STRING: Partial<ScriptCallOptions> = {
  functionType: FunctionType.SCALAR,
  returnType: DataType.STRING,
  params: [{ dataType: DataType.STRING }],
};

describe('bad wire input', () => {
  let t: TestPlugin;
  const call = (options: Partial<ScriptCallOptions> & { script?: string }): Promise<CallResult> =>
    t.client.evaluate({ script: 'args[0]', ...options });
  function assertInvalid(result: CallResult, pattern: RegExp): void {
    assert.equal(result.code, INVALID_ARGUMENT, `expected INVALID_ARGUMENT, got ${result.code} ${result.details}`);
    assert.match(result.details, pattern);
    assert.ok(!result.details.includes('\n') && result.details.length <= 500, 'details are one bounded line');
  }

  before(async () => {
    t = await startTestPlugin({ SSE_SCRIPT_TIMEOUT_MS: '5000' });
  });
  after(async () => t.stop());

  describe('headers', () => {
    it('a missing script header', async () => {
      assertInvalid(
        await call({ ...ONE_NUMBER, scriptHeaderBytes: null, bundles: [[[num(1)]]] }),
        /no qlik-scriptrequestheader-bin header/,
      );
    });

    it('a garbled script header (random bytes)', async () => {
      const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x12, 0x99, 0x01]);
      assertInvalid(await call({ ...ONE_NUMBER, scriptHeaderBytes: garbage, bundles: [[[num(1)]]] }), /cannot be read/);
    });

    it('a truncated script header', async () => {
      const header = scriptHeader({ script: 'args[0] + 1', ...ONE_NUMBER });
      assertInvalid(
        await call({ ...ONE_NUMBER, scriptHeaderBytes: header.subarray(0, header.length - 3), bundles: [[[num(1)]]] }),
        /cannot be read/,
      );
    });

    it('wrong field types in the script header: the script as a number, an unknown return type', async () => {
      const scriptAsNumber = Buffer.concat([tag(1, 0), varint(12345), tag(2, 0), varint(0), tag(3, 0), varint(1)]);
      const result = await call({ ...ONE_NUMBER, scriptHeaderBytes: scriptAsNumber, bundles: [[[num(1)]]] });
      assert.equal(result.code, INVALID_ARGUMENT, result.details);
      const unknownReturn = Buffer.concat([lengthDelimited(1, Buffer.from('args[0]')), tag(3, 0), varint(99)]);
      assertInvalid(await call({ ...ONE_NUMBER, scriptHeaderBytes: unknownReturn, bundles: [[[num(1)]]] }), /unknown returnType 99/);
      const unknownParamType = Buffer.concat([
        lengthDelimited(1, Buffer.from('args[0]')),
        tag(3, 0),
        varint(1),
        lengthDelimited(4, Buffer.concat([tag(1, 0), varint(7)])),
      ]);
      assertInvalid(await call({ ...ONE_NUMBER, scriptHeaderBytes: unknownParamType, bundles: [[[num(1)]]] }), /unknown/);
    });

    it('a garbled common header does not break the call (it only feeds the log line)', async () => {
      const result = await call({ ...ONE_NUMBER, common: null, bundles: [[[num(4)]]] });
      assert.equal(result.code, OK, result.details);
      assert.deepEqual(numbers(result), [4]);
    });
  });

  describe('rows', () => {
    it('a row with too many or too few values for the parameters', async () => {
      const two = { ...ONE_NUMBER, params: [{ dataType: DataType.NUMERIC }, { dataType: DataType.NUMERIC }] };
      assertInvalid(await call({ ...two, bundles: [[[num(1), num(2)], [num(1)]]] }), /row 1 has 1 value but the script takes 2 parameters/);
      assertInvalid(await call({ ...two, bundles: [[[num(1), num(2), num(3)]]] }), /row 0 has 3 values but the script takes 2 parameters/);
    });

    it('empty bundles and no bundles at all', async () => {
      const empty = await call({ ...ONE_NUMBER, bundles: [[], [], []] });
      assert.equal(empty.code, OK, empty.details);
      assert.equal(empty.rows.length, 0);
      const none = await call({ ...ONE_NUMBER, bundles: [] });
      assert.equal(none.code, OK, none.details);
      assert.equal(none.rows.length, 0);
      const mixed = await call({ ...ONE_NUMBER, bundles: [[], [[num(5)]], []] });
      assert.deepEqual(numbers(mixed), [5]);
    });

    it('ten thousand rows without values for a one-parameter call', async () => {
      assertInvalid(
        await call({ ...ONE_NUMBER, rawMessages: [bundle(...Array.from({ length: 10_000 }, () => row()))] }),
        /row 0 has 0 values but the script takes 1 parameter/,
      );
    });

    it('ten thousand rows of empty duals take the protobuf defaults (0, empty text), answered row for row', async () => {
      const result = await call({
        ...ONE_NUMBER,
        script: 'args[0] + 1',
        rawMessages: [bundle(...Array.from({ length: 10_000 }, () => row(Buffer.alloc(0))))],
      });
      assert.equal(result.code, OK, result.details);
      assert.equal(result.rows.length, 10_000);
      assert.ok(numbers(result).every((n) => n === 1));
    });

    it('NaN and ±Infinity arrive as numbers; as NUMERIC results they are Qlik nulls', async () => {
      const rows = [[num(Number.NaN)], [num(Number.POSITIVE_INFINITY)], [num(Number.NEGATIVE_INFINITY)], [num(-0)]];
      const text = await call({ ...ONE_NUMBER, returnType: DataType.STRING, script: 'String(args[0])', bundles: [rows] });
      assert.deepEqual(strings(text), ['NaN', 'Infinity', '-Infinity', '0']);
      const numeric = await call({ ...ONE_NUMBER, bundles: [rows] });
      assert.equal(numeric.code, OK, numeric.details);
      const [nan, inf, negInf, zero] = numbers(numeric);
      assert.ok(Number.isNaN(nan) && Number.isNaN(inf) && Number.isNaN(negInf), 'non-finite results are nulls');
      assert.ok(zero === 0, `-0 stays a zero (${String(zero)})`);
    });

    it('invalid UTF-8 in strData becomes U+FFFD, never an error or a crash', async () => {
      const invalid = [Buffer.from([0xff, 0xfe]), Buffer.from([0xc3]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0x61, 0x80, 0x62])];
      const result = await call({
        ...ONE_STRING,
        script: 'args[0].length + ":" + args[0]',
        rawMessages: [bundle(...invalid.map((bytes) => row(textDual(bytes))))],
      });
      assert.equal(result.code, OK, result.details);
      assert.deepEqual(strings(result), ['2:\uFFFD\uFFFD', '1:\uFFFD', '3:\uFFFD\uFFFD\uFFFD', '3:a\uFFFDb']);
    });

    it('zero-length and 1 MB strings', async () => {
      const long = 'é'.repeat(500_000);
      const result = await call({
        ...ONE_STRING,
        script: 'args[0].length',
        returnType: DataType.NUMERIC,
        bundles: [[[str('')], [str(long)], [{}]]],
      });
      assert.equal(result.code, OK, result.details);
      assert.deepEqual(numbers(result), [0, 500_000, 0]);
      const echoed = await call({ ...ONE_STRING, bundles: [[[str(long)]]] });
      assert.equal(strings(echoed)[0], long);
    });

    it('a value field with the wrong wire type is skipped as an unknown field, as protobuf does', async () => {
      const numberAsVarint = row(Buffer.concat([tag(1, 0), varint(42)]));
      const result = await call({ ...ONE_NUMBER, rawMessages: [bundle(numberAsVarint)] });
      assert.equal(result.code, OK, result.details);
      assert.deepEqual(numbers(result), [0]);
      const unknownFields = row(Buffer.concat([tag(9, 0), varint(1), lengthDelimited(15, Buffer.from('x')), double(1, 7)]));
      assert.deepEqual(numbers(await call({ ...ONE_NUMBER, rawMessages: [bundle(unknownFields)] })), [7]);
    });

    it('truncated messages, lengths past the end, unsupported wire types, garbage', async () => {
      const good = bundle(row(double(1, 1)));
      const cases: [string, Buffer][] = [
        ['truncated', good.subarray(0, good.length - 3)],
        ['a length past the end', Buffer.concat([tag(1, 2), varint(1_000_000), Buffer.from([1, 2, 3])])],
        ['a 5-byte length', Buffer.concat([tag(1, 2), Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7f])])],
        ['wire type 7', Buffer.from([0x0f, 0x00])],
        ['a truncated double', bundle(row(Buffer.concat([tag(1, 1), Buffer.from([0, 0, 0])])))],
        ['garbage', Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 73 + 11) % 256))],
      ];
      for (const [name, message] of cases) {
        const result = await call({ ...ONE_NUMBER, rawMessages: [message] });
        assert.equal(result.code, INVALID_ARGUMENT, `${name}: ${result.code} ${result.details}`);
        assert.match(result.details, /malformed BundledRows|row/, name);
      }
    });

    it('a good message after a bad one in the same call does not rescue it', async () => {
      const result = await call({ ...ONE_NUMBER, rawMessages: [Buffer.from([0x0f]), encodeBundle([[num(1)]])] });
      assert.equal(result.code, INVALID_ARGUMENT, result.details);
    });
  });

  it('the plugin is alive and correct after all of it', async () => {
    await assertServing(t.client);
    assert.equal(t.plugin.pool.queueSize, 0);
  });
});
