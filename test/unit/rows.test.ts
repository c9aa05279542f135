/** The hand-written BundledRows codec agrees with protobufjs, byte for byte where it matters. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { PluginError } from '../../src/contract/errors';
import { encodeCells, encodeNumbers, encodeUtf8 } from '../../src/contract/replies';
import { decodeColumns, SHORT_COPY_BYTES, splitRows } from '../../src/contract/rows';
import { DataType } from '../../src/contract/task';
import { decodeMessage, messages } from '../../src/grpc/proto';
import { dual, encodeBundle, num, str } from '../helpers/qlik-client';

function decodeReplies(replies: Uint8Array[]): { numData: number; strData: string }[][] {
  return replies.flatMap((bytes) =>
    (decodeMessage(messages.BundledRows, bytes) as { rows: { duals: { numData: number; strData: string }[] }[] }).rows.map((r) => r.duals),
  );
}

describe('splitRows', () => {
  it('counts rows and cuts at row boundaries into valid BundledRows', () => {
    const bundle = encodeBundle(Array.from({ length: 100 }, (_, i) => [num(i), str(`s${i}`)]));
    const chunks = splitRows(bundle, 200);
    assert.ok(chunks.length > 1);
    assert.equal(
      chunks.reduce((n, c) => n + c.rows, 0),
      100,
    );
    const rows = chunks.flatMap((c) => (decodeMessage(messages.BundledRows, c.bytes) as { rows: unknown[] }).rows);
    assert.equal(rows.length, 100);
  });

  it('refuses a truncated message', () => {
    const bundle = encodeBundle([[num(1)]]);
    assert.throws(
      () => splitRows(bundle.subarray(0, bundle.length - 1), 1000),
      (e: unknown) => e instanceof PluginError && e.code === 'INVALID_ARGUMENT',
    );
  });

  it('refuses field number 0 and a varint longer than 10 bytes, which no protobuf encoder writes', () => {
    const row = encodeBundle([[num(1)]]);
    const fieldZero = Buffer.concat([row, Buffer.of(0x00, 0x01)]);
    const overlongZero = Buffer.concat([row, Buffer.of(0x80, 0x00, 0x01)]);
    const longVarint = Buffer.concat([row, Buffer.of(0x18), Buffer.alloc(10, 0xff), Buffer.of(0x01)]);
    for (const [what, bytes] of [
      ['field number 0', fieldZero],
      ['field number 0', overlongZero],
      ['varint longer than 10 bytes', longVarint],
    ] as const)
      assert.throws(
        () => splitRows(bytes, 1000),
        (e: unknown) => e instanceof PluginError && e.code === 'INVALID_ARGUMENT' && e.message.includes(what),
        what,
      );
    // A 10-byte varint in an unknown field is still dropped.
    const tenBytes = Buffer.concat([row, Buffer.of(0x18), Buffer.alloc(9, 0xff), Buffer.of(0x01)]);
    assert.equal(splitRows(tenBytes, 1000)[0]?.rows, 1);
  });

  it('reads the hex vector of sse-protocol.md: one row of duals 1 and 10', () => {
    const vector = Buffer.from('0a16' + '0a09' + '09000000000000f03f' + '0a09' + '090000000000002440', 'hex');
    assert.equal(splitRows(vector, 1000)[0]?.rows, 1);
    assert.deepEqual(
      decodeColumns([vector], 1, [DataType.NUMERIC, DataType.NUMERIC], 0).map((c) => Array.from(c.nums ?? [])),
      [[1], [10]],
    );
  });
});

describe('decodeColumns', () => {
  it('decodes NUMERIC, STRING and DUAL columns with protobuf defaults for absent fields', () => {
    const bundle = encodeBundle([
      [num(1.5), str('a'), dual(2, 'two')],
      [num(NaN), {}, dual(NaN, 'ten')],
      [{}, str('åäö😀'), {}],
    ]);
    const [n, s, d] = decodeColumns([bundle], 3, [DataType.NUMERIC, DataType.STRING, DataType.DUAL], 0);
    assert.deepEqual(Array.from(n?.nums ?? []), [1.5, NaN, 0]);
    assert.equal(s?.strs?.text, 'aåäö😀');
    assert.deepEqual(Array.from(s?.strs?.lengths ?? []), [1, 0, 5]);
    assert.deepEqual(Array.from(d?.nums ?? []), [2, NaN, 0]);
    assert.equal(d?.strs?.text, 'twoten');
  });

  it('names the row whose arity is wrong, counting from firstRow', () => {
    const bundle = encodeBundle([[num(1)], [num(1), num(2)]]);
    assert.throws(() => decodeColumns([bundle], 2, [DataType.NUMERIC], 40), /row 41 has 2 values but the script takes 1 parameter/);
  });

  it('decodes every value exactly as Node decodes it alone, valid UTF-8 or not, short or long (random bytes)', () => {
    let seed = 7;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const alphabet = [0x41, 0x7a, 0xc3, 0xa5, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xed, 0xa0, 0x80, 0xff, 0xc0];
    const lengths = [0, 1, 2, 3, 4, 5, SHORT_COPY_BYTES - 1, SHORT_COPY_BYTES, SHORT_COPY_BYTES + 1, 100];
    for (let round = 0; round < 200; round++) {
      const values = Array.from({ length: 1 + Math.floor(random() * 6) }, () =>
        // Short values are copied byte by byte, long ones (SHORT_COPY_BYTES and over) in one piece.
        Buffer.from(
          Array.from(
            { length: lengths[Math.floor(random() * lengths.length)] as number },
            () => alphabet[Math.floor(random() * alphabet.length)] as number,
          ),
        ),
      );
      const row = (bytes: Buffer): Buffer => {
        const dual = bytes.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x12, bytes.length]), bytes]);
        const inner = Buffer.concat([Buffer.from([0x0a, dual.length]), dual]);
        return Buffer.concat([Buffer.from([0x0a, inner.length]), inner]);
      };
      const bundle = Buffer.concat(values.map(row));
      const [s] = decodeColumns([bundle], values.length, [DataType.STRING], 0);
      const expected = values.map((v) => v.toString('utf8'));
      assert.equal(s?.strs?.text, expected.join(''), `round ${round}`);
      assert.deepEqual(
        Array.from(s?.strs?.lengths ?? []),
        expected.map((e) => e.length),
        `round ${round}`,
      );
    }
  });

  it('replaces invalid UTF-8 with U+FFFD rather than failing', () => {
    const bundle = Buffer.from([0x0a, 0x05, 0x0a, 0x03, 0x12, 0x01, 0xff]);
    const [s] = decodeColumns([bundle], 1, [DataType.STRING], 0);
    assert.equal(s?.strs?.text, '\ufffd');
  });
});

describe('encoders', () => {
  it('encodeNumbers writes one numeric dual per row, split by size', () => {
    const nums = Float64Array.from({ length: 1000 }, (_, i) => i - 0.5);
    const replies = encodeNumbers(nums, 13 * 300);
    assert.equal(replies.length, 4);
    assert.deepEqual(
      decodeReplies(replies).map((r) => r[0]?.numData),
      Array.from(nums),
    );
  });

  it('encodeUtf8 handles ASCII, multi-byte text and empty strings', () => {
    const values = [
      'abc',
      '',
      'åäö',
      '😀',
      'x'.repeat(150),
      'y'.repeat(150),
      'z'.repeat(SHORT_COPY_BYTES - 1),
      'å'.repeat(SHORT_COPY_BYTES / 2),
    ];
    const replies = encodeUtf8(Buffer.from(values.join(''), 'utf8'), Uint32Array.from(values.map((v) => Buffer.byteLength(v))), 200);
    assert.ok(replies.length >= 2);
    assert.ok(replies.every((r) => r.length <= 200));
    assert.deepEqual(
      decodeReplies(replies).map((r) => r[0]?.strData),
      values,
    );
  });

  it('encodeCells refuses a row larger than a reply message', () => {
    assert.throws(
      () =>
        encodeCells(
          1,
          1,
          (_r, _c, cell) => {
            cell.num = undefined;
            cell.str = 'x'.repeat(100);
          },
          50,
        ),
      (e: unknown) => e instanceof PluginError && e.code === 'RESOURCE_EXHAUSTED',
    );
  });
});
