/**
 * What a client controls never makes a log line long: app and user ids, the peer, a request id, an
 * error message are cut to MAX_LOG_FIELD_CHARS in the one place every line goes through (src/ops/log.ts,
 * pino's formatters.log). A client sending 16 KB ids used to cost 17 KB of log per refused call.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { createLogger, MAX_LOG_FIELD_CHARS } from '../../src/ops/log';
import { startTestPlugin } from '../helpers/plugin';
import { DataType, FunctionType, num, numbers } from '../helpers/qlik-client';

const ID_CHARS = 16_384;
/** A cut field: its first MAX_LOG_FIELD_CHARS characters and a note of how many more there were. */
const CUT_FIELD_CHARS = MAX_LOG_FIELD_CHARS + '…[16128 more chars]'.length;

/** Every string in a parsed line, with its path. */
function strings(value: unknown, path = ''): [string, string][] {
  if (typeof value === 'string') return [[path, value]];
  if (typeof value !== 'object' || value === null) return [];
  return Object.entries(value).flatMap(([key, field]) => strings(field, `${path}.${key}`));
}

describe('log fields a client controls are bounded', () => {
  it(`a call with ${ID_CHARS}-character app and user ids logs lines of bounded fields, answered or refused`, async (ctx) => {
    const text: string[] = [];
    const logger = createLogger('debug', { write: (line: string) => void text.push(line) });
    const t = await startTestPlugin({ SSE_LOG_LEVEL: 'debug', SSE_MAX_SCRIPT_BYTES: '100' }, logger);
    try {
      const common = { appId: 'a'.repeat(ID_CHARS), userId: 'u'.repeat(ID_CHARS), cardinality: 0 };
      const call = {
        functionType: FunctionType.SCALAR,
        returnType: DataType.NUMERIC,
        params: [{ dataType: DataType.NUMERIC }],
        bundles: [[[num(2)]]],
        common,
      };
      const answered = await t.client.evaluate({ ...call, script: 'args[0] * 2' });
      assert.equal(answered.code, grpc.status.OK, answered.details);
      assert.deepEqual(numbers(answered), [4]);
      const refused = await t.client.evaluate({ ...call, script: `args[0] /* ${'x'.repeat(200)} */` });
      assert.equal(refused.code, grpc.status.INVALID_ARGUMENT);
    } finally {
      await t.stop();
    }
    const lines = text.map((line) => JSON.parse(line) as Record<string, unknown>);
    const callLines = lines.filter((line) => typeof line['appId'] === 'string');
    ctx.diagnostic(`${callLines.length} call lines, longest ${Math.max(...text.map((line) => line.length))} bytes`);
    assert.equal(callLines.length, 2, 'one line per call');
    for (const line of callLines) {
      assert.equal(line['appId'], `${'a'.repeat(MAX_LOG_FIELD_CHARS)}…[${ID_CHARS - MAX_LOG_FIELD_CHARS} more chars]`);
      assert.equal(line['userId'], `${'u'.repeat(MAX_LOG_FIELD_CHARS)}…[${ID_CHARS - MAX_LOG_FIELD_CHARS} more chars]`);
    }
    for (const [path, value] of lines.flatMap((line) => strings(line)))
      assert.ok(value.length <= CUT_FIELD_CHARS, `${path} is ${value.length} characters`);
    for (const line of text) assert.ok(line.length < 4 * MAX_LOG_FIELD_CHARS + 2_048, `a line of ${line.length} bytes`);
  });
});
