/**
 * What a plugin function is once its file has been read: its Qlik signature (name, kind, typed
 * parameters, return type), a stable id, where it was defined, and the script text the sandbox runs.
 *
 * The id is derived from the function's name alone (a hash into the positive int32 range), so adding,
 * removing or editing one function never changes another's id, across reloads and restarts: Qlik
 * keeps the ids it read from GetCapabilities and sends them back in every ExecuteFunction call.
 *
 * The functions of one file share one script text (fileScript): the file's helpers, then a selector
 * that makes the per-row function of entry n (ScriptSpec.factory and .entry). The sandbox evaluates it
 * once per call context, so `run` is created once per call, never per row, and the text is the same
 * for every call of every function of the file, so each sandbox compiles it once (workers/thread/sandbox.ts
 * caches by text). One text per file, not the helpers copied into each function: a 0.95 MiB file of
 * 5,000 functions and 0.4 MiB of helpers took the front 2.1 GB of heap and 18.6 s to read that way.
 * `run` sees only its own parameters and the helpers: the wrapper's `args` is outside its scope.
 */
import { createHash } from 'node:crypto';

import { DataType, type EvaluationMode, FunctionType, type ScriptSpec } from '../contract/task';

/** How the file says it: `kind`. */
export const KINDS = { row: FunctionType.SCALAR, tensor: FunctionType.TENSOR, aggregation: FunctionType.AGGREGATION } as const;
export type KindName = keyof typeof KINDS;

/** How the file says it: the type of each entry of `params`. */
export const PARAM_TYPES = { number: DataType.NUMERIC, text: DataType.STRING, dual: DataType.DUAL } as const;
export type ParamTypeName = keyof typeof PARAM_TYPES;

/** How the file says it: `returns`. */
export const RETURN_TYPES = { number: DataType.NUMERIC, text: DataType.STRING } as const;
export type ReturnTypeName = keyof typeof RETURN_TYPES;

/** Letters, digits and `_` (what Qlik accepts in a function name), not starting with a digit. */
export const NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const MAX_NAME_CHARS = 64;

/** Qlik adds these to the connection when scripts are allowed: a plugin function must not shadow them. */
export const SCRIPT_FUNCTION_NAMES = [
  'ScriptEval',
  'ScriptEvalStr',
  'ScriptEvalEx',
  'ScriptEvalExStr',
  'ScriptAggr',
  'ScriptAggrStr',
  'ScriptAggrEx',
  'ScriptAggrExStr',
] as const;

export interface FunctionParam {
  readonly name: string;
  readonly type: ParamTypeName;
}

/** A function as its definition states it, before its file's script is made. */
export interface DefinedFunction {
  readonly name: string;
  readonly kind: KindName;
  readonly params: readonly FunctionParam[];
  readonly returns: ReturnTypeName;
  /** `run` as a function expression, cut from the file. */
  readonly runSource: string;
  /** The file, as logs and messages name it, and the 1-based line of the definition. */
  readonly file: string;
  readonly line: number;
}

/** The script every function of one file runs, made once per file (fileScript). */
export interface FileScript {
  readonly text: string;
  readonly bytes: number;
  /** SHA-256 of the text, hex: computed once per file, not once a call (logs, context keys). */
  readonly digest: string;
  /** SHA-256 of the file's helpers: an edit of a helper changes the version of every function of the file. */
  readonly helpersDigest: string;
}

/** A function as the file states it, with its file's script and its entry in it, before an id is given. */
export interface FunctionSource extends DefinedFunction {
  readonly script: FileScript;
  readonly entry: number;
}

export interface PluginFunction extends FunctionSource {
  readonly id: number;
  readonly spec: ScriptSpec;
  /** Short hash of the signature and code: tells versions apart in logs. */
  readonly version: string;
}

/** The first 31 bits of SHA-256 of the lower-cased name (Qlik names are case-insensitive); never 0. */
export function functionId(name: string): number {
  const id = createHash('sha256').update(name.toLowerCase(), 'utf8').digest().readUInt32BE(0) & 0x7fffffff;
  return id === 0 ? 1 : id;
}

export function toPluginFunction(source: FunctionSource): PluginFunction {
  // The function's own code and its file's helpers, not the file's script: editing one function changes no other's version.
  const version = createHash('sha256')
    .update(JSON.stringify([source.kind, source.params, source.returns, source.script.helpersDigest, source.runSource]))
    .digest('hex')
    .slice(0, 12);
  return { ...source, id: functionId(source.name), spec: functionSpec(source), version };
}

/** The same ScriptSpec EvaluateScript builds, with the declared types instead of a header's; the script is the file's. */
function functionSpec(source: FunctionSource): ScriptSpec {
  const functionType = KINDS[source.kind];
  const mode: EvaluationMode = source.params.length === 0 ? 'once' : functionType === FunctionType.AGGREGATION ? 'aggregate' : 'rows';
  return {
    script: source.script.text,
    paramTypes: source.params.map((p) => PARAM_TYPES[p.type]),
    boundNames: [],
    returnType: RETURN_TYPES[source.returns],
    mode,
    tableAllowed: functionType === FunctionType.TENSOR && mode === 'rows',
    factory: true,
    entry: source.entry,
  };
}

/**
 * The script of a file's functions: an expression whose value, called with an entry number, makes
 * that function's per-row function `(args) => run(args[0], …)`. Every `run` is written inside the
 * helpers' scope; the selector names no variable (it reads `arguments`), so it shadows no helper.
 */
export function fileScript(helpers: string, functions: readonly DefinedFunction[]): FileScript {
  const cases = functions.map((fn, entry) => {
    const argList = Array.from({ length: fn.params.length }, (_, i) => `args[${i}]`).join(', ');
    return `case ${entry}: return (function (run) { return function (args) { return run(${argList}); }; })(\n${fn.runSource}\n);`;
  });
  const text = `(function () {\n${helpers}\nreturn function () {\nswitch (arguments[0]) {\n${cases.join('\n')}\n}\n};\n})()`;
  const sha256 = (value: string): string => createHash('sha256').update(value, 'utf8').digest('hex');
  return { text, bytes: Buffer.byteLength(text, 'utf8'), digest: sha256(text), helpersDigest: sha256(helpers) };
}

/** The FunctionDefinition message GetCapabilities lists. */
export function functionDefinition(fn: PluginFunction): Record<string, unknown> {
  return {
    name: fn.name,
    functionType: KINDS[fn.kind],
    returnType: RETURN_TYPES[fn.returns],
    params: fn.params.map((p) => ({ name: p.name, dataType: PARAM_TYPES[p.type] })),
    functionId: fn.id,
  };
}
