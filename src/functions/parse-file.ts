/**
 * Reads one administrator's function file with acorn, statically: the gRPC process never runs it.
 *
 * A file is CommonJS-looking plain JavaScript an editor understands:
 *   exports.Name = { kind, params, returns, run(…) { … } };   (or module.exports = { Name: { … }, … })
 * plus, optionally, top-level helper declarations (function, class, const/let/var). The file's
 * functions share one script (src/functions/signature.ts, fileScript): its helpers, then every `run`
 * in their scope; nothing else at the top level is allowed, because it would never run.
 *
 * File-level problems (a syntax error, a stray statement, an `import()`) refuse the whole
 * file; a problem in one definition refuses only that function. Every problem has a line.
 */
import { type AnyNode, type Expression, type Node, type Program, parse, type Statement } from 'acorn';

import { type FileText, keyName, lineOf, type Problem, readDefinition } from './read-definition';
import { type DefinedFunction, type FunctionSource, fileScript } from './signature';

export type { Problem } from './read-definition';

export interface ParsedFile {
  readonly functions: FunctionSource[];
  readonly problems: Problem[];
}

/** The ECMAScript version Node 20's V8 runs: newer syntax would pass here and fail in the sandbox. */
const ECMA_VERSION = 2023;

/**
 * Deeper nesting is refused with its line: hand-written code never comes near it, the sandbox's V8
 * compiles it, and acorn (recursive) ran out of stack on a 200,000-deep member chain.
 */
export const MAX_NESTING_DEPTH = 1_000;

export function parseFunctionFile(text: string, file: string): ParsedFile {
  let program: Program;
  try {
    program = parse(text, { ecmaVersion: ECMA_VERSION, sourceType: 'script', locations: true, allowHashBang: true });
  } catch (error) {
    const line = (error as { loc?: { line?: number } }).loc?.line ?? 0;
    // acorn says "Not enough stack space" (or the stack overflows) on absurd nesting: not a syntax error.
    if (error instanceof RangeError || /stack space/.test(String(error))) return refused(file, line, tooDeep());
    const message = error instanceof Error ? error.message.replace(/ \(\d+:\d+\)$/, '') : String(error);
    return refused(file, line, `syntax error: ${message}`);
  }
  const source: FileText = { text, file };
  const helpers: string[] = [];
  const definitions: { name: string; nameNode: Node; value: Expression }[] = [];
  const deep = deepestNode(program);
  if (deep !== undefined) return refused(file, lineOf(deep), tooDeep());
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
  const defined: DefinedFunction[] = [];
  for (const { name, nameNode, value } of definitions) {
    const read = readDefinition(name, nameNode, value, source);
    problems.push(...read.problems);
    if (read.fn) defined.push(read.fn);
  }
  if (defined.length === 0) return { functions: [], problems };
  const script = fileScript(helpers.join('\n'), defined);
  return { functions: defined.map((fn, entry) => ({ ...fn, script, entry })), problems };
}

function refused(file: string, line: number, message: string): ParsedFile {
  return { functions: [], problems: [{ file, line, message: `${message}; the file is not loaded` }] };
}

function tooDeep(): string {
  return `the file nests expressions deeper than ${MAX_NESTING_DEPTH} levels: split the expression or build it in steps`;
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
 * `import(…)` cannot work in the sandbox (no module loader, no host): refuse the file at load rather
 * than fail every call. `require` of the plugin's libraries works (src/libraries/); any other name
 * fails the call that asks, naming what is available, since the set may change without the file.
 * Only a courtesy: the sandbox itself is what keeps the host out.
 */
function hostReach(program: Program, file: string): Problem[] {
  const problems: Problem[] = [];
  visit(program, (node) => {
    if (node.type === 'ImportExpression') {
      problems.push({
        file,
        line: lineOf(node),
        message: `import() cannot work here: function code runs in a sandbox with no modules and no access to the host; use require() of the plugin's libraries, or copy the code you need into the file`,
      });
    }
  });
  return problems;
}

function isNamed(node: AnyNode, name: string): boolean {
  return node.type === 'Identifier' && node.name === name;
}

/** Every node, parents first, with an explicit stack: an AST as deep as a file allows costs no call stack. */
function visit(root: AnyNode, onNode: (node: AnyNode) => void): void {
  const stack: AnyNode[] = [root];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    onNode(node);
    const children = childrenOf(node);
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i] as AnyNode);
  }
}

/** The first node nested deeper than MAX_NESTING_DEPTH, or undefined. */
function deepestNode(root: AnyNode): AnyNode | undefined {
  const stack: { node: AnyNode; depth: number }[] = [{ node: root, depth: 0 }];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    if (top.depth > MAX_NESTING_DEPTH) return top.node;
    for (const child of childrenOf(top.node)) stack.push({ node: child, depth: top.depth + 1 });
  }
  return undefined;
}

export function childrenOf(node: AnyNode): AnyNode[] {
  const children: AnyNode[] = [];
  for (const value of Object.values(node)) {
    if (Array.isArray(value)) {
      for (const item of value) if (isNode(item)) children.push(item);
    } else if (isNode(value)) children.push(value);
  }
  return children;
}

function isNode(value: unknown): value is AnyNode {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { type?: unknown }).type === 'string' &&
    typeof (value as { start?: unknown }).start === 'number'
  );
}
