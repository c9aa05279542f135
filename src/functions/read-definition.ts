/**
 * Reads one function definition, `{ kind, params, returns, run }`, from the parsed file: literal
 * syntax only, nothing is evaluated (the gRPC process never runs administrators' code). Each problem
 * names the line and what to write instead; a definition with any problem is refused on its own.
 */
import type { Expression, Node, ObjectExpression, Pattern, Property, SpreadElement } from 'acorn';

import {
  type DefinedFunction,
  type FunctionParam,
  KINDS,
  type KindName,
  MAX_NAME_CHARS,
  NAME_PATTERN,
  PARAM_TYPES,
  type ParamTypeName,
  RETURN_TYPES,
  type ReturnTypeName,
  SCRIPT_FUNCTION_NAMES,
} from './signature';

export interface Problem {
  readonly file: string;
  readonly line: number;
  readonly message: string;
}

const KEYS = ['kind', 'params', 'returns', 'run'] as const;
type Key = (typeof KEYS)[number];

/** The file's text and name, for cutting `run` out and for messages. */
export interface FileText {
  readonly text: string;
  readonly file: string;
}

export function lineOf(node: Node): number {
  return node.loc?.start.line ?? 0;
}

const quoted = (names: readonly string[]): string => names.map((n) => `'${n}'`).join(', ');

/** The problem with a function name, or undefined when Qlik accepts it. */
export function nameProblem(name: string): string | undefined {
  if (!NAME_PATTERN.test(name) || name.length > MAX_NAME_CHARS) {
    return `the function name ${JSON.stringify(name)} is invalid: use letters, digits and _ (not first), at most ${MAX_NAME_CHARS} characters`;
  }
  if (SCRIPT_FUNCTION_NAMES.some((n) => n.toLowerCase() === name.toLowerCase())) {
    return `the function name ${name} is one of Qlik's script functions: choose another name`;
  }
  return undefined;
}

/** A property key written as an identifier or a string literal; undefined for computed keys. */
export function keyName(property: Property): string | undefined {
  if (property.computed) return undefined;
  const key = property.key;
  if (key.type === 'Identifier') return key.name;
  if (key.type === 'Literal' && typeof key.value === 'string') return key.value;
  return undefined;
}

export function readDefinition(
  name: string,
  nameNode: Node,
  value: Expression,
  source: FileText,
): { fn?: DefinedFunction; problems: Problem[] } {
  const problems: Problem[] = [];
  const problem = (node: Node, message: string): void =>
    void problems.push({ file: source.file, line: lineOf(node), message: `${name}: ${message}` });
  const badName = nameProblem(name);
  if (badName !== undefined) problem(nameNode, badName);
  if (value.type !== 'ObjectExpression') {
    problem(value, `write the definition as an object literal: { kind: 'row', params: { … }, returns: 'number', run(…) { … } }`);
    return { problems };
  }
  const parts = definitionParts(value, problem);
  const kind = literalChoice(parts.kind, KINDS, 'kind', value, problem) as KindName | undefined;
  const returns = literalChoice(parts.returns, RETURN_TYPES, 'returns', value, problem) as ReturnTypeName | undefined;
  const params = readParams(parts.params, value, problem);
  const runSource = parts.run ? readRun(parts.run, params?.length, source.text, problem) : undefined;
  if (!parts.run) problem(value, `add run(…) { … }: the JavaScript that computes the result, one parameter per entry of params`);
  if (problems.length > 0 || kind === undefined || returns === undefined || params === undefined || runSource === undefined)
    return { problems };
  return { fn: { name, kind, params, returns, runSource, file: source.file, line: lineOf(nameNode) }, problems };
}

type Report = (node: Node, message: string) => void;

