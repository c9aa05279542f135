/**
 * Plugin functions end to end: the real plugin in locked-down mode (SSE_ALLOW_SCRIPT=false) with a
 * functions folder, called by the real gRPC client through GetCapabilities and ExecuteFunction. The
 * folder is a copy of test/fixtures/functions (every kind, type and refusal) and of the starter
 * library in examples/functions/; the reload tests edit it while the plugin runs.
 */
import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { functionId } from '../../src/functions/signature';
import { decodeMessage, messages } from '../../src/grpc/proto';
import { createLogger } from '../../src/ops/log';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { type CallResult, DataType, type Dual, dual, FunctionType, num, numbers, str, strings } from '../helpers/qlik-client';

const REPO = path.join(__dirname, '..', '..', '..');
let t: TestPlugin;
let dir: string;
const logLines: Record<string, unknown>[] = [];

before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'sse-plugin-functions-'));
  await cp(path.join(REPO, 'examples', 'functions'), dir, { recursive: true });
  await cp(path.join(REPO, 'test', 'fixtures', 'functions'), dir, { recursive: true });
  const sink = new Writable({
    write: (chunk: Buffer, _e, done) => {
      logLines.push(
        ...String(chunk)
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as Record<string, unknown>),
      );
      done();
    },
  });
  const env = {
    SSE_FUNCTIONS_DIR: dir,
    SSE_ALLOW_SCRIPT: 'false',
    SSE_SCRIPT_TIMEOUT_MS: '1000',
    SSE_METRICS_PORT: '0',
    SSE_METRICS_HOST: '127.0.0.1',
    SSE_LOG_LEVEL: 'info',
  };
  t = await startTestPlugin(env, createLogger('info', sink));
});
after(async () => {
  await t.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Calls a function by name, with the id Qlik would have read from GetCapabilities. */
function call(name: string, rows: readonly (readonly Dual[])[], bundles?: readonly (readonly (readonly Dual[])[])[]): Promise<CallResult> {
  return t.client.executeFunction({ functionId: functionId(name), bundles: bundles ?? [rows] });
}

async function definitions(): Promise<Map<string, Record<string, unknown>>> {
  const caps = await t.client.getCapabilities();
  return new Map((caps['functions'] as Record<string, unknown>[]).map((f) => [String(f['name']), f]));
}

/** Waits (without a time assertion) until the plugin has picked up a change to the folder. */
async function until(condition: () => Promise<boolean>): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.fail('the plugin did not pick up the change to its functions folder');
}

describe('GetCapabilities', () => {
  it('lists every valid function with its Qlik signature and id, and keeps allowScript as configured', async () => {
    const caps = await t.client.getCapabilities();
    assert.equal(caps['allowScript'], false);
    const defs = await definitions();
    assert.deepEqual(defs.get('PadLeft'), {
      name: 'PadLeft',
      functionType: FunctionType.SCALAR,
      returnType: DataType.STRING,
      params: [
        { name: 'text', dataType: DataType.STRING },
        { name: 'width', dataType: DataType.NUMERIC },
        { name: 'fill', dataType: DataType.STRING },
      ],
      functionId: functionId('PadLeft'),
    });
    assert.equal(defs.get('Median')?.['functionType'], FunctionType.AGGREGATION);
    assert.equal(defs.get('Twice')?.['functionType'], FunctionType.TENSOR);
    assert.deepEqual(defs.get('Describe')?.['params'], [{ name: 'd', dataType: DataType.DUAL }]);
    for (const name of [
      'Slugify',
      'PadRight',
      'RegexMatch',
      'RegexExtract',
      'Levenshtein',
      'FuzzyMatch',
      'ParseDate',
      'JsonField',
      'JsonNumber',
      'Percentile',
      'SplitName',
      'Answer',
      'Concat',
      'HostProbe',
      'GoodOne',
    ]) {
      assert.ok(defs.has(name), name);
    }
  });

  it('leaves out refused functions and files, and logs each with its file and line', async () => {
    const defs = await definitions();
    for (const name of ['Broken', 'BadReturn', 'Bad-Name']) assert.ok(!defs.has(name), name);
    const refused = logLines.filter((l) => l['msg'] === 'plugin function refused').map((l) => `${String(l['file'])}:${String(l['line'])}`);
    assert.deepEqual(refused.sort(), ['broken.js:6', 'mistyped.js:11', 'mistyped.js:15'].sort());
    const badReturn = logLines.find((l) => l['file'] === 'mistyped.js' && l['line'] === 11);
    assert.match(String(badReturn?.['problem']), /BadReturn: returns must be one of 'number', 'text'/);
  });
});

describe('ExecuteFunction by kind and type', () => {
  it('row (SCALAR): one result per row, in order; number parameters take Qlik nulls as NaN', async () => {
    const r = await call('PadLeft', [
      [str('42'), num(5), str('0')],
      [str('7'), num(3), str('')],
      [str('x'), num(NaN), str('0')],
    ]);
    assert.equal(r.code, status.OK, r.details);
    assert.deepEqual(strings(r), ['00042', '  7', 'x']);
  });

  it('tensor: once per row over several bundles; a table-shaped result comes back as a table', async () => {
    const r = await call(
      'Twice',
      [],
      [
        [[num(1)], [num(2)]],
        [[num(NaN)], [num(-4)]],
      ],
    );
    assert.deepEqual(numbers(r), [2, 4, NaN, -8]);
    const table = await call('SplitName', [[str('Ada Lovelace')], [str('Alan Turing')]]);
    assert.equal(table.code, status.OK, table.details);
    assert.deepEqual(
      table.rows.map((row) => row.map((d) => d.strData)),
      [
        ['Ada', 'Lovelace'],
        ['Alan', 'Turing'],
      ],
    );
    const description = decodeMessage(messages.TableDescription, table.initialMetadata?.get('qlik-tabledescription-bin')[0] as Buffer);
    assert.deepEqual(
      (description['fields'] as { name: string }[]).map((f) => f.name),
      ['first', 'last'],
    );
  });

  it('aggregation: once over every row of every bundle, one result', async () => {
    const r = await call('Concat', [], [[[str('a')], [str('')]], [[str('c')]]]);
    assert.deepEqual(strings(r), ['a||c']);
  });

  it('dual parameters arrive as { num, str }; a function without parameters runs once', async () => {
    assert.deepEqual(strings(await call('Describe', [[dual(10, 'ten')], [dual(NaN, 'n/a')]])), ['ten=10', 'n/a=NaN']);
    assert.deepEqual(numbers(await call('Answer', [])), [42]);
  });

  it('nothing of one call survives into the next: a per-call counter starts again', async () => {
    const rows = [[num(0)], [num(0)], [num(0)]];
    assert.deepEqual(numbers(await call('RowNumber', rows)), [1, 2, 3]);
    assert.deepEqual(numbers(await call('RowNumber', rows)), [1, 2, 3]);
  });

  it('a function reading Math.random answers with qlik-cache: no-store, a deterministic one without', async () => {
    const noisy = await call('Noise', [[num(1)]]);
    assert.deepEqual(numbers(noisy), [1]);
    assert.deepEqual(noisy.trailers?.get('qlik-cache'), ['no-store']);
    assert.deepEqual((await call('Twice', [[num(1)]])).trailers?.get('qlik-cache'), []);
  });

  it('metrics count the calls by function name', async () => {
    const text = await (await fetch(`http://127.0.0.1:${String(t.plugin.metricsPort)}/metrics`)).text();
    assert.match(text, /sse_calls_total\{function="PadLeft",status="OK"\} [1-9]/);
  });
});

describe('ExecuteFunction errors', () => {
  it('a function that throws fails the call with its error and the row', async () => {
    const r = await call('Fails', [[num(1)], [num(5)]]);
    assert.equal(r.code, status.INVALID_ARGUMENT);
    assert.match(r.details, /^RangeError: too big: 5 \(at row 1\)$/);
  });

  it('an unknown functionId is INVALID_ARGUMENT naming it; a call without the function header too', async () => {
    const r = await t.client.executeFunction({ functionId: 123456, bundles: [[[num(1)]]] });
    assert.equal(r.code, status.INVALID_ARGUMENT);
    assert.match(r.details, /unknown functionId 123456/);
    const refusedName = await call('BadReturn', [[num(1)]]);
    assert.match(refusedName.details, new RegExp(`unknown functionId ${functionId('BadReturn')}`));
    const none = await t.client.executeFunction({ functionId: 0, functionHeaderBytes: null, bundles: [] });
    assert.equal(none.code, status.INVALID_ARGUMENT);
    assert.match(none.details, /no qlik-functionrequestheader-bin header/);
  });

  it('function code has no host: no process or module, not even through a constructor; require gives only libraries', async () => {
    assert.deepEqual(strings(await call('HostProbe', [])), ['function,undefined,undefined,undefined,error']);
    const fs = await call('ReadFile', [[str('/etc/passwd')]]);
    assert.equal(fs.code, status.INVALID_ARGUMENT);
    assert.match(fs.details, /^Error: require\('fs'\): .*available: simple-statistics, date-fns, d3-array, qlik \(at row 0\)$/);
  });

  it('a function file may require a library at its top and use it in its functions', async () => {
    const r = await call('MedianOfList', [[str('3,1,2')], [str('10,2,4,8')]]);
    assert.equal(r.code, status.OK, r.details);
    assert.deepEqual(numbers(r), [2, 6]);
  });

  it('a function that loops for ever gets DEADLINE_EXCEEDED, and the plugin answers the next call', async () => {
    const r = await call('Forever', [[num(1)]]);
    assert.equal(r.code, status.DEADLINE_EXCEEDED);
    assert.match(r.details, /1000 ms \(SSE_SCRIPT_TIMEOUT_MS\)/);
    assert.deepEqual(numbers(await call('GoodOne', [[num(1)]])), [2]);
  });

  it('locked-down mode: scripts are refused while the functions run', async () => {
    const r = await t.client.evaluate({ script: 'args[0]', params: [{ dataType: DataType.NUMERIC }], bundles: [[[num(1)]]] });
    assert.equal(r.code, status.PERMISSION_DENIED);
    assert.deepEqual(numbers(await call('Twice', [[num(21)]])), [42]);
  });
});

describe('the starter library (examples/functions/)', () => {
  it('Slugify, PadLeft, PadRight', async () => {
    assert.deepEqual(strings(await call('Slugify', [[str('Crème Brûlée, 2 pers.')], [str('  Hello  World!  ')], [str('')]])), [
      'creme-brulee-2-pers',
      'hello-world',
      '',
    ]);
    assert.deepEqual(strings(await call('PadRight', [[str('ab'), num(4), str('.')]])), ['ab..']);
  });

  it('RegexMatch and RegexExtract', async () => {
    assert.deepEqual(
      numbers(
        await call('RegexMatch', [
          [str('Order SE-1234'), str('^order\\s')],
          [str('Invoice'), str('^order\\s')],
        ]),
      ),
      [1, 0],
    );
    const extract = await call('RegexExtract', [
      [str('Order SE-1234'), str('([A-Z]{2})-(\\d+)'), num(2)],
      [str('none'), str('(\\d+)'), num(1)],
      [str('SE-9'), str('[A-Z]+-\\d'), num(NaN)],
    ]);
    assert.deepEqual(strings(extract), ['1234', '', 'SE-9']);
  });

  it('Levenshtein and FuzzyMatch', async () => {
    assert.deepEqual(
      numbers(
        await call('Levenshtein', [
          [str('kitten'), str('sitting')],
          [str(''), str('abc')],
          [str('same'), str('same')],
        ]),
      ),
      [3, 3, 0],
    );
    assert.deepEqual(
      numbers(
        await call('FuzzyMatch', [
          [str('Stockholm '), str('stockholm')],
          [str('abcd'), str('abce')],
          [str(''), str('')],
        ]),
      ),
      [1, 0.75, 1],
    );
  });

  it('functions of one file called in turn by the same app and user each run their own code', async () => {
    const pair = [str('kitten'), str('sitting')];
    const answers: number[] = [];
    for (const name of ['Levenshtein', 'FuzzyMatch', 'Levenshtein', 'FuzzyMatch']) answers.push(...numbers(await call(name, [pair])));
    assert.deepEqual(
      answers.map((n) => Math.round(n * 1000) / 1000),
      [3, 0.571, 3, 0.571],
    );
  });

  it('ParseDate gives Qlik serial dates for a format, null when the text does not fit', async () => {
    const r = await call('ParseDate', [
      [str('24.12.2023'), str('DD.MM.YYYY')],
      [str('2023-12-24 18:00'), str('YYYY-MM-DD hh:mm')],
      [str('Mar 5, 24'), str('MMM D, YY')],
      [str('31.02.2024'), str('DD.MM.YYYY')],
      [str('yesterday'), str('DD.MM.YYYY')],
    ]);
    assert.deepEqual(numbers(r), [45284, 45284.75, 45356, NaN, NaN]);
  });

  it('JsonField and JsonNumber read a path out of a text column of JSON', async () => {
    const doc = str('{"customer":{"name":"Ada","tags":["vip","eu"]},"total":"12.5","items":[{"qty":3}]}');
    const fields = await call('JsonField', [
      [doc, str('customer.name')],
      [doc, str('customer.tags[1]')],
      [doc, str('customer.tags')],
      [doc, str('missing.path')],
      [str('not json'), str('a')],
    ]);
    assert.deepEqual(strings(fields), ['Ada', 'eu', '["vip","eu"]', '', '']);
    assert.deepEqual(
      numbers(
        await call('JsonNumber', [
          [doc, str('items[0].qty')],
          [doc, str('total')],
          [doc, str('customer.name')],
        ]),
      ),
      [3, 12.5, NaN],
    );
  });

  it('Median and Percentile over all rows, Qlik nulls left out', async () => {
    assert.deepEqual(
      numbers(
        await call(
          'Median',
          [],
          [
            [[num(5)], [num(1)], [num(NaN)]],
            [[num(3)], [num(100)]],
          ],
        ),
      ),
      [4],
    );
    assert.deepEqual(
      numbers(
        await call('Percentile', [
          [num(10), num(0.9)],
          [num(20), num(0.9)],
          [num(30), num(0.9)],
          [num(40), num(0.9)],
          [num(50), num(0.9)],
        ]),
      ),
      [46],
    );
    assert.deepEqual(numbers(await call('Median', [[num(NaN)]])), [NaN]);
  });
});

describe('hot reload', () => {
  const version = (v: string): string =>
    `exports.Version = { kind: 'row', params: { x: 'number' }, returns: 'text', run(x) { return '${v}'; } };\n`;
  const answersWith = async (v: string): Promise<boolean> => strings(await call('Version', [[num(0)]]))[0] === v;

  it('a call in flight finishes on the version it started with; new calls get the new one', async () => {
    await writeFile(path.join(dir, 'version.js'), version('v1'));
    await until(() => answersWith('v1'));
    const open = t.client.openFunctionCall({ functionId: functionId('Version') });
    open.send([[num(0)]]);
    await writeFile(path.join(dir, 'version.js'), version('v2'));
    await until(() => answersWith('v2'));
    open.send([[num(0)]]);
    const r = await open.end();
    assert.equal(r.code, status.OK, r.details);
    assert.deepEqual(strings(r), ['v1', 'v1']);
  });

  it('adding, removing or editing functions never changes the ids of the others', async () => {
    const before = await definitions();
    await writeFile(path.join(dir, 'added.js'), `exports.Added = { kind: 'row', params: {}, returns: 'number', run() { return 7; } };\n`);
    await unlink(path.join(dir, 'json.js'));
    await writeFile(path.join(dir, 'kinds.js'), (await readFile(path.join(dir, 'kinds.js'), 'utf8')).replace('x * 2', 'x * 3'));
    await until(async () => {
      const defs = await definitions();
      return defs.has('Added') && !defs.has('JsonField') && numbers(await call('Twice', [[num(1)]]))[0] === 3;
    });
    const after = await definitions();
    for (const [name, def] of after) {
      if (before.has(name)) assert.equal(def['functionId'], before.get(name)?.['functionId'], name);
    }
    assert.equal(after.get('Added')?.['functionId'], functionId('Added'));
    assert.deepEqual(numbers(await call('Added', [])), [7]);
    assert.match((await call('JsonField', [[str('{}'), str('a')]])).details, /unknown functionId/);
    assert.ok(logLines.some((l) => l['msg'] === 'plugin function removed' && l['function'] === 'JsonField'));
  });

  it('a folder replaced whole (rm -rf, then a new one) is watched again: its functions take effect', async () => {
    await writeFile(path.join(dir, 'version.js'), version('before'));
    await until(() => answersWith('before'));
    const files = await readdir(dir);
    const saved = await Promise.all(files.map(async (name) => [name, await readFile(path.join(dir, name), 'utf8')] as const));
    await rm(dir, { recursive: true, force: true });
    // Meanwhile the functions loaded before keep answering.
    assert.equal(await answersWith('before'), true);
    await mkdir(dir);
    for (const [name, text] of saved) await writeFile(path.join(dir, name), name === 'version.js' ? version('after') : text);
    await until(() => answersWith('after'));
    // And the new folder is watched: a later edit takes effect too.
    await writeFile(path.join(dir, 'version.js'), version('later'));
    await until(() => answersWith('later'));
  });
});
