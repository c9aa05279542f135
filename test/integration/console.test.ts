/**
 * A script's console in the plugin log: each line with the call's request id, app id and user id, at
 * `warn` for warn and error and `info` for the rest, formatted as Node's console formats; at most
 * SSE_CONSOLE_LINES lines and SSE_CONSOLE_BYTES bytes a call, then one line with the count dropped. A
 * flood fails nothing, and the lines of a failing script are logged too (they explain the failure).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { createLogger } from '../../src/ops/log';
import { assertServed, describeReport, withBystander } from '../helpers/bystander';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, FunctionType, num, numbers } from '../helpers/qlik-client';
import { evalText, textOf, waitFor } from '../helpers/sandbox-calls';

const PINO_INFO = 30;
const PINO_WARN = 40;

describe('console lines in the log', () => {
  let t: TestPlugin;
  const lines: Record<string, unknown>[] = [];
  const consoleOf = (requestId: unknown): Record<string, unknown>[] =>
    lines.filter((line) => line['source'] === 'console' && line['requestId'] === requestId);
  /** The request id of the call whose log line has this app id (one call per app id below). */
  const requestIdOf = (appId: string): unknown =>
    lines.find((line) => line['appId'] === appId && line['status'] !== undefined)?.['requestId'];

  before(async () => {
    const logger = createLogger('info', { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    t = await startTestPlugin({ SSE_LOG_LEVEL: 'info', SSE_CONSOLE_LINES: '5', SSE_CONSOLE_BYTES: '400' }, logger);
  });
  after(async () => t.stop());

  /** Runs a one-row call as `appId` and returns its console lines once its call line is logged. */
  async function run(script: string, appId: string): Promise<{ code: number; logged: Record<string, unknown>[] }> {
    const result = await evalText(t.client, script, { common: { appId, userId: 'DIR\\ada', cardinality: 1 } });
    await waitFor(`${appId}'s call line`, () => requestIdOf(appId) !== undefined, 10_000);
    return { code: result.code, logged: consoleOf(requestIdOf(appId)) };
  }

  it('writes each line with the ids, formatted as Node does, at info or warn', async () => {
    const script = `{ console.log('row %d of %s:', 3, 'Sales', { region: 'North', values: [1, 2, { deep: { deeper: 1 } }] });
      console.info(new Map([['a', 1]]), [1, 'two'], null, undefined);
      console.debug('%j|%i|%f|%%|%c', { a: 1 }, '42.9', '1.5', 'color: red');
      console.warn('careful');
      console.error(new RangeError('bad value'));
      return 1; }`;
    const { code, logged } = await run(script, 'app-format');
    assert.equal(code, status.OK);
    assert.deepEqual(
      logged.map((line) => [line['level'], line['msg']]),
      [
        [PINO_INFO, "row 3 of Sales: { region: 'North', values: [ 1, 2, { deep: [Object] } ] }"],
        [PINO_INFO, "Map (1) {'a' => 1} [ 1, 'two' ] null undefined"],
        [PINO_INFO, '{"a":1}|42|1.5|%|'],
        [PINO_WARN, 'careful'],
        [PINO_WARN, logged[4]?.['msg']],
      ],
    );
    assert.match(String(logged[4]?.['msg']), /RangeError: bad value/);
    for (const line of logged) {
      assert.equal(line['appId'], 'app-format');
      assert.equal(line['userId'], 'DIR\\ada');
      assert.match(String(line['requestId']), /^[0-9a-f-]{36}$/);
    }
  });

  it('keeps SSE_CONSOLE_LINES lines a call, then one line with the count dropped; the flood fails nothing', async () => {
    const { code, logged } = await run('{ for (let i = 0; i < 100000; i++) console.log("line", i); return 1; }', 'app-flood');
    assert.equal(code, status.OK);
    assert.deepEqual(
      logged.map((line) => line['msg']),
      [
        'line 0',
        'line 1',
        'line 2',
        'line 3',
        'line 4',
        '99995 more console lines dropped: a call keeps 5 lines and 400 bytes (SSE_CONSOLE_LINES, SSE_CONSOLE_BYTES)',
      ],
    );
    assert.equal(logged[5]?.['dropped'], 99_995);
    assert.equal(logged[5]?.['level'], PINO_WARN);
  });

  it('keeps SSE_CONSOLE_BYTES bytes a call: a long line is cut, the rest dropped', async () => {
    const { logged } = await run('{ console.log("é".repeat(1000)); console.log("after"); return 1; }', 'app-bytes');
    assert.deepEqual(
      logged.map((line) => line['msg']),
      // 400 bytes of UTF-8: 198 two-byte characters and the three-byte ellipsis.
      [`${'é'.repeat(198)}…`, '1 more console lines dropped: a call keeps 5 lines and 400 bytes (SSE_CONSOLE_LINES, SSE_CONSOLE_BYTES)'],
    );
  });

  it("a failing script's lines are logged, and the call fails as it would without them", async () => {
    const { code, logged } = await run('{ console.log("x was", args[0]); throw new Error("boom"); }', 'app-fail');
    assert.equal(code, status.INVALID_ARGUMENT);
    assert.deepEqual(
      logged.map((line) => line['msg']),
      ['x was 1'],
    );
  });

  it('an object that cannot be formatted gives a placeholder, never an error', async () => {
    const script = `{ const p = new Proxy({}, { ownKeys() { throw new Error('trap'); }, get() { throw new Error('trap'); } }); console.log(p); return 2; }`;
    const { code, logged } = await run(script, 'app-proxy');
    assert.equal(code, status.OK);
    assert.equal(logged.length, 1);
    assert.equal(logged[0]?.['msg'], '[console: a value could not be formatted: trap]');
  });

  it('a console flood for a second answers right, and another client is answered meanwhile', async (ctx) => {
    const flood =
      '{ const end = Date.now() + 1000; let i = 0; while (Date.now() < end) console.log("flood", i++, { i }); return i > 5 ? 1 : 0; }';
    const { value, report } = await withBystander(t.address, () => run(flood, 'app-flood-bystander'));
    ctx.diagnostic(describeReport(report));
    assert.equal(value.code, status.OK);
    assert.equal(value.logged.length, 6);
    assert.match(String(value.logged[5]?.['msg']), /^\d+ more console lines dropped/);
    assertServed(report);
  });

  it('the lines of every chunk of a call count against one bound', async () => {
    const rows = Array.from({ length: 20_000 }, (_, i) => [num(i)]);
    const result = await t.client.evaluate({
      script: '{ if (args[0] % 1000 === 0) console.log("row", args[0]); return args[0]; }',
      functionType: FunctionType.SCALAR,
      returnType: DataType.NUMERIC,
      params: [{ dataType: DataType.NUMERIC }],
      bundles: [rows.slice(0, 10_000), rows.slice(10_000)],
      common: { appId: 'app-chunks', userId: 'u', cardinality: 20_000 },
    });
    assert.equal(result.code, status.OK, result.details);
    assert.equal(numbers(result).length, 20_000);
    await waitFor('the call line', () => requestIdOf('app-chunks') !== undefined, 10_000);
    const logged = consoleOf(requestIdOf('app-chunks'));
    assert.equal(logged.length, 6);
    assert.equal(logged[5]?.['dropped'], 15);
    assert.equal(await textOf(t.client, '1'), '1');
  });
});
