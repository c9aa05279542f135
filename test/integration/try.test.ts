/**
 * `npm run try`: the built command, run as a child process the way a user runs it, prints what the
 * plugin answers for each kind of script function, a CSV file's columns, a table result, and a
 * failing script (the gRPC status name and the plugin's message, exit code 1).
 */
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { NODE_FLAGS, type Ran, runCommand, TRY_JS } from '../helpers/try-command';

const BIN_JS = path.join(__dirname, '..', '..', 'src', 'cli', 'bin.js');
const REPO = path.join(__dirname, '..', '..', '..');

/** Only PATH from the test's environment: no SSE_* variable of the runner changes the limits. */
function run(args: readonly string[], entry: readonly string[] = [...NODE_FLAGS, TRY_JS], cwd?: string): Promise<Ran> {
  return runCommand(process.execPath, [...entry, ...args], cwd);
}

async function ok(args: readonly string[]): Promise<string> {
  const ran = await run(args);
  assert.equal(ran.code, 0, ran.stderr);
  return ran.stdout;
}

const table = (...lines: string[]): string => `${lines.join('\n')}\n`;

describe('npm run try', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sse-try-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('per row (ScriptEval): one result per value', async () => {
    assert.equal(await ok(['args[0] * 2', '1', '2', '3']), table('ScriptEval', '----------', '2', '4', '6'));
  });

  test('aggregation (ScriptAggr): one result over every row', async () => {
    assert.equal(
      await ok(['--fn', 'ScriptAggr', 'args[0].reduce((a, b) => a + b, 0)', '1', '2', '3']),
      table('ScriptAggr', '----------', '6'),
    );
  });

  test('text (ScriptEvalStr, ScriptAggrStr)', async () => {
    assert.equal(
      await ok(['--fn', 'ScriptEvalStr', 'args[0].toUpperCase()', 'ada', 'grace']),
      table('ScriptEvalStr', '-------------', 'ADA', 'GRACE'),
    );
    assert.equal(await ok(['--fn', 'ScriptAggrStr', 'args[0].join(", ")', 'a', 'b']), table('ScriptAggrStr', '-------------', 'a, b'));
  });

  test('…Ex type letters: text, number and dual parameters from --arg lists', async () => {
    const padded = await ok([
      '--fn',
      'ScriptEvalExStr',
      '--types',
      'SN',
      'args[0].padStart(args[1], "0")',
      '--arg',
      '12,345',
      '--arg',
      '5,6',
    ]);
    assert.equal(padded, table('ScriptEvalExStr', '---------------', '00012', '000345'));
    const dual = await ok([
      '--fn',
      'ScriptAggrEx',
      '--types',
      'D',
      'args[0].filter((d) => d.str !== "x").length + args[0][0].num',
      '7',
      'x',
      '8',
    ]);
    assert.equal(dual, table('ScriptAggrEx', '------------', '9'));
  });

  test('a CSV file: the columns named by --columns, bound by name; an empty number cell is a Qlik null', async () => {
    const file = path.join(dir, 'sales.csv');
    writeFileSync(file, 'Name,Sales,Cost\nAda,100,40\n"Lovelace, A",50,\n');
    assert.equal(await ok(['--csv', file, '--columns', 'Sales,Cost', 'Sales - Cost']), table('ScriptEval', '----------', '60', '-'));
    const csv = await ok([
      '--csv',
      file,
      '--fn',
      'ScriptEvalExStr',
      '--types',
      'SN',
      '--columns',
      'Name,Sales',
      '--format',
      'csv', // biome-ignore lint/suspicious/noTemplateCurlyInString: the script is a template literal, run in the sandbox
      '`${Name}: ${Sales}`',
    ]);
    assert.equal(csv, 'ScriptEvalExStr\r\nAda: 100\r\n"Lovelace, A: 50"\r\n');
  });

  test('a table return (LOAD … EXTENSION): objects become named columns, arrays Field1…N', async () => {
    const objects = await ok(['({ id: args[0], square: args[0] * args[0], name: "n" + args[0] })', '1', '2']);
    assert.equal(
      objects,
      table(
        'id       square   name',
        'NUMERIC  NUMERIC  STRING',
        '-------  -------  ------',
        '1        1        n1',
        '2        4        n2',
      ),
    );
    const csv = await run(['--format', 'csv', '[args[0], "x,y"]', '1']);
    assert.deepEqual(csv, { code: 0, stdout: 'Field1,Field2\r\n1,"x,y"\r\n', stderr: 'note: field types Field1 NUMERIC, Field2 STRING\n' });
  });

  test('a script error: the gRPC status name and the plugin message, exit code 1', async () => {
    const thrown = await run(['throw new Error("boom " + args[0])', '1']);
    assert.deepEqual(thrown, { code: 1, stdout: '', stderr: 'INVALID_ARGUMENT: Error: boom 1 (at row 0)\n' });
    const looping = await run(['--timeout-ms', '200', 'for (;;) {}', '1']);
    assert.equal(looping.code, 1);
    assert.match(looping.stderr, /^DEADLINE_EXCEEDED: .*200 ms \(SSE_SCRIPT_TIMEOUT_MS\)/);
  });

  test('a mistake on the command line: what is accepted, exit code 2, nothing started', async () => {
    const ran = await run(['--fn', 'ScriptEvalEx', 'args[0]', '1']);
    assert.equal(ran.code, 2);
    assert.match(ran.stderr, /^try: ScriptEvalEx needs --types/);
    const limit = await run(['--memory-mb', '1', 'args[0]', '1']);
    assert.equal(limit.code, 2);
    assert.match(limit.stderr, /^try: --memory-mb \(SSE_MEMORY_LIMIT_MB\)="1" is invalid: expected an integer from 8/);
  });

  test('control characters a script returns or throws are shown escaped, never sent to the terminal', async () => {
    const shown = await ok(['--fn', 'ScriptEvalStr', '"\\u001b[2J" + args[0]', 'x']);
    assert.ok(!shown.includes('\u001b'), JSON.stringify(shown));
    assert.match(shown, /\\u001b\[2Jx/);
    const failed = await run(['(() => { throw new Error("\\u001b]0;title\\u0007boom"); })()', '1']);
    assert.equal(failed.code, 1);
    assert.ok(!failed.stderr.includes('\u001b') && !failed.stderr.includes('\u0007'), JSON.stringify(failed.stderr));
    assert.match(failed.stderr, /boom/);
  });

  test('a --csv that is not a regular file (a device, a pipe) is refused before anything is read', async () => {
    const ran = await run(['--csv', '/dev/zero', 'args[0]']);
    assert.equal(ran.code, 2);
    assert.match(ran.stderr, /--csv \/dev\/zero: not a regular file/);
  });

  test('the package command (npx qlik-sse-js try) starts Node with the flags the sandbox needs', async () => {
    const ran = await run(['try', 'args[0] + 1', '41'], [BIN_JS]);
    assert.deepEqual(ran, { code: 0, stdout: table('ScriptEval', '----------', '42'), stderr: '' });
  });

  test('a plugin function by name (--function, the starter library by default), constants beside the values', async () => {
    assert.equal(await ok(['--function', 'Median', '1', '9', '3']), table('Median', '------', '3'));
    assert.equal(
      await ok(['--function', 'padleft', '7', '42', '--const', '5', '--const', '0']),
      table('PadLeft', '-------', '00007', '00042'),
    );
    const wrong = await run(['--function', 'Percentile', '1', '2']);
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /^try: Percentile\(values number, p number\) takes 2 parameter\(s\), but 1 were given/);
    const unknown = await run(['--function', 'Mediam', '1']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /--function Mediam: .* has no such function; it has .*Median, PadLeft/);
  });

  test('a plugin function from a functions folder of its own (--functions)', async () => {
    const functions = path.join(dir, 'functions');
    mkdirSync(functions, { recursive: true });
    writeFileSync(
      path.join(functions, 'mine.js'),
      "exports.Twice = { kind: 'row', params: { x: 'number' }, returns: 'number', run(x) { return 2 * x; } };\n",
    );
    assert.equal(await ok(['--function', 'Twice', '--functions', functions, '4', '5']), table('Twice', '-----', '8', '10'));
  });

  test("a ';'-separated CSV is sniffed; --group-by gives one aggregation per value, in first-seen order", async () => {
    const file = path.join(dir, 'regions.csv');
    writeFileSync(file, 'Region;Sales;Note\nSouth;5;a\nNorth;10;b\nSouth;7;c\nNorth;30;d\nEast;1;e\n');
    const sums = await ok([
      '--csv',
      file,
      '--columns',
      'Sales',
      '--group-by',
      'Region',
      '--fn',
      'ScriptAggr',
      'Sales.reduce((a, b) => a + b, 0)',
    ]);
    assert.equal(sums, table('Region  ScriptAggr', '------  ----------', 'South   12', 'North   40', 'East    1'));
    const p90 = await ok(['--csv', file, '--columns', 'Sales', '--const', '0.5', '--group-by', 'Region', '--function', 'Percentile']);
    assert.equal(p90, table('Region  Percentile', '------  ----------', 'South   6', 'North   20', 'East    1'));
    const perRow = await run(['--csv', file, '--columns', 'Sales', '--group-by', 'Region', 'Sales']);
    assert.equal(perRow.code, 2);
    assert.match(perRow.stderr, /--group-by is for aggregations/);
  });

  test('--delimiter overrides the sniffing', async () => {
    const file = path.join(dir, 'tie.csv');
    writeFileSync(file, 'a;b,c\n1;2,5\n');
    assert.equal(
      await ok(['--csv', file, '--delimiter', ';', '--fn', 'ScriptEvalStr', 'Object.keys({a, b: args[1]}) + "|" + args[1]']),
      table('ScriptEvalStr', '-------------', 'a,b|2,5'),
    );
  });

  test('a function body without return: a note on stderr beside the (null) result', async () => {
    const ran = await run(['const doubled = args[0] * 2;', '1']);
    assert.deepEqual(ran, {
      code: 0,
      stdout: table('ScriptEval', '----------', '-'),
      stderr: 'note: the script is a function body without a return statement: every row gives a Qlik null\n',
    });
  });

  test('a syntax error names the line and column of the script', async () => {
    const ran = await run(['args[0] *', '1']);
    assert.equal(ran.code, 1);
    assert.match(ran.stderr, /^INVALID_ARGUMENT: SyntaxError: Unexpected end of the script at line 1, column 10 /);
  });

  /**
   * In a copy of the checkout without dist, as after a clone or a pull: the runs started together
   * share one build (the others wait for it), a run on a current dist builds nothing, and a changed
   * source is built again. Before, each run deleted and rebuilt dist, and the runs broke each other.
   */
  test('npm run try: two runs at once share one build; a current dist is not rebuilt', async () => {
    const copy = mkdtempSync(path.join(tmpdir(), 'sse-try-checkout-'));
    try {
      for (const entry of ['src', 'workers', 'proto', 'scripts', 'tsconfig.json', 'package.json', 'package-lock.json'])
        cpSync(path.join(REPO, entry), path.join(copy, entry), { recursive: true });
      symlinkSync(path.join(REPO, 'node_modules'), path.join(copy, 'node_modules'));
      const npmTry = (value: string): Promise<Ran> => runCommand('npm', ['run', '-s', 'try', '--', 'args[0] + 1', value], copy);
      const both = await Promise.all([npmTry('1'), npmTry('2')]);
      assert.deepEqual(
        both.map((ran) => [ran.code, ran.stdout]),
        [
          [0, table('ScriptEval', '----------', '2')],
          [0, table('ScriptEval', '----------', '3')],
        ],
        both.map((ran) => ran.stderr).join('\n'),
      );
      assert.equal(both.filter((ran) => /building dist/.test(ran.stderr)).length, 1, 'one of the two built, the other waited');
      const stamp = path.join(copy, 'dist', '.build-stamp');
      const builtMs = statSync(stamp).mtimeMs;
      const again = await npmTry('41');
      assert.deepEqual(again, { code: 0, stdout: table('ScriptEval', '----------', '42'), stderr: '' });
      assert.equal(statSync(stamp).mtimeMs, builtMs, 'a current dist is not built again');
      const edited = path.join(copy, 'src', 'cli', 'output.ts');
      utimesSync(edited, new Date(builtMs + 60_000), new Date(builtMs + 60_000));
      const afterEdit = await npmTry('1');
      assert.equal(afterEdit.code, 0, afterEdit.stderr);
      assert.match(afterEdit.stderr, /building dist/);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });
});
