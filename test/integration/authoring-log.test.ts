/**
 * A script that is a function body without a return statement gives every row a Qlik null: the
 * plugin says so in its log at debug, with the call's request id, so an administrator helping an
 * author can see why. Real plugin, real sandboxes, the log read as JSON lines.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { createLogger } from '../../src/ops/log';
import { startTestPlugin } from '../helpers/plugin';
import { DataType, num } from '../helpers/qlik-client';

const NO_RETURN = 'the script is a function body without a return statement: every row gives a Qlik null';

describe('a function body without return, in the log', () => {
  it('is logged at debug with the request id, once per call; a script that returns is not', async () => {
    const text: string[] = [];
    const logger = createLogger('debug', { write: (line: string) => void text.push(line) });
    const t = await startTestPlugin({ SSE_LOG_LEVEL: 'debug' }, logger);
    try {
      const call = { params: [{ dataType: DataType.NUMERIC }], bundles: [[[num(2)]]] };
      const silent = await t.client.evaluate({ ...call, script: 'const doubled = args[0] * 2;' });
      assert.equal(silent.code, 0, silent.details);
      assert.equal(silent.rows[0]?.[0]?.numData, Number.NaN, 'a Qlik null');
      const returning = await t.client.evaluate({ ...call, script: 'const doubled = args[0] * 2; return doubled;' });
      assert.equal(returning.rows[0]?.[0]?.numData, 4);
    } finally {
      await t.stop();
    }
    const lines = text.map((line) => JSON.parse(line) as Record<string, unknown>);
    const notes = lines.filter((line) => line['msg'] === NO_RETURN);
    assert.equal(notes.length, 1, 'only the body without return');
    assert.equal(notes[0]?.['level'], 20, 'debug');
    const callLine = lines.find((line) => line['msg'] === 'EvaluateScript' && line['requestId'] === notes[0]?.['requestId']);
    assert.ok(callLine, 'the note carries the request id of its call');
  });
});