function definitionParts(object: ObjectExpression, problem: Report): Partial<Record<Key, Property>> {
  const parts: Partial<Record<Key, Property>> = {};
  for (const property of object.properties) {
    if (property.type === 'SpreadElement') {
      problem(property, `spread (...) is not read: write kind, params, returns and run out`);
      continue;
    }
    const key = keyName(property);
    if (key === undefined || !(KEYS as readonly string[]).includes(key)) {
      problem(property, `unknown key ${key ?? '(computed)'}: a definition has only ${KEYS.join(', ')}`);
    } else if (parts[key as Key]) {
      problem(property, `${key} is given twice: keep one`);
    } else {
      parts[key as Key] = property;
    }
  }
  return parts;
}

function literalChoice(
  property: Property | undefined,
  choices: Record<string, number>,
  key: string,
  owner: Node,
  problem: Report,
): string | undefined {
  const allowed = quoted(Object.keys(choices));
  if (!property) {
    problem(owner, `add ${key}: one of ${allowed}`);
    return undefined;
  }
  const value = property.value;
  if (value.type === 'Literal' && typeof value.value === 'string' && Object.hasOwn(choices, value.value)) return value.value;
  const got = value.type === 'Literal' ? String(value.raw) : 'an expression';
  problem(value, `${key} must be one of ${allowed} written as a string literal (got ${got})`);
  return undefined;
}

function readParams(property: Property | undefined, owner: Node, problem: Report): FunctionParam[] | undefined {
  const hint = `params: { name: 'number' | 'text' | 'dual', … } in the order Qlik passes them ({} for none)`;
  if (!property) {
    problem(owner, `add ${hint}`);
    return undefined;
  }
  if (property.value.type !== 'ObjectExpression') {
    problem(property.value, `write ${hint}`);
    return undefined;
  }
  const params: FunctionParam[] = [];
  let ok = true;
  for (const entry of property.value.properties) {
    const param = readParam(entry, params, problem);
    if (param) params.push(param);
    else ok = false;
  }
  return ok ? params : undefined;
}

function readParam(entry: Property | SpreadElement, earlier: readonly FunctionParam[], problem: Report): FunctionParam | undefined {
  const name = entry.type === 'Property' ? keyName(entry) : undefined;
  if (entry.type === 'SpreadElement' || name === undefined) {
    problem(entry, `write each parameter as name: 'number' | 'text' | 'dual'`);
    return undefined;
  }
  if (!NAME_PATTERN.test(name)) {
    problem(entry, `the parameter name ${JSON.stringify(name)} is invalid: use letters, digits and _`);
    return undefined;
  }
  if (earlier.some((p) => p.name.toLowerCase() === name.toLowerCase())) {
    problem(entry, `the parameter ${name} is declared twice: rename one`);
    return undefined;
  }
  const value = entry.value;
  if (value.type === 'Literal' && typeof value.value === 'string' && Object.hasOwn(PARAM_TYPES, value.value)) {
    return { name, type: value.value as ParamTypeName };
  }
  const got = value.type === 'Literal' ? String(value.raw) : 'an expression';
  problem(value, `the type of parameter ${name} must be ${quoted(Object.keys(PARAM_TYPES))} (got ${got})`);
  return undefined;
}

/** `run` as a function expression's text: a method is rewritten as `function run(…) {…}`. */
function readRun(property: Property, paramCount: number | undefined, text: string, problem: Report): string | undefined {
  const value = property.value;
  if (property.kind !== 'init' || (value.type !== 'FunctionExpression' && value.type !== 'ArrowFunctionExpression')) {
    problem(property, `run must be a function: run(a, b) { return …; }`);
    return undefined;
  }
  if (value.async || value.generator) {
    problem(property, `run must not be async or a generator: a result is needed at once, and promises are never awaited`);
    return undefined;
  }
  if (paramCount !== undefined && !value.params.some((p: Pattern) => p.type === 'RestElement') && value.params.length !== paramCount) {
    problem(
      property,
      `run takes ${value.params.length} parameter(s) but params declares ${paramCount}: give run one parameter per entry of params, in the same order`,
    );
    return undefined;
  }
  const code = text.slice(value.start, value.end);
  return property.method ? `function run${code}` : code;
}
