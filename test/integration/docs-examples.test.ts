/**
 * Every example in the authors' manual (docs/scripts.md) and in the README runs, and gives what the
 * test expects: the code blocks and the `code` spans of the prose are read from the markdown here, so an edit that breaks an example
 * fails the suite, and a new or changed example fails until its expected result is written below.
 *
 * A Qlik expression (`JS.ScriptEval('…', Sum(Sales), Cost)`) is called as Qlik calls it, over the
 * real plugin: the function's name gives the types, a field gives its values from SAMPLE (one row
 * each), a literal is a constant, `Sum(F) as A` binds the name A. A chart's ScriptEval is a TENSOR
 * call, a regular LOAD's a SCALAR one, `LOAD … EXTENSION` a TENSOR call that may return a table; an
 * aggregation runs over all of SAMPLE's rows. Plugin functions come from the starter library. A
 * `npm run try` line runs the try command itself, in a folder that holds the sales.csv it names.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { callInput } from '../../src/cli/input';
import { resultTable } from '../../src/cli/output';
import { SCRIPT_FUNCTION_NAMES } from '../../src/functions/signature';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { type CallResult, DataType, FunctionType } from '../helpers/qlik-client';
import { runTry } from '../helpers/try-command';

const REPO = path.join(__dirname, '..', '..', '..');
/** The library manual comes with the scripts' libraries: read when it is there. */
const MANUALS = ['docs/scripts.md', 'docs/libraries.md', 'README.md'].filter((manual) => existsSync(path.join(REPO, manual)));

/** The fields the examples name, three rows; '' is a Qlik null. */
const SAMPLE: Readonly<Record<string, readonly string[]>> = {
  Sales: ['100', '50', ''],
  Cost: ['40', '60', '10'],
  Country: ['SE', 'DE', 'SE'],
  Name: ['ada', 'grace', 'Linus'],
  IsoText: ['2024-01-15', '2024-03-01', ''],
  Day: ['45306', '45352', '45292'],
  Code: ['12', '345', '7'],
  Amount: ['100', '7', ''],
  Email: ['Ada@Example.COM', '', 'nobody'],
  Payload: ['{"customer":{"name":"Ada","tags":["new","vip"]},"items":[{"qty":3}]}', '{}', 'not json'],
  Factor: ['2', '3', '1'],
  CustomerNo: ['4711', '12', ''],
  Subject: ['Order 12 shipped', 'order confirmation', 'Re: order'],
  Ref: ['SE-1234', 'none', 'DE-7'],
  CrmName: ['Ada ', 'Grace H', 'linus'],
  id: ['1', '2', '3'],
  line: ['a,b', 'c', ''],
  ProductName: ['Crème Brûlée, 2 pers.', 'Tea', ''],
  OrderDate: ['24.12.2023', '01.02.2024 18:00', '31.02.2024'],
  Month: ['1', '2', '3'],
  MonthNo: ['1', '2', '3'],
  DeDate: ['15.01.2024', '01.03.2024', 'kein Datum'],
  CustomerId: ['C-1001', 'C-1002', ''],
};

/** Where a manual means another field by the same name: docs/libraries.md's OrderDate is a Qlik date. */
const SAMPLE_OF_MANUAL: Readonly<Record<string, Readonly<Record<string, readonly string[]>>>> = {
  'docs/libraries.md': { OrderDate: ['45306', '45352', '45292'] },
};

type Cells = readonly (string | null)[];
type Expected = Cells | { readonly columns: readonly string[]; readonly rows: readonly Cells[] };

