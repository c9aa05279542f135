/**
 * The plugin function loader on its own: what a file may say, every refusal with its file, line and
 * what to change, stable ids, and the registry's reload and logs. Files are parsed, never run.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { DataType } from '../../src/contract/task';
import { loadFunctionFolder, MAX_FUNCTION_FILES, MAX_FUNCTION_FOLDER_BYTES } from '../../src/functions/load-folder';
import { MAX_NESTING_DEPTH, parseFunctionFile } from '../../src/functions/parse-file';
import { FunctionRegistry } from '../../src/functions/registry';
import { functionId, toPluginFunction } from '../../src/functions/signature';
import { ConfigError } from '../../src/ops/config';
import { createLogger } from '../../src/ops/log';

const GOOD = `// two ways of writing a definition
exports.Slug = {
  kind: 'row',
  params: { text: 'text', width: 'number', d: 'dual' },
  returns: 'text',
  run(text, width, d) { return text.slice(0, width) + d.str; },
};
exports['Sum2'] = { kind: 'aggregation', params: { v: 'number' }, returns: 'number', run: (v) => v.reduce((a, b) => a + b, 0) };
`;

const messages = (text: string): string[] => parseFunctionFile(text, 'f.js').problems.map((p) => `${p.file}:${p.line} ${p.message}`);

describe('parseFunctionFile', () => {
  it('reads the signature from literal syntax, in parameter order, and cuts run out of the file', () => {
    const { functions, problems } = parseFunctionFile(GOOD, 'text.js');
    assert.deepEqual(problems, []);
    const [slug, sum] = functions;
    assert.deepEqual(
      { name: slug?.name, kind: slug?.kind, params: slug?.params, returns: slug?.returns, line: slug?.line },
      {
        name: 'Slug',
        kind: 'row',
        returns: 'text',
        line: 2,
        params: [
          { name: 'text', type: 'text' },
          { name: 'width', type: 'number' },
          { name: 'd', type: 'dual' },
        ],
      },
    );
    assert.equal(slug?.runSource, 'function run(text, width, d) { return text.slice(0, width) + d.str; }');
    assert.equal(sum?.runSource, '(v) => v.reduce((a, b) => a + b, 0)');
    assert.equal(sum?.line, 8);
  });

  it("reads module.exports = { Name: { … } } and puts the file's helpers before run", () => {
    const text = `function twice(x) { return 2 * x; }\nconst K = 3;\nmodule.exports = { Six: { kind: 'tensor', params: { x: 'number' }, returns: 'number', run(x) { return twice(x) * K; } } };\n`;
    const [six] = parseFunctionFile(text, 'm.js').functions;
    assert.equal(six?.name, 'Six');
    assert.equal(six?.runSource, 'function run(x) { return twice(x) * K; }');
    assert.match(six?.script.text ?? '', /function twice\(x\)[\s\S]*const K = 3;[\s\S]*case 0: [^\n]*\nfunction run\(x\)/);
  });

  it('builds the ScriptSpec a script call would, with the declared types', () => {
    const [slug, sum] = parseFunctionFile(GOOD, 'text.js').functions.map(toPluginFunction);
    assert.deepEqual(slug?.spec.paramTypes, [DataType.STRING, DataType.NUMERIC, DataType.DUAL]);
    assert.equal(slug?.spec.returnType, DataType.STRING);
    assert.equal(slug?.spec.mode, 'rows');
    assert.equal(slug?.spec.tableAllowed, false);
    assert.equal(slug?.spec.factory, true);
    assert.equal(sum?.spec.mode, 'aggregate');
  });

  it('reports a syntax error with its line, and loads nothing of that file', () => {
    const [problem] = messages(`exports.A = {\n  kind: 'row',\n  params: { x: 'number' ,\n  returns: 'number',\n};\n`);
    assert.match(problem ?? '', /^f\.js:5 syntax error: Unexpected token; the file is not loaded$/);
  });

  it('reports each wrong or missing part with its line and the choices', () => {
    const text = `exports.A = {\n  kind: 'rows',\n  params: { x: 'numeric', y: 'text', Y: 'text' },\n  returns: 'string',\n  run(x) {},\n  extra: 1,\n};\nexports.B = { kind: 'row', params: {}, returns: 'number' };\n`;
    assert.deepEqual(messages(text), [
      'f.js:6 A: unknown key extra: a definition has only kind, params, returns, run',
      "f.js:2 A: kind must be one of 'row', 'tensor', 'aggregation' written as a string literal (got 'rows')",
      "f.js:4 A: returns must be one of 'number', 'text' written as a string literal (got 'string')",
      "f.js:3 A: the type of parameter x must be 'number', 'text', 'dual' (got 'numeric')",
      'f.js:3 A: the parameter Y is declared twice: rename one',
      'f.js:8 B: add run(…) { … }: the JavaScript that computes the result, one parameter per entry of params',
    ]);
  });

  it('refuses invalid names, Qlik script function names, arity mismatches and async run', () => {
    const text = [
      "exports['my-fn'] = { kind: 'row', params: {}, returns: 'number', run() { return 1; } };",
      "exports.scriptevalstr = { kind: 'row', params: {}, returns: 'text', run() { return ''; } };",
      "exports.Two = { kind: 'row', params: { a: 'number', b: 'number' }, returns: 'number', run(a) { return a; } };",
      "exports.Later = { kind: 'row', params: {}, returns: 'number', async run() { return 1; } };",
    ].join('\n');
    const found = messages(text);
    assert.equal(found.length, 4);
    assert.match(found[0] ?? '', /^f\.js:1 my-fn: the function name "my-fn" is invalid: use letters, digits and _/);
    assert.match(found[1] ?? '', /^f\.js:2 scriptevalstr: .* one of Qlik's script functions: choose another name$/);
    assert.match(found[2] ?? '', /^f\.js:3 Two: run takes 1 parameter\(s\) but params declares 2/);
    assert.match(found[3] ?? '', /^f\.js:4 Later: run must not be async/);
  });

  it('keeps the good definitions of a file whose other definitions are refused', () => {
    const text = `exports.Good = { kind: 'row', params: {}, returns: 'number', run() { return 1; } };\nexports.Bad = { kind: 'row', params: {}, returns: 'nope', run() {} };\n`;
    const { functions, problems } = parseFunctionFile(text, 'f.js');
    assert.deepEqual(
      functions.map((f) => f.name),
      ['Good'],
    );
    assert.equal(problems.length, 1);
  });

  it('keeps a file that requires a library; refuses import() and top-level code that would never run', () => {
    const { functions, problems } = parseFunctionFile(
      `const ss = require('simple-statistics');\nexports.A = { kind: 'row', params: {}, returns: 'number', run() { return ss.median([1]); } };`,
      'f.js',
    );
    assert.deepEqual(problems, []);
    assert.deepEqual(
      functions.map((f) => f.name),
      ['A'],
    );
    assert.match(
      messages(`exports.A = { kind: 'row', params: {}, returns: 'text', run() { return import('fs'); } };`)[0] ?? '',
      /^f\.js:1 import\(\) cannot work here: .*sandbox.*; the file is not loaded$/,
    );
    assert.match(
      messages(`console.log('hi');\nexports.A = { kind: 'row', params: {}, returns: 'text', run() { return ''; } };`)[0] ?? '',
      /^f\.js:1 only exports\.Name = \{ … \} definitions .* this expression statement would never run; the file is not loaded$/,
    );
  });
});

describe('the cost of a function file', () => {
  /** A file of `count` small functions after `helperCount` helpers of ~80 bytes each. */
  function generated(helperCount: number, count: number, helperBody = 'x + 1'): string {
    const helpers = Array.from({ length: helperCount }, (_, i) => `function helper${i}(x) { return ${helperBody} + ${i}; } // padding`);
    const fns = Array.from(
      { length: count },
      (_, i) => `exports.F${i} = { kind: 'row', params: { x: 'number' }, returns: 'number', run(x) { return helper0(x) + ${i}; } };`,
    );
    return `${helpers.join('\n')}\n${fns.join('\n')}\n`;
  }

  it("shares one script among a file's functions: its size follows the file's, not helpers × functions", () => {
    const text = generated(400, 2_000);
    const functions = parseFunctionFile(text, 'big.js').functions.map(toPluginFunction);
    assert.equal(functions.length, 2_000);
    const first = functions[0]?.spec.script ?? '';
    assert.ok(functions.every((fn) => fn.spec.script === first));
    assert.deepEqual(
      functions.slice(0, 3).map((fn) => fn.spec.entry),
      [0, 1, 2],
    );
    const distinctScriptChars = new Set(functions.map((fn) => fn.spec.script)).size * first.length;
    assert.ok(distinctScriptChars < 2 * text.length, `${distinctScriptChars} chars of scripts for a file of ${text.length}`);
  });

  it("changes every function's version when a helper changes, and only its own when its run changes", () => {
    const versions = (text: string): string[] => parseFunctionFile(text, 'v.js').functions.map((fn) => toPluginFunction(fn).version);
    const base = versions(generated(2, 3));
    const helperEdited = versions(generated(2, 3, 'x + 2'));
    const runEdited = versions(generated(2, 3).replace('helper0(x) + 1;', 'helper0(x) + 11;'));
    assert.ok(base.every((v, i) => v !== helperEdited[i]));
    assert.deepEqual(
      base.map((v, i) => v === runEdited[i]),
      [true, false, true],
    );
  });

  it('refuses a file nesting expressions 200,000 deep with what is wrong and its line', () => {
    for (const deep of [`a${'.b'.repeat(200_000)}`, `f${'()'.repeat(200_000)}`, `${'('.repeat(200_000)}1${')'.repeat(200_000)}`]) {
      const text = `// deep\nconst x = ${deep};\nexports.A = { kind: 'row', params: {}, returns: 'number', run() { return 1; } };\n`;
      assert.deepEqual(messages(text), [
        `f.js:2 the file nests expressions deeper than ${MAX_NESTING_DEPTH} levels: split the expression or build it in steps; the file is not loaded`,
      ]);
    }
  });

  it('reads a file nesting as deep as the limit allows', () => {
    const text = `const x = [${'['.repeat(MAX_NESTING_DEPTH - 10)}${']'.repeat(MAX_NESTING_DEPTH - 10)}];\nexports.A = { kind: 'row', params: {}, returns: 'number', run() { return x.length; } };\n`;
    assert.deepEqual(messages(text), []);
  });
});

