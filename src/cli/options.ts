/**
 * The command line of `npm run try` (node:util parseArgs), checked once before the plugin starts so
 * that a typing mistake is answered with what is accepted, not with a gRPC error. The script
 * function is named as in Qlik (`ScriptEvalStr`, `ScriptAggrEx`, …): the name decides the function
 * type, the return type and, for the non-Ex functions, the parameter types, exactly as Qlik's
 * analytic connection does (sse-protocol.md 3.2). A plugin function (`--function NAME`) is looked up
 * in the plugin's capabilities once it runs (src/cli/plugin-function.ts): its types are the file's.
 * The limits map to the plugin's own variables.
 */
import { parseArgs } from 'node:util';

import { DataType, FunctionType } from '../contract/task';
import { SCRIPT_FUNCTION_NAMES } from '../functions/signature';
import { csvField, type OutputFormat } from './output';
import { parseTarget, type Target, TargetError } from './target';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Where the parameter values come from. */
export type ValueSource =
  | { readonly kind: 'lists'; readonly lists: readonly ParameterList[] }
  | {
      readonly kind: 'csv';
      readonly file: string;
      readonly columns: readonly string[] | undefined;
      /** undefined: sniffed from the header line (src/cli/input.ts). */
      readonly delimiter: string | undefined;
      /** Constant parameters after the columns, the same value on every row. */
      readonly constants: readonly string[];
    };

/** One parameter typed on the command line: a comma-separated list, or one value for every row. */
export type ParameterList = { readonly kind: 'list'; readonly text: string } | { readonly kind: 'const'; readonly value: string };

/** A script, as in JS.ScriptEval('<script>', …): its Qlik function decides the types. */
export interface ScriptCallee {
  readonly kind: 'script';
  readonly functionName: string;
  readonly functionType: FunctionType;
  readonly returnType: DataType;
  /** The …Ex type letters, or undefined: every parameter then has the type the function implies. */
  readonly typeLetters: string | undefined;
  readonly script: string;
}

/** A plugin function by name, from the administrator's folder (or the starter library). */
export interface FunctionCallee {
  readonly kind: 'function';
  readonly name: string;
  readonly functionsDir: string;
}

export interface TryOptions {
  /** What is called: a script, or a plugin function. */
  readonly callee: ScriptCallee | FunctionCallee;
  readonly values: ValueSource;
  /** A CSV column: one aggregation call per distinct value, in first-seen order, as a chart's dimension. */
  readonly groupBy: string | undefined;
  readonly format: OutputFormat;
  /** As the plugin's variables spell them: SSE_SCRIPT_TIMEOUT_MS, SSE_MEMORY_LIMIT_MB. */
  readonly limits: Readonly<Record<string, string>>;
  /** --target: call that running plugin instead of starting one here (src/cli/target.ts). */
  readonly target: Target | undefined;
}

export const USAGE = `Runs a script as the plugin runs it for Qlik, over values from the command line or a CSV file.

usage: npm run try -- [options] <script> [value ...]
       npm run try -- --function <name> [options] [value ...]
       npx qlik-sse-js try [options] <script> [value ...]

  <script>            JavaScript, as in JS.ScriptEval('<script>', …): an expression or a function body
  [value ...]         the values of one parameter, one row each (args[0])
  --fn <name>         ${SCRIPT_FUNCTION_NAMES.join(', ')} (default ScriptEval)
  --types <letters>   for the …Ex functions, one letter per parameter: N number, S text, D dual (e.g. NS)
  --function <name>   call a plugin function instead of a script (JS.Median(Sales)); no <script> then
  --functions <dir>   its folder of function files (default SSE_FUNCTIONS_DIR, else the starter examples/functions)
  --arg <v1,v2,...>   the values of one more parameter, comma-separated (CSV quoting: "a,b"); repeat per parameter
  --const <value>     one more parameter with this value on every row (JS.Percentile(Sales, 0.9)); repeatable
  --csv <file>        parameters from a CSV file whose first line names the columns
  --columns <A,B>     the CSV columns to pass, in that order (default: all); their names are bound in the script
  --delimiter <c>     the CSV's delimiter (default: sniffed from the first line among , ; tab |)
  --group-by <col>    for an aggregation: one call per value of this CSV column, as a chart's dimension
  --format <f>        table (default) or csv
  --timeout-ms <n>    the script time limit of the call (SSE_SCRIPT_TIMEOUT_MS, default 5000)
  --memory-mb <n>     the sandbox heap limit (SSE_MEMORY_LIMIT_MB, default 128)
  --target <host:port>  call that running plugin as Qlik does (GetCapabilities, then the script) instead
                      of starting one here: the check to run from the engine's machine
  --tls-dir <folder>  with --target: mutual TLS with the engine's files (root_cert.pem,
                      sse_client_cert.pem, sse_client_key.pem)
  -h, --help          this text

Exit code 0 with the result rows on stdout; 1 when the call fails (the gRPC status and the plugin's
message on stderr); 2 for a mistake on the command line.`;