/** Each example's result over SAMPLE, by its exact text in the manual. */
const EXPECTED: Readonly<Record<string, Expected>> = {
  "JS.ScriptEval('args[0] * 2 + args[1]', Sum(Sales), Sum(Cost))": ['240', '160', null],
  "JS.ScriptEval('Sales > 0 ? (Sales - Cost) / Sales : null', Sum(Sales) as Sales, Sum(Cost) as Cost)": ['0.6', '-0.2', null],
  'JS.ScriptAggrStr(\'args[0].join(", ")\', Country)': ['SE, DE, SE'],
  "JS.ScriptAggr('const v = args[0].filter(x => !Number.isNaN(x)).sort((a, b) => a - b); return v[Math.floor(v.length / 2)];', Sales)": [
    '100',
  ],
  "JS.ScriptEvalExStr('SN', 'args[0].padStart(args[1], \"0\")', Code, 8)": ['00000012', '00000345', '00000007'],
  "JS.ScriptEvalStr('args[0].toUpperCase()', Name)": ['ADA', 'GRACE', 'LINUS'],
  // The mistake the manual shows: text through ScriptEval arrives as NaN.
  "wrong: JS.ScriptEval('new Date(args[0])', IsoText)": [null, null, null],
  "JS.ScriptEvalEx('S', 'new Date(args[0])', IsoText)": ['45306', '45352', null],
  "JS.ScriptEval('args[0] - 25569', Day)": ['19737', '19783', '19723'],
  "JS.ScriptEval('({ id: args[0], square: args[0] * args[0] })', T{id})": {
    columns: ['id', 'square'],
    rows: [
      ['1', '1'],
      ['2', '4'],
      ['3', '9'],
    ],
  },
  'JS.ScriptEvalStr(\'args[0].split(",")\', Csv{line})': {
    columns: ['Field1', 'Field2'],
    rows: [
      ['a', 'b'],
      ['c', ''],
      ['', ''],
    ],
  },
  "JS.ScriptEvalStr('args[0] + 1', Amount)": ['1001', '71', '1'],
  "JS.ScriptEvalExStr('N', 'args[0] + 1', Amount)": ['101', '8', 'NaN'],
  "JS.ScriptEvalStr('args[0] + ''!''', Name)": ['ada!', 'grace!', 'Linus!'],
  'JS.ScriptEvalStr(\'(args[0].match(/@(.+)$/)?.[1] ?? "").toLowerCase()\', Email)': ['example.com', '', ''],
  "JS.ScriptAggr('const v = args[0].filter((x) => !Number.isNaN(x)); return v.length ? Math.max(...v) : null;', Sales)": ['100'],
  "JS.ScriptEvalStr('try { return JSON.parse(args[0]).customer.name; } catch { return null; }', Payload)": ['Ada', '', ''],
  "JS.ScriptAggr('const v = args[0].filter((x) => !Number.isNaN(x)).sort((a, b) => a - b); return v.length ? v[Math.ceil(0.9 * v.length) - 1] : null;', Sales)":
    ['100'],
  "JS.ScriptAggr('const p = args[0].map((x, i) => [x, args[1][i]]).filter(([x, y]) => !Number.isNaN(x) && !Number.isNaN(y)); const n = p.length, mx = p.reduce((s, [x]) => s + x, 0) / n, my = p.reduce((s, [, y]) => s + y, 0) / n; return p.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0) / p.reduce((s, [x]) => s + (x - mx) ** 2, 0);', Month, Sales)":
    ['-50'],
  "JS.ScriptEvalExStr('N', 'new Date((args[0] - 25569) * 864e5).toISOString().slice(0, 10)', Day)": [
    '2024-01-15',
    '2024-03-01',
    '2024-01-01',
  ],
  'JS.ScriptEvalExStr(\'N\', \'new Intl.DateTimeFormat("de-DE", { dateStyle: "long", timeZone: "UTC" }).format(new Date((args[0] - 25569) * 864e5))\', Day)':
    ['15. Januar 2024', '1. März 2024', '1. Januar 2024'],
  // docs/libraries.md (with the scripts' libraries)
  'JS.ScriptAggr(\'require("simple-statistics").median(args[0].filter((v) => !Number.isNaN(v)))\', Sales)': ['75'],
  'JS.ScriptAggr(\'require("simple-statistics").quantile(args[0].filter((v) => !Number.isNaN(v)), 0.9)\', Sales)': ['95'],
  'JS.ScriptAggr(\'require("simple-statistics").linearRegression(args[0].map((month, i) => [month, args[1][i]]).filter(([x, y]) => !Number.isNaN(x) && !Number.isNaN(y))).m\', MonthNo, Sales)':
    ['-50'],
  'JS.ScriptEvalExStr(\'N\', \'require("date-fns").format(require("qlik").toDate(args[0]), "yyyy-MM")\', OrderDate)': [
    '2024-01',
    '2024-03',
    '2024-01',
  ],
  'JS.ScriptEvalExStr(\'N\', \'require("date-fns").format(require("qlik").toDate(args[0]), "EEEE")\', OrderDate)': [
    'Monday',
    'Friday',
    'Monday',
  ],
  'JS.ScriptEvalEx(\'S\', \'require("date-fns").parse(args[0], "dd.MM.yyyy", new Date(0))\', DeDate)': ['45306', '45352', null],
  'JS.ScriptEvalStr(\'require("qlik").sha256(args[0])\', CustomerId)': [
    '2121eef3fb0f77f7ee182c4e832169bdad7881ebb4b3300fdb180564324b0d5c',
    'caec15696559583906278b9c771d4ef14090f01be0b4a2134d0f3007dc679916',
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  ],
  'JS.Slugify(ProductName)': ['creme-brulee-2-pers', 'tea', ''],
  'JS.Median(Sales)': ['75'],
  // A text with more than the format (a time) is no date of that format.
  "JS.ParseDate(OrderDate, 'DD.MM.YYYY')": ['45284', null, null],
  "JS.ParseDate(OrderDate, 'DD.MM.YYYY hh:mm')": [null, '45323.75', null],
  "JS.ScriptEvalEx('SN', 'args[0].length * args[1]', Name, Factor)": ['6', '15', '5'],
  "JS.ScriptEval('args[0] * 2', Source{Sales})": ['200', '100', null],
  "JS.ScriptEval('Sales - Cost', Sales, Cost)": ['60', '-10', null],
  "JS.ScriptEval('(Sales - Cost) / Sales', Sum(Sales) as Sales, Sum(Cost) as Cost)": ['0.6', '-0.2', null],
  'JS.Slugify(Name)': ['ada', 'grace', 'linus'],
  "JS.Slugify('Crème Brûlée, 2 pers.')": ['creme-brulee-2-pers', 'creme-brulee-2-pers', 'creme-brulee-2-pers'],
  "JS.PadLeft(CustomerNo, 8, '0')": ['00004711', '00000012', '00000000'],
  "JS.PadRight(Code, 6, '.')": ['12....', '345...', '7.....'],
  "JS.RegexMatch(Subject, '^order\\s')": ['1', '1', '0'],
  "JS.RegexExtract(Ref, '([A-Z]{2})-(\\d+)', 2)": ['1234', '', '7'],
  'JS.Levenshtein(Name, CrmName)': ['2', '3', '1'],
  'JS.FuzzyMatch(Name, CrmName)': ['1', '0.7142857142857143', '1'],
  "JS.JsonField(Payload, 'customer.tags[1]')": ['vip', '', ''],
  "JS.JsonNumber(Payload, 'items[0].qty')": ['3', null, null],
  'JS.Percentile(Sales, 0.9)': ['95'],
};

