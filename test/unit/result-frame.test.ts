/**
 * RESULT payloads as the front reads them (src/contract/result-frame.ts): a sandbox process is not
 * trusted, so a payload whose lengths do not add up, or whose table names pass the bounds the sandbox
 * is meant to keep, is refused before anything is allocated from it; a result the front keeps owns
 * exactly its bytes; a frame header that claims more than any sandbox sends is refused at once; and
 * where the task ran (the sandbox's main thread, a pool thread, moved) comes back as sent.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Frame, FrameReader, frameHeader, MAX_RESULT_FRAME_BYTES } from '../../src/contract/channel';
import { decodeResult, encodeResult, resultFrame } from '../../src/contract/result-frame';
import {
  MAX_TABLE_COLUMNS,
  MAX_TABLE_KEY_BYTES,
  TASK_ROUTES,
  type TableChunk,
  type TaskFailure,
  type TaskSuccess,
} from '../../src/contract/task';
import { tableResult } from '../helpers/pipeline-fakes';

const payloadOf = (result: TaskSuccess): Buffer => Buffer.concat(encodeResult(result));
const FAILED: TaskFailure = {
  ok: false,
  error: { code: 'INVALID_ARGUMENT', message: 'TypeError: x is not a function' },
  scriptMs: 1,
  isolateRebuilt: false,
  timedOut: false,
};

function withTable(table: Partial<TableChunk>): TaskSuccess {
  const result = tableResult(7);
  return { ...result, table: { ...(result.table as TableChunk), ...table } };
}

describe('decodeResult', () => {
  it('reads back a table chunk as sent', () => {
    const decoded = decodeResult(payloadOf(tableResult(7, 'object', 'name')));
    assert.ok(decoded.ok);
    assert.deepEqual(decoded.table?.keys, ['name']);
    assert.equal(decoded.table?.rows, 1);
  });

  it(`refuses a chunk with more than ${MAX_TABLE_COLUMNS} names or ${MAX_TABLE_KEY_BYTES} bytes of names`, () => {
    const long = withTable({ keys: ['k'.repeat(MAX_TABLE_KEY_BYTES + 1)] });
    assert.throws(() => decodeResult(payloadOf(long)), /table meta/);
    const wide = withTable({ keys: Array.from({ length: MAX_TABLE_COLUMNS + 1 }, (_, i) => `c${i}`), rows: 0 });
    assert.throws(
      () =>
        decodeResult(
          payloadOf({
            ...wide,
            table: { ...(wide.table as TableChunk), cells: new Uint8Array(0), cellEnds: new Uint32Array(0), kinds: new Uint8Array(0) },
          }),
        ),
      /table meta/,
    );
  });

  it('refuses a chunk whose rows claim more cells than the payload holds, before allocating them', () => {
    assert.throws(() => decodeResult(payloadOf(withTable({ rows: 0xffffffff }))), /do not add up/);
  });

  it('refuses replies that run past the payload', () => {
    const payload = payloadOf(tableResult(7));
    payload.writeUInt32LE(0xfffffff0, 26); // the first reply's length
    assert.throws(() => decodeResult(payload), /shorter than its replies/);
  });

  it('reads back the console lines of a result with a table, and refuses a console that runs past the payload', () => {
    const console = { lines: [{ level: 'info', text: 'row 1 { a: 1 }' } as const, { level: 'warn', text: 'é' } as const], dropped: 3 };
    const decoded = decodeResult(payloadOf({ ...tableResult(7), console }));
    assert.ok(decoded.ok);
    assert.deepEqual(decoded.console, console);
    assert.deepEqual(decoded.table?.keys, tableResult(7).table?.keys);
    const payload = payloadOf({ ...tableResult(7), console });
    payload.writeUInt32LE(payload.length, 22); // the console's length
    assert.throws(() => decodeResult(payload), /shorter than its console/);
  });

  it('reads back where the task ran, beside the nondeterministic flag, for a success and a failure', () => {
    for (const route of TASK_ROUTES) {
      for (const nondeterministic of [false, true]) {
        const decoded = decodeResult(payloadOf({ ...tableResult(7), nondeterministic, route }));
        assert.ok(decoded.ok);
        assert.equal(decoded.route, route);
        assert.equal(decoded.nondeterministic, nondeterministic);
      }
      const failure = decodeResult(Buffer.concat(encodeResult({ ...FAILED, route })));
      assert.equal(failure.route, route);
    }
    assert.equal('route' in decodeResult(payloadOf(tableResult(7))), false, 'a result no thread made names no route');
    assert.equal('route' in decodeResult(Buffer.concat(encodeResult(FAILED))), false);
  });

  it('refuses a failure that names an unknown route', () => {
    const payload = Buffer.concat([Uint8Array.of(0), Buffer.from(JSON.stringify({ ...FAILED, ok: undefined, route: 'elsewhere' }))]);
    assert.throws(() => decodeResult(payload), /unknown route/);
  });

  it('refuses a console line of an unknown level', () => {
    const console = { lines: [{ level: 'fatal' as 'info', text: 'x' }], dropped: 0 };
    assert.throws(() => decodeResult(payloadOf({ ...tableResult(1), console })), /malformed console line/);
  });

  it('refuses cell ends that do not match the cells', () => {
    assert.throws(() => decodeResult(payloadOf(withTable({ cellEnds: Uint32Array.of(3) }))), /cell ends/);
  });

  it('a payload that is a view of a larger read is copied: the result holds its own bytes only', () => {
    const payload = payloadOf(tableResult(7));
    const read = Buffer.alloc(65_536);
    payload.copy(read, 1_000);
    const decoded = decodeResult(read.subarray(1_000, 1_000 + payload.length));
    assert.ok(decoded.ok);
    assert.equal(decoded.replies[0]?.buffer.byteLength, payload.length);
    assert.equal(decoded.table?.cells.buffer.byteLength, payload.length);
  });
});

describe('RESULT frames and their bound', () => {
  it(`a sandbox sends a failure instead of a result larger than ${MAX_RESULT_FRAME_BYTES} bytes`, () => {
    const reply = new Uint8Array(1024 * 1024);
    const huge: TaskSuccess = { ...tableResult(1), table: null, replies: Array.from({ length: 257 }, () => reply) };
    const pieces = resultFrame(9, huge);
    const frame = Buffer.concat(pieces);
    assert.ok(frame.length < 1_000);
    const decoded = decodeResult(frame.subarray(9));
    assert.equal(decoded.ok, false);
    assert.ok(!decoded.ok && decoded.error.code === 'RESOURCE_EXHAUSTED');
    assert.match(decoded.ok ? '' : decoded.error.message, /more than a sandbox sends back at once/);
  });

  it('reads back a failure as sent', () => {
    const failure = {
      ok: false,
      error: { code: 'INVALID_ARGUMENT', message: 'row 3: x is not defined' },
      scriptMs: 2.5,
      isolateRebuilt: true,
      timedOut: false,
    } as const;
    assert.deepEqual(decodeResult(Buffer.concat(encodeResult(failure))), failure);
    const logged = { ...failure, console: { lines: [{ level: 'info' as const, text: 'x was 3' }], dropped: 0 } };
    assert.deepEqual(decodeResult(Buffer.concat(encodeResult(logged))), logged);
  });

  const failure = { error: { code: 'INTERNAL', message: 'm' }, scriptMs: 1, isolateRebuilt: false, timedOut: false };
  for (const [name, value, refusal] of [
    ['an error code outside the closed set', { ...failure, error: { code: 'OK', message: 'm' } }, /known error code/],
    ['an error message that is not text', { ...failure, error: { code: 'INTERNAL', message: { text: 'm' } } }, /known error code/],
    ['no error', { ...failure, error: null }, /known error code/],
    ['a script time that is not a number', { ...failure, scriptMs: '1' }, /script time/],
    ['a negative script time', { ...failure, scriptMs: -1 }, /script time of -1 ms/],
    ['flags that are not booleans', { ...failure, timedOut: 1 }, /flags/],
    ['a list', [failure], /not an object/],
  ] as const) {
    it(`refuses a failure with ${name}`, () => {
      assert.throws(() => decodeResult(Buffer.concat([Buffer.of(0), Buffer.from(JSON.stringify(value))])), refusal);
    });
  }

  it('refuses a failure that is not JSON, and an outcome byte that is neither failure nor success', () => {
    assert.throws(() => decodeResult(Buffer.from('\0{')), SyntaxError);
    assert.throws(() => decodeResult(Buffer.of(2)), /unknown outcome 2/);
  });

  it('refuses a success whose script time is not a finite, non-negative number', () => {
    for (const scriptMs of [Number.NaN, Number.POSITIVE_INFINITY, -1]) {
      assert.throws(() => decodeResult(payloadOf({ ...tableResult(7), scriptMs })), /script time/);
    }
  });

  it('the front refuses a RESULT header claiming more, or a frame of an unknown kind, before allocating it', () => {
    const reader = new FrameReader(() => undefined);
    assert.throws(() => reader.push(frameHeader(Frame.RESULT, 1, MAX_RESULT_FRAME_BYTES + 1)), /larger than any the other side sends/);
    const unknown = frameHeader(Frame.RESULT, 1, 10);
    unknown.writeUInt8(99, 4);
    assert.throws(() => new FrameReader(() => undefined).push(unknown), /unknown channel frame kind 99/);
  });
});
