/**
 * The command line of `npm run try` (node:util parseArgs), checked once before the plugin starts so
 * that a typing mistake is answered with what is accepted, not with a gRPC error. The script
 * function is named as in Qlik (`ScriptEvalStr`, `ScriptAggrEx`, …): the name decides the function
 * type, the return type and, for the non-Ex functions, the parameter types, exactly as Qlik's
 * analytic connection does (sse-protocol.md 3.2). The limits map to the plugin's own variables.
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
  | { readonly kind: 'lists'; readonly lists: readonly string[] }
  | { readonly kind: 'csv'; readonly file: string; readonly columns: readonly string[] | undefined };

export interface TryOptions {
  readonly functionName: string;
  readonly functionType: FunctionType;
  readonly returnType: DataType;
  /** The …Ex type letters, or undefined: every parameter then has the type the function implies. */
  readonly typeLetters: string | undefined;
  readonly script: string;
  readonly values: ValueSource;
  readonly format: OutputFormat;
  /** As the plugin's variables spell them: SSE_SCRIPT_TIMEOUT_MS, SSE_MEMORY_LIMIT_MB. */
  readonly limits: Readonly<Record<string, string>>;
  /** --target: call that running plugin instead of starting one here (src/cli/target.ts). */
  readonly target: Target | undefined;
}

export const USAGE = `Runs a script as the plugin runs it for Qlik, over values from the command line or a CSV file.

usage: npm run try -- [options] <script> [value ...]
       npx qlik-sse-js try [options] <script> [value ...]

  <script>            JavaScript, as in JS.ScriptEval('<script>', …): an expression or a function body
  [value ...]         the values of one parameter, one row each (args[0])
  --fn <name>         ${SCRIPT_FUNCTION_NAMES.join(', ')} (default ScriptEval)
  --types <letters>   for the …Ex functions, one letter per parameter: N number, S text, D dual (e.g. NS)
  --arg <v1,v2,...>   the values of one more parameter, comma-separated (CSV quoting: "a,b"); repeat per parameter
  --csv <file>        parameters from a CSV file whose first line names the columns
  --columns <A,B>     the CSV columns to pass, in that order (default: all); their names are bound in the script
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
  fn: { type: 'string', default: 'ScriptEval' },
  types: { type: 'string' },
  arg: { type: 'string', multiple: true },
  csv: { type: 'string' },
  columns: { type: 'string' },
  format: { type: 'string', default: 'table' },
  'timeout-ms': { type: 'string' },
  'memory-mb': { type: 'string' },
  target: { type: 'string' },
  'tls-dir': { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/** undefined when help was asked for. */
export function parseTryArgs(argv: readonly string[]): TryOptions | undefined {
  const { values, positionals } = parseStrict(argv);
  if (values.help) return undefined;
  const [script, ...listed] = positionals;
  if (script === undefined || script.trim() === '') throw new UsageError('a script is required');
  const fn = scriptFunction(values.fn);
  return {
    ...fn,
    typeLetters: typeLetters(fn.functionName, values.types),
    script,
    values: valueSource(listed, values.arg ?? [], values.csv, values.columns),
    format: outputFormat(values.format),
    limits: limits(values['timeout-ms'], values['memory-mb']),
    target: target(values.target, values['tls-dir'], values['timeout-ms'] ?? values['memory-mb']),
  };
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

function parseStrict(argv: readonly string[]): ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>> {
  try {
    return parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

function scriptFunction(name: string): Pick<TryOptions, 'functionName' | 'functionType' | 'returnType'> {
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
  lists: readonly string[],
  csv: string | undefined,
  columns: string | undefined,
): ValueSource {
  if (csv !== undefined) {
    if (listed.length > 0 || lists.length > 0)
      throw new UsageError('--csv takes the parameters from the file: give no values and no --arg with it');
    return { kind: 'csv', file: csv, columns: columns?.split(',').map((name) => name.trim()) };
  }
  if (columns !== undefined) throw new UsageError('--columns is for --csv');
  // The values after the script are the first parameter; each --arg adds one.
  // Quoted as CSV so that each value may hold any character, commas included.
  return { kind: 'lists', lists: listed.length > 0 ? [listed.map(csvField).join(','), ...lists] : lists };
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