const lines = (...rows: string[]): string => `${rows.join('\n')}\n`;

/** Each `npm run try` line's output, by the line as written (its comment cut off). */
const TRY_OUTPUT: Readonly<Record<string, string>> = {
  "npm run try -- 'args[0] * 2' 1 2 3": lines('ScriptEval', '----------', '2', '4', '6'),
  "npm run try -- --fn ScriptAggr 'args[0].reduce((a, b) => a + b, 0)' 1 2 3": lines('ScriptAggr', '----------', '6'),
  "npm run try -- --fn ScriptEvalStr 'args[0].toUpperCase()' ada grace": lines('ScriptEvalStr', '-------------', 'ADA', 'GRACE'),
  "npm run try -- --fn ScriptEvalEx --types S 'new Date(args[0])' 2024-03-01": lines('ScriptEvalEx', '------------', '45352'),
  'npm run try -- --fn ScriptEvalExStr --types SN \'args[0].padStart(args[1], "0")\' --arg 12,345 --arg 5,6': lines(
    'ScriptEvalExStr',
    '---------------',
    '00012',
    '000345',
  ),
  "npm run try -- --csv sales.csv --columns Sales,Cost 'Sales - Cost'": lines('ScriptEval', '----------', '60', '-10', '20', '50'),
  "npm run try -- --csv sales.csv --columns Sales --group-by Region --fn ScriptAggr 'Math.max(...Sales)'": lines(
    'Region  ScriptAggr',
    '------  ----------',
    'North   100',
    'South   70',
  ),
  'npm run try -- --function Median --csv sales.csv --columns Sales --group-by Region': lines(
    'Region  Median',
    '------  ------',
    'North   65',
    'South   60',
  ),
  'npm run try -- --function Percentile --csv sales.csv --columns Sales --const 0.9': lines('Percentile', '----------', '91'),
  "npm run try -- '({ id: args[0], square: args[0] * args[0] })' 1 2 3": lines(
    'id       square',
    'NUMERIC  NUMERIC',
    '-------  -------',
    '1        1',
    '2        4',
    '3        9',
  ),
  "npm run try -- --format csv '[args[0], args[0] * 2]' 1 2": 'Field1,Field2\r\n1,2\r\n2,4\r\n',
  "npx qlik-sse-js try 'args[0] + 1' 41": lines('ScriptEval', '----------', '42'),
};