const OPTIONS = {
  fn: { type: 'string' },
  types: { type: 'string' },
  function: { type: 'string' },
  functions: { type: 'string' },
  arg: { type: 'string', multiple: true },
  const: { type: 'string', multiple: true },
  csv: { type: 'string' },
  columns: { type: 'string' },
  delimiter: { type: 'string' },
  'group-by': { type: 'string' },
  format: { type: 'string', default: 'table' },
  'timeout-ms': { type: 'string' },
  'memory-mb': { type: 'string' },
  target: { type: 'string' },
  'tls-dir': { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/**
 * undefined when help was asked for. functionsDir is where --function looks when --functions is not
 * given (SSE_FUNCTIONS_DIR, else the starter library): the caller reads the environment.
 */
export function parseTryArgs(argv: readonly string[], functionsDir: string): TryOptions | undefined {
  const { values, positionals, tokens } = parseStrict(argv);
  if (values.help) return undefined;
  const fromFunction = values.function !== undefined;
  // A plugin function takes no script: every positional is a value.
  const script = fromFunction ? undefined : positionals[0];
  const listed = fromFunction ? positionals : positionals.slice(1);
  const callee = fromFunction
    ? functionCallee(values.function ?? '', values.functions ?? functionsDir, values.fn, values.types)
    : scriptCallee(script, values.fn ?? 'ScriptEval', values.types, values.functions);
  const groupBy = values['group-by'];
  const source = valueSource(listed, orderedLists(tokens), values.csv, values.columns, values.delimiter);
  if (groupBy !== undefined && source.kind !== 'csv') throw new UsageError('--group-by names a column of the --csv file');
  return {
    callee,
    values: source,
    groupBy,
    format: outputFormat(values.format),
    limits: limits(values['timeout-ms'], values['memory-mb']),
    target: target(values.target, values['tls-dir'], values['timeout-ms'] ?? values['memory-mb']),
  };
}

function scriptCallee(script: string | undefined, fn: string, types: string | undefined, functions: string | undefined): ScriptCallee {
  if (script === undefined || script.trim() === '') throw new UsageError('a script is required (or --function NAME)');
  if (functions !== undefined) throw new UsageError('--functions is for --function NAME');
  const shape = scriptFunction(fn);
  return { kind: 'script', ...shape, typeLetters: typeLetters(shape.functionName, types), script };
}

function functionCallee(name: string, functionsDir: string, fn: string | undefined, types: string | undefined): FunctionCallee {
  if (fn !== undefined || types !== undefined)
    throw new UsageError('--fn and --types are for scripts: a plugin function has the types its file declares');
  if (name.trim() === '') throw new UsageError('--function needs the name of a plugin function');
  return { kind: 'function', name, functionsDir };
}

/** --arg and --const in the order typed: each is the next parameter. */
function orderedLists(tokens: ParsedTokens): ParameterList[] {
  const lists: ParameterList[] = [];
  for (const token of tokens) {
    if (token.kind !== 'option' || token.value === undefined) continue;
    if (token.name === 'arg') lists.push({ kind: 'list', text: token.value });
    if (token.name === 'const') lists.push({ kind: 'const', value: token.value });
  }
  return lists;
}

function target(address: string | undefined, tlsDir: string | undefined, limit: string | undefined): Target | undefined {
  if (address === undefined) {
    if (tlsDir !== undefined) throw new UsageError('--tls-dir is for --target');
    return undefined;
  }
  if (limit !== undefined) throw new UsageError("--timeout-ms and --memory-mb are the running plugin's settings: not with --target");
  try {
    return parseTarget(address, tlsDir);
  } catch (error) {
    if (error instanceof TargetError) throw new UsageError(error.message);
    throw error;
  }
}

type Parsed = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true; tokens: true }>>;
type ParsedTokens = Parsed['tokens'];

function parseStrict(argv: readonly string[]): Parsed {
  try {
    return parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true, tokens: true });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

function scriptFunction(name: string): Pick<ScriptCallee, 'functionName' | 'functionType' | 'returnType'> {
  if (!(SCRIPT_FUNCTION_NAMES as readonly string[]).includes(name))
    throw new UsageError(`--fn ${name}: expected one of ${SCRIPT_FUNCTION_NAMES.join(', ')}`);
  return {
    functionName: name,
    // ScriptEval* as in a chart (TENSOR): one value per row, and a table when every row returns an object or array.
    functionType: name.startsWith('ScriptAggr') ? FunctionType.AGGREGATION : FunctionType.TENSOR,
    returnType: name.endsWith('Str') ? DataType.STRING : DataType.NUMERIC,
  };
}

function typeLetters(functionName: string, types: string | undefined): string | undefined {
  const ex = functionName.includes('Ex');
  if (!ex && types !== undefined)
    throw new UsageError(
      `--types is for the …Ex functions; ${functionName} passes every parameter as ${functionName.endsWith('Str') ? 'text' : 'a number'}`,
    );
  if (ex && types === undefined) throw new UsageError(`${functionName} needs --types, one letter per parameter (N number, S text, D dual)`);
  if (types !== undefined && !/^[NSD]+$/i.test(types))
    throw new UsageError(`--types ${types}: expected the letters N, S and D only, one per parameter`);
  return types?.toUpperCase();
}

function valueSource(
  listed: readonly string[],
  lists: readonly ParameterList[],
  csv: string | undefined,
  columns: string | undefined,
  delimiter: string | undefined,
): ValueSource {
  if (delimiter !== undefined && csv === undefined) throw new UsageError('--delimiter is for --csv');
  if (csv !== undefined) {
    if (listed.length > 0 || lists.some((list) => list.kind === 'list'))
      throw new UsageError('--csv takes the parameters from the file: give no values and no --arg with it (--const adds a constant)');
    return {
      kind: 'csv',
      file: csv,
      columns: columns?.split(',').map((name) => name.trim()),
      delimiter: delimiter === undefined ? undefined : csvDelimiter(delimiter),
      constants: lists.flatMap((list) => (list.kind === 'const' ? [list.value] : [])),
    };
  }
  if (columns !== undefined) throw new UsageError('--columns is for --csv');
  // The values after the script are the first parameter; each --arg or --const adds one.
  // Quoted as CSV so that each value may hold any character, commas included.
  const first: ParameterList[] = listed.length > 0 ? [{ kind: 'list', text: listed.map(csvField).join(',') }] : [];
  return { kind: 'lists', lists: [...first, ...lists] };
}

/** One character; `tab` and `\t` are spelt out because a tab is hard to type in a shell. */
function csvDelimiter(text: string): string {
  const delimiter = text === 'tab' || text === '\\t' ? '\t' : text;
  if ([...delimiter].length !== 1 || delimiter === '"' || delimiter === '\n' || delimiter === '\r')
    throw new UsageError(`--delimiter ${JSON.stringify(text)}: expected one character, such as ; or tab`);
  return delimiter;
}

function outputFormat(format: string): OutputFormat {
  if (format === 'table' || format === 'csv') return format;
  throw new UsageError(`--format ${format}: expected table or csv`);
}

function limits(timeoutMs: string | undefined, memoryMb: string | undefined): Record<string, string> {
  return {
    ...(timeoutMs === undefined ? {} : { SSE_SCRIPT_TIMEOUT_MS: timeoutMs }),
    ...(memoryMb === undefined ? {} : { SSE_MEMORY_LIMIT_MB: memoryMb }),
  };
}

/** The plugin's own message names the variable; the user typed the flag. */
export const FLAG_OF_VARIABLE: Readonly<Record<string, string>> = {
  SSE_SCRIPT_TIMEOUT_MS: '--timeout-ms',
  SSE_MEMORY_LIMIT_MB: '--memory-mb',
};
