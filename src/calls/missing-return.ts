/**
 * Whether a script is a function body with no `return` statement: every row then gives undefined,
 * a Qlik null (or '' for text), which authors took for a bug of the plugin. `npm run try` says so
 * beside the result and the plugin logs it at debug; the call itself runs as before, since a body
 * that only fills a table through side effects is legal. A static check with acorn: nothing runs.
 *
 * The text is read the way the sandbox compiles it (workers/thread/script-source.ts): an expression
 * first, a function body when that fails. A `return` inside a nested function does not count, and
 * a body that throws is taken to mean it.
 */
import { type AnyNode, type Program, parse } from 'acorn';

import { childrenOf } from '../functions/parse-file';

const FUNCTION_NODES = new Set(['FunctionDeclaration', 'FunctionExpression', 'ArrowFunctionExpression', 'ClassBody']);

export function lacksReturn(script: string): boolean {
  try {
    if (parsed(`(function () {\nreturn (\n${script.replace(/[\s;]+$/, '')}\n);\n})`) !== undefined) return false;
    const body = bodyOf(`(function () {\n${script}\n})`);
    return body !== undefined && !hasOwn(body, new Set(['ReturnStatement', 'ThrowStatement']));
  } catch {
    // Nesting deeper than acorn's stack, or than this walk's: no opinion.
    return false;
  }
}

function parsed(source: string): Program | undefined {
  try {
    return parse(source, { ecmaVersion: 'latest', sourceType: 'script' });
  } catch (error) {
    if (error instanceof SyntaxError) return undefined;
    throw error;
  }
}

/** The wrapper function's body, or undefined when the text is no body either (a syntax error, told elsewhere). */
function bodyOf(source: string): AnyNode | undefined {
  const statement = parsed(source)?.body[0];
  if (statement?.type !== 'ExpressionStatement' || statement.expression.type !== 'FunctionExpression') return undefined;
  return statement.expression.body;
}

/** A node of these types in the body itself, not inside a nested function or class. */
function hasOwn(root: AnyNode, types: ReadonlySet<string>): boolean {
  const stack: AnyNode[] = [...childrenOf(root)];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    if (types.has(node.type)) return true;
    if (!FUNCTION_NODES.has(node.type)) stack.push(...childrenOf(node));
  }
  return false;
}