/** The fenced code blocks of a markdown text, as their lines. */
function codeBlocks(markdown: string): string[][] {
  return [...markdown.matchAll(/^```[^\n]*\n([\s\S]*?)^```$/gm)].map((match) => (match[1] ?? '').split('\n'));
}

/** Every `JS.Name(…)` in a line, with its arguments as written (Qlik's '' quoting and brackets respected). */
function qlikCalls(line: string): { text: string; name: string; args: string[] }[] {
  const calls: { text: string; name: string; args: string[] }[] = [];
  for (const match of line.matchAll(/\bJS\.(\w+)\(/g)) {
    const args: string[] = [];
    let depth = 0;
    let current = '';
    let at = (match.index ?? 0) + match[0].length;
    for (; at < line.length; at++) {
      const c = line[at] ?? '';
      if (c === "'") {
        const end = closingQuote(line, at);
        current += line.slice(at, end + 1);
        at = end;
      } else if (c === ',' && depth === 0) {
        args.push(current.trim());
        current = '';
      } else if (c === ')' && depth === 0) break;
      else {
        if (c === '(' || c === '{') depth++;
        if (c === ')' || c === '}') depth--;
        current += c;
      }
    }
    args.push(current.trim());
    calls.push({ text: line.slice(match.index, at + 1), name: match[1] ?? '', args });
  }
  return calls;
}

function closingQuote(line: string, open: number): number {
  for (let at = open + 1; at < line.length; at++) {
    if (line[at] !== "'") continue;
    if (line[at + 1] === "'") at++;
    else return at;
  }
  throw new Error(`an unclosed Qlik string in ${line}`);
}

function qlikString(literal: string): string {
  assert.match(literal, /^'.*'$/, `a Qlik string literal: ${literal}`);
  return literal.slice(1, -1).replace(/''/g, "'");
}

/** A parameter as written: a field (its values and the name Qlik sends) or a constant. */
function parameterOf(arg: string, manual: string): { name: string; values: readonly string[] } {
  const constant = /^'.*'$/.test(arg) ? qlikString(arg) : /^-?\d+(\.\d+)?$/.test(arg) ? arg : undefined;
  if (constant !== undefined) return { name: '', values: SAMPLE['id']?.map(() => constant) ?? [] };
  const found =
    /^(?:Sum|Avg|Only)\((\w+)\)(?:\s+as\s+(\w+))?$/i.exec(arg) ?? /^\w+\{(\w+)()\}$/.exec(arg) ?? /^(\w+)(?:\s+as\s+(\w+))?$/i.exec(arg);
  const field = found?.[1] ?? '';
  const values = SAMPLE_OF_MANUAL[manual]?.[field] ?? SAMPLE[field];
  assert.ok(values, `the example's parameter ${arg} names no field of SAMPLE: add it`);
  const aggregated = /^\w+\(/.test(arg);
  return { name: found?.[2] || (aggregated ? '' : field), values };
}

interface ExampleCall {
  readonly name: string;
  readonly functionType: FunctionType;
  readonly returnType: DataType;
  readonly script: string | undefined;
  readonly params: { name: string; values: readonly string[] }[];
  readonly types: DataType[] | undefined;
}

const LETTER_TYPES: Readonly<Record<string, DataType>> = { N: DataType.NUMERIC, S: DataType.STRING, D: DataType.DUAL };

function exampleCall(manual: string, line: string, call: { name: string; args: string[] }): ExampleCall {
  const parameter = (arg: string) => parameterOf(arg, manual);
  if (!(SCRIPT_FUNCTION_NAMES as readonly string[]).includes(call.name))
    return {
      name: call.name,
      functionType: FunctionType.SCALAR,
      returnType: DataType.NUMERIC,
      script: undefined,
      params: call.args.map(parameter),
      types: undefined,
    };
  const ex = call.name.includes('Ex');
  const [types, script, ...rest] = ex ? call.args : ['', ...call.args];
  const returnType = call.name.endsWith('Str') ? DataType.STRING : DataType.NUMERIC;
  const params = rest.map(parameter);
  const letters = ex ? qlikString(types ?? '') : undefined;
  return {
    name: call.name,
    functionType: call.name.startsWith('ScriptAggr')
      ? FunctionType.AGGREGATION
      : /\bLOAD\b/.test(line) && !/\bEXTENSION\b/.test(line)
        ? FunctionType.SCALAR
        : FunctionType.TENSOR,
    returnType,
    script: qlikString(script ?? ''),
    params,
    types: letters
      ? [...letters].map((letter) => LETTER_TYPES[letter] ?? DataType.NUMERIC)
      : params.map(() => (returnType === DataType.STRING ? DataType.STRING : DataType.NUMERIC)),
  };
}

/**
 * The Qlik calls of the manuals' code blocks. A line under a `// wrong…` comment shows a mistake on
 * purpose: its text is prefixed with `wrong: ` so that the same call written as advice cannot pass
 * on the mistake's expected result.
 */
function examples(): { manual: string; line: string; text: string; call: ExampleCall }[] {
  return MANUALS.flatMap((manual) => {
    const markdown = readFileSync(path.join(REPO, manual), 'utf8');
    const inBlocks = codeBlocks(markdown).flatMap((lines) =>
      lines.map((line, i) => ({ line, wrong: /^\s*\/\/\s*wrong\b/i.test(lines[i - 1] ?? '') })),
    );
    const all = [...inBlocks, ...inlineCode(markdown).map((line) => ({ line, wrong: false }))];
    return all.flatMap(({ line, wrong }) =>
      qlikCalls(line).map((call) => ({
        manual,
        line,
        text: `${wrong ? 'wrong: ' : ''}${call.text}`,
        call: exampleCall(manual, line, call),
      })),
    );
  });
}

/** The `code` spans of the prose (outside the code blocks) that hold a complete Qlik call; `…` marks a placeholder. */
function inlineCode(markdown: string): string[] {
  const prose = markdown.replace(/^```[^\n]*\n[\s\S]*?^```$/gm, '');
  return [...prose.matchAll(/`([^`\n]*\bJS\.[^`\n]*)`/g)].map((match) => match[1] ?? '').filter((span) => !span.includes('…'));
}

function tryLines(): { manual: string; line: string; args: string[] }[] {
  return MANUALS.flatMap((manual) =>
    codeBlocks(readFileSync(path.join(REPO, manual), 'utf8')).flatMap((lines) =>
      lines.flatMap((raw) => {
        const found = /^(?:npm run try --|npx qlik-sse-js try)\s+(.*)$/.exec(raw);
        if (!found) return [];
        const words = shellWords(found[1] ?? '');
        return [{ manual, line: raw.replace(/\s+#.*$/, ''), args: words }];
      }),
    ),
  );
}

/** Words as a POSIX shell splits them for these lines: single and double quotes, a # comment. */
function shellWords(text: string): string[] {
  const words: string[] = [];
  for (const match of text.matchAll(/'([^']*)'|"((?:[^"\\]|\\.)*)"|(#.*$)|(\S+)/g)) {
    if (match[3] !== undefined) break;
    words.push(match[1] ?? match[2]?.replace(/\\(.)/g, '$1') ?? match[4] ?? '');
  }
  return words;
}

function cellsOf(result: CallResult, call: ExampleCall): Expected {
  const table = resultTable(result, call.name, call.returnType);
  if (table.fieldTypes !== undefined) return { columns: table.columns, rows: table.rows };
  return table.rows.map((row) => row[0] ?? null);
}

describe('the examples of the manuals run and give what they show', () => {
  let t: TestPlugin;
  let functionIds: Map<string, { id: number; types: DataType[]; functionType: FunctionType; returnType: DataType }>;
  before(async () => {
    t = await startTestPlugin({ SSE_FUNCTIONS_DIR: path.join(REPO, 'examples', 'functions') });
    const capabilities = await t.client.getCapabilities();
    const definitions = capabilities['functions'] as {
      name: string;
      functionId: number;
      functionType: FunctionType;
      returnType: DataType;
      params: { dataType: DataType }[];
    }[];
    functionIds = new Map(
      definitions.map((d) => [
        d.name,
        { id: d.functionId, types: d.params.map((p) => p.dataType), functionType: d.functionType, returnType: d.returnType },
      ]),
    );
  });
  after(async () => t.stop());

  for (const example of examples()) {
    it(`${example.manual}: ${example.text}`, async () => {
      const result = await callExample(example.call);
      assert.equal(result.code, 0, `${example.text}: ${result.details}`);
      const cells = cellsOf(result, { ...example.call, returnType: returnTypeOf(example.call) });
      const expected = EXPECTED[example.text];
      assert.ok(
        expected,
        `no expected result for this example of ${example.manual}: write it in EXPECTED (it gives ${JSON.stringify(cells)})`,
      );
      assert.deepEqual(cells, expected);
    });
  }

  function returnTypeOf(call: ExampleCall): DataType {
    return call.script === undefined ? (functionIds.get(call.name)?.returnType ?? DataType.NUMERIC) : call.returnType;
  }

  async function callExample(call: ExampleCall): Promise<CallResult> {
    const columns = call.params.map((param, i) => ({ name: param.name, label: `parameter ${i}`, values: param.values }));
    if (call.script === undefined) {
      const fn = functionIds.get(call.name);
      assert.ok(fn, `the starter library has no function ${call.name}`);
      const input = callInput(columns, fn.types);
      return t.client.executeFunction({ functionId: fn.id, bundles: [input.rows] });
    }
    const input = callInput(columns, call.types ?? []);
    return t.client.evaluate({
      script: call.script,
      functionType: call.functionType,
      returnType: call.returnType,
      params: input.params,
      bundles: [input.rows],
    });
  }
});

describe('the npm run try lines of the manuals run and print what is expected', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sse-docs-try-'));
  writeFileSync(path.join(dir, 'sales.csv'), 'Region,Sales,Cost\nNorth,100,40\nSouth,50,60\nNorth,30,10\nSouth,70,20\n');
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const example of tryLines()) {
    it(`${example.manual}: ${example.line}`, async () => {
      const expected = TRY_OUTPUT[example.line];
      const ran = await runTry(example.args, dir);
      assert.equal(ran.code, 0, ran.stderr);
      assert.ok(expected !== undefined, `no expected output for this line of ${example.manual}: write it in TRY_OUTPUT:\n${ran.stdout}`);
      assert.equal(ran.stdout, expected);
    });
  }
});
