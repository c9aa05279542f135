/**
 * Reads one administrator's function file with acorn, statically: the gRPC process never runs it.
 *
 * A file is CommonJS-looking plain JavaScript an editor understands:
 *   exports.Name = { kind, params, returns, run(…) { … } };   (or module.exports = { Name: { … }, … })
 * plus, optionally, top-level helper declarations (function, class, const/let/var). The helpers'
 * text is placed before each function's `run` in the sandbox, so functions of one file can share
 * them; nothing else at the top level is allowed, because it would never run.
 *
 * File-level problems (a syntax error, a stray statement, a `require` or `import()`) refuse the whole
 * file; a problem in one definition refuses only that function. Every problem has a line.
 */
import { parse, type AnyNode, type Expression, type Node, type Program, type Statement } from 'acorn';

import { keyName, lineOf, readDefinition, type FileText, type Problem } from './read-definition';
import type { FunctionSource } from './signature';

export type { Problem } from './read-definition';

export interface ParsedFile {
  readonly functions: FunctionSource[];
  readonly problems: Problem[];
}

/** The ECMAScript version Node 20's V8 runs: newer syntax would pass here and fail in the sandbox. */
const ECMA_VERSION = 2023;

export function parseFunctionFile(text: string, file: string): ParsedFile {
  let program: Program;
  try {
    program = parse(text, { ecmaVersion: ECMA_VERSION, sourceType: 'script', locations: true, allowHashBang: true });
  } catch (error) {
    const line = (error as { loc?: { line?: number } }).loc?.line ?? 0;
    const message = error instanceof Error ? error.message.replace(/ \(\d+:\d+\)$/, '') : String(error);
    return { functions: [], problems: [{ file, line, message: `syntax error: ${message}; the file is not loaded` }] };
  }
  const source: FileText = { text, file };
  const helpers: string[] = [];
  const definitions: { name: string; nameNode: Node; value: Expression }[] = [];
  const problems: Problem[] = hostReach(program, file);
  for (const statement of program.body) {
    const found = definitionsIn(statement);
    if (found) definitions.push(...found);
    else if (isHelper(statement)) helpers.push(text.slice(statement.start, statement.end));
    else if (!isIgnorable(statement)) {
      problems.push({
        file,
        line: lineOf(statement),
        message: `only exports.Name = { … } definitions and helper declarations (function, class, const, let) may stand at the top of a function file: this ${describe(statement)} would never run`,
      });
    }
  }
  if (problems.length > 0)
    return { functions: [], problems: problems.map((p) => ({ ...p, message: `${p.message}; the file is not loaded` })) };
  const functions: FunctionSource[] = [];
  const prelude = helpers.join('\n');
  for (const { name, nameNode, value } of definitions) {
    const read = readDefinition(name, nameNode, value, source);
    problems.push(...read.problems);
    if (read.fn) functions.push(prelude === '' ? read.fn : { ...read.fn, runSource: withHelpers(prelude, read.fn.runSource) });
  }
  return { functions, problems };
}

/** Helpers and run in one expression: a function expression closing over the file's helpers. */
function withHelpers(prelude: string, runSource: string): string {
  return `(function () {\n${prelude}\nreturn (\n${runSource}\n);\n})()`;
}

/** `exports.X = …`, `module.exports.X = …`, `exports['X'] = …`, or `module.exports = { X: …, … }`. */
function definitionsIn(statement: Statement | AnyNode): { name: string; nameNode: Node; value: Expression }[] | undefined {
  if (statement.type !== 'ExpressionStatement') return undefined;
  const expression = statement.expression;
  if (expression.type !== 'AssignmentExpression' || expression.operator !== '=') return undefined;
  const { left, right } = expression;
  if (isModuleExports(left)) {
    if (right.type !== 'ObjectExpression') return undefined;
    const found: { name: string; nameNode: Node; value: Expression }[] = [];
    for (const property of right.properties) {
      const name = property.type === 'Property' ? keyName(property) : undefined;
      if (property.type !== 'Property' || name === undefined) return undefined;
      found.push({ name, nameNode: property, value: property.value });
    }
    return found;
  }
  if (left.type !== 'MemberExpression' || !(isExports(left.object) || isModuleExports(left.object))) return undefined;
  const property = left.property;
  if (!left.computed && property.type === 'Identifier') return [{ name: property.name, nameNode: left, value: right }];
  if (left.computed && property.type === 'Literal' && typeof property.value === 'string')
    return [{ name: property.value, nameNode: left, value: right }];
  return undefined;
}

function isExports(node: AnyNode): boolean {
  return isNamed(node, 'exports');
}

function isModuleExports(node: AnyNode): boolean {
  if (node.type !== 'MemberExpression') return false;
  return !node.computed && isNamed(node.object, 'module') && isNamed(node.property, 'exports');
}

function isHelper(statement: Node): boolean {
  return statement.type === 'FunctionDeclaration' || statement.type === 'ClassDeclaration' || statement.type === 'VariableDeclaration';
}

/** Empty statements and directives such as 'use strict'. */
function isIgnorable(statement: Node): boolean {
  return (
    statement.type === 'EmptyStatement' ||
    (statement.type === 'ExpressionStatement' && typeof (statement as { directive?: string }).directive === 'string')
  );
}

function describe(statement: Node): string {
  return `${statement.type
    .replace(/Statement$|Declaration$/, '')
    .replace(/([a-z])([A-Z])/g, '$1 $2')
    .toLowerCase()} statement`;
}

/**
 * `require(…)` and `import(…)` cannot work in the sandbox (no modules, no host): refuse the file at
 * load rather than fail every call. Only a courtesy: the sandbox itself is what keeps the host out.
 */
function hostReach(program: Program, file: string): Problem[] {
  const problems: Problem[] = [];
  visit(program, (node) => {
    const isRequire = node.type === 'CallExpression' && isNamed(node.callee, 'require');
    if (isRequire || node.type === 'ImportExpression') {
      problems.push({
        file,
        line: lineOf(node),
        message: `${isRequire ? 'require' : 'import()'} cannot work here: function code runs in a sandbox with no modules and no access to the host; copy the code you need into the file`,
      });
    }
  });
  return problems;
}

function isNamed(node: AnyNode, name: string): boolean {
  return node.type === 'Identifier' && node.name === name;
}

function visit(node: AnyNode, onNode: (node: AnyNode) => void): void {
  onNode(node);
  for (const value of Object.values(node)) {
    if (Array.isArray(value)) {
      for (const item of value) if (isNode(item)) visit(item, onNode);
    } else if (isNode(value)) visit(value, onNode);
  }
}

function isNode(value: unknown): value is AnyNode {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { type?: unknown }).type === 'string' &&
    typeof (value as { start?: unknown }).start === 'number'
  );
}