describe('function ids', () => {
  it('are a hash of the name alone: positive int32, case-insensitive, fixed across releases', () => {
    assert.equal(functionId('Slugify'), 674090459);
    assert.equal(functionId('slugify'), functionId('SLUGIFY'));
    for (const name of ['A', 'Median', 'x_1', 'ParseDate']) {
      const id = functionId(name);
      assert.ok(Number.isInteger(id) && id > 0 && id <= 0x7fffffff, `${name}: ${id}`);
    }
  });
});

describe('loadFunctionFolder and FunctionRegistry', () => {
  const dirs: string[] = [];
  after(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));
  const folder = async (files: Record<string, string>): Promise<string> => {
    const dir = await mkdtemp(path.join(tmpdir(), 'sse-functions-'));
    dirs.push(dir);
    for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
    return dir;
  };
  const one = (name: string, value: number): string =>
    `exports.${name} = { kind: 'row', params: {}, returns: 'number', run() { return ${value}; } };\n`;

  it('keeps the first of two functions of the same name (by file name) and names both places', async () => {
    const dir = await folder({ 'b.js': one('Same', 2), 'a.js': one('same', 1), 'notes.txt': 'ignored', 'c.js': 'exports.X = {' });
    const set = await loadFunctionFolder(dir);
    assert.deepEqual(
      set.functions.map((f) => `${f.file}:${f.name}`),
      ['a.js:same'],
    );
    assert.deepEqual(
      set.problems.map((p) => `${p.file}:${p.line}`),
      ['b.js:1', 'c.js:1'],
    );
    assert.match(set.problems[0]?.message ?? '', /already defined at a\.js:1/);
  });

  it('keeps the other files loaded when one nests expressions 200,000 deep', async () => {
    const dir = await folder({ 'a.js': `const x = a${'.b'.repeat(200_000)};\n${one('A', 1)}`, 'b.js': one('B', 2) });
    const set = await loadFunctionFolder(dir);
    assert.deepEqual(
      set.functions.map((f) => f.name),
      ['B'],
    );
    assert.deepEqual(
      set.problems.map((p) => `${p.file}:${p.line} ${p.message}`),
      [
        `a.js:1 the file nests expressions deeper than ${MAX_NESTING_DEPTH} levels: split the expression or build it in steps; the file is not loaded`,
      ],
    );
  });

  it('refuses the files past the bounds of a folder (files, bytes), in name order, naming the limit', async () => {
    const files: Record<string, string> = {};
    for (let i = 0; i <= MAX_FUNCTION_FILES; i++) files[`f${String(i).padStart(4, '0')}.js`] = one(`F${i}`, i);
    const many = await loadFunctionFolder(await folder(files));
    assert.equal(many.functions.length, MAX_FUNCTION_FILES);
    assert.deepEqual(
      many.problems.map((p) => `${p.file} ${p.message}`),
      [
        `f${MAX_FUNCTION_FILES}.js 1 .js files from f${MAX_FUNCTION_FILES}.js on are not read: a functions folder holds at most ${MAX_FUNCTION_FILES} files (MAX_FUNCTION_FILES)`,
      ],
    );
    // Files of a little under 1 MiB (mostly a comment): the folder's bytes run out before the last one.
    const fileBytes = 1_000_000;
    const count = Math.floor(MAX_FUNCTION_FOLDER_BYTES / fileBytes) + 1;
    const big: Record<string, string> = {};
    for (let i = 0; i < count; i++) big[`b${String(i).padStart(2, '0')}.js`] = `${one(`B${i}`, i)}//${'x'.repeat(fileBytes - 100)}\n`;
    const heavy = await loadFunctionFolder(await folder(big));
    assert.equal(heavy.functions.length, count - 1);
    assert.equal(heavy.problems.length, 1);
    assert.match(
      heavy.problems[0]?.message ?? '',
      new RegExp(`pass ${MAX_FUNCTION_FOLDER_BYTES} bytes together \\(MAX_FUNCTION_FOLDER_BYTES\\)`),
    );
    assert.equal(heavy.problems[0]?.file, `b${String(count - 1).padStart(2, '0')}.js`);
  });

  it('a folder with no valid function logs a warning and starts; a missing folder is a configuration error', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger(
      'info',
      new Writable({
        write: (chunk: Buffer, _e, done) => {
          lines.push(JSON.parse(String(chunk)) as Record<string, unknown>);
          done();
        },
      }),
    );
    const registry = await FunctionRegistry.open(await folder({ 'bad.js': 'exports.X = 1;\n' }), logger);
    registry.close();
    assert.deepEqual(registry.definitions(), []);
    assert.ok(lines.some((l) => l['msg'] === 'plugin function refused' && l['file'] === 'bad.js' && l['line'] === 1));
    assert.ok(lines.some((l) => l['msg'] === 'SSE_FUNCTIONS_DIR has no valid plugin function' && l['level'] === 40));
    await assert.rejects(
      FunctionRegistry.open(path.join(tmpdir(), 'no-such-folder-for-sse'), logger),
      (e: unknown) => e instanceof ConfigError && /SSE_FUNCTIONS_DIR/.test(e.message),
    );
  });

  it('reloads when a file changes, keeps the ids of the functions that stay, and logs what changed', { timeout: 20_000 }, async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger(
      'info',
      new Writable({
        write: (chunk: Buffer, _e, done) => {
          lines.push(JSON.parse(String(chunk)) as Record<string, unknown>);
          done();
        },
      }),
    );
    const dir = await folder({ 'a.js': one('Keep', 1) + one('Edit', 1) + one('Drop', 1) });
    const registry = await FunctionRegistry.open(dir, logger);
    try {
      const before = registry.functions;
      const reloaded = registry.nextReload();
      await writeFile(path.join(dir, 'a.js'), one('Keep', 1) + one('Edit', 2) + one('Added', 1));
      await reloaded;
      const after = registry.functions;
      assert.notEqual(after, before);
      assert.deepEqual(
        after.functions.map((f) => [f.name, f.id]),
        [
          ['Keep', functionId('Keep')],
          ['Edit', functionId('Edit')],
          ['Added', functionId('Added')],
        ],
      );
      assert.equal(after.functions[0]?.version, before.functions[0]?.version);
      assert.notEqual(after.functions[1]?.version, before.functions[1]?.version);
      const said = (msg: string, fn: string): boolean => lines.some((l) => l['msg'] === msg && l['function'] === fn);
      assert.ok(
        said('plugin function changed', 'Edit') && said('plugin function removed', 'Drop') && said('plugin function loaded', 'Added'),
      );
      assert.ok(lines.some((l) => typeof l['msg'] === 'string' && l['msg'].includes('reload the analytic connection')));
    } finally {
      registry.close();
    }
  });
});
