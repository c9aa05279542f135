/**
 * The wrapper around an author's script, and its syntax errors told in the author's own terms.
 *
 * A script is compiled inside a function that takes `args` and the bound names, first as an
 * expression (`return (…)`), then as a function body. V8 reports a syntax error at a line and column
 * of that wrapper (`Unexpected token ')' [script.js:4:1]` for `args[0] *`), which means nothing to an
 * author: the wrapper's lines are taken off here, a position past the author's text becomes "the end
 * of the script", and the message gets a hint for the slips authors make most (a statement where an
 * expression is expected; a Qlik `''` quote copied into the script). The wrapper and the mapping
 * live in one module so that they cannot drift apart.
 *
 * The wrapper is text around the author's text, so a script can close it and put statements of its
 * own at the top level (`1); }); throw x; (function () { return (1`): those run when the script is
 * instantiated, and what they throw is read by isolated-vm with the time limit disarmed (rejection-watch.ts
 * says why that is not let happen). `escapesWrapper` checks with acorn, nothing run, that the compiled
 * source is the one function expression and nothing else.
 */
import { parse } from 'acorn';

import { PluginError } from '../../src/contract/errors';

export type ScriptForm = 'expression' | 'body';

const PREFIX_LINES: Readonly<Record<ScriptForm, number>> = { expression: 2, body: 1 };

/** The source V8 compiles for the script in that form; params is `args` and the bound names. */
export function wrapScript(text: string, params: string, form: ScriptForm): string {
  if (form === 'body') return `(function (${params}) {\n${text}\n})`;
  return `(function (${params}) {\nreturn (\n${expressionText(text)}\n);\n})`;
}

/** True unless the source is exactly one function expression (what wrapScript makes of a script that stays inside it). */
export function escapesWrapper(source: string): boolean {
  try {
    const [statement, ...more] = parse(source, { ecmaVersion: 'latest', sourceType: 'script' }).body;
    return more.length > 0 || statement?.type !== 'ExpressionStatement' || statement.expression.type !== 'FunctionExpression';
  } catch {
    // Syntax acorn does not read, or nesting deeper than its stack: not shown to stay inside.
    return true;
  }
}

/** The refusal of a script that closes its wrapper: it would run outside the function its rows call. */
export function wrapperEscapeError(): PluginError {
  return new PluginError(
    'INVALID_ARGUMENT',
    'SyntaxError: the script closes the function it runs in (a `})` or `)` with no opening one in the script)',
  );
}

/** Trailing semicolons and white space are no part of an expression. */
function expressionText(text: string): string {
  return text.replace(/[\s;]+$/, '');
}

/**
 * The error of the form the text looks like (a text with `;`, `return` or a leading declaration is a body), with
 * its position in the author's text and a hint. When that form's error is only that the text ended
 * too early and the other form's lies inside the text (`args[0] )`), the other one says more.
 */
export function scriptSyntaxError(text: string, expressionError: unknown, bodyError: unknown): PluginError {
  const expression = located(text, 'expression', expressionError);
  const body = located(text, 'body', bodyError);
  const [first, second] = looksLikeBody(text) ? [body, expression] : [expression, body];
  const chosen = first === expression && first.where?.pastEnd === true && second.where?.pastEnd === false ? second : first;
  if (chosen.where === undefined) return new PluginError('INVALID_ARGUMENT', syntaxText(chosen.message));
  const { line, column, pastEnd } = chosen.where;
  // V8 stopped on the wrapper's `)` or `}`: the author's text ended early. Its other messages
  // ("Unterminated template literal") say more than that.
  const said = pastEnd && /^(Unexpected token|missing \) )/.test(chosen.message) ? 'Unexpected end of the script' : chosen.message;
  const hint = hintFor(chosen.message, text, chosen.form, pastEnd);
  return new PluginError('INVALID_ARGUMENT', `${syntaxText(said)} at line ${line}, column ${column}${hint ? ` (${hint})` : ''}`);
}

/** A `;`, a `return`, or a declaration first (`const x = args[0] +`): the author meant a function body. */
function looksLikeBody(text: string): boolean {
  return /;|\breturn\b/.test(expressionText(text)) || /^\s*(const|let|var|function|class)\b/.test(text);
}

interface Located {
  readonly form: ScriptForm;
  readonly message: string;
  readonly where: Position | undefined;
}

function located(text: string, form: ScriptForm, error: unknown): Located {
  const raw = error instanceof Error ? error.message : String(error);
  const found = /^(.*) \[script\.js:(\d+):(\d+)\]$/.exec(raw);
  if (found === null) return { form, message: raw, where: undefined };
  const [, message = raw, line, column] = found;
  const own = form === 'body' ? text : expressionText(text);
  return { form, message, where: authorPosition(own, Number(line) - PREFIX_LINES[form], Number(column)) };
}

function syntaxText(message: string): string {
  return message.startsWith('SyntaxError') ? message : `SyntaxError: ${message}`;
}

interface Position {
  readonly line: number;
  readonly column: number;
  /** V8 stopped on the wrapper's closing text: the author's script ended too early. */
  readonly pastEnd: boolean;
}

/** line and column are 1-based, as V8 gives them; the author's text starts at line 1, column 1. */
function authorPosition(text: string, line: number, column: number): Position | undefined {
  const lines = text.split('\n');
  const last = lines.length;
  if (line < 1) return undefined; // in the wrapper's head: no position of the author's to give
  if (line <= last && column <= (lines[line - 1]?.length ?? 0) + 1) return { line, column, pastEnd: false };
  return { line: last, column: (lines[last - 1]?.length ?? 0) + 1, pastEnd: true };
}

/** Keywords that begin a statement, which cannot stand inside an expression. */
const STATEMENT_WORDS = /^Unexpected token '(if|for|while|do|switch|try|throw|return|const|let|var|class|break|continue)'$/;

function hintFor(message: string, text: string, form: ScriptForm, pastEnd: boolean): string | undefined {
  if (/[\w$)\]]''|''[\w$(]/.test(text))
    return "a quote inside a Qlik string literal is written '' in Qlik, and the script gets one '; in the script itself write ' or \" once";
  const statement = STATEMENT_WORDS.exec(message)?.[1];
  if (statement !== undefined)
    return `'${statement}' begins a statement, which cannot stand where an expression is expected: use c ? a : b in an expression, or write a function body that ends with return …;`;
  if (pastEnd)
    return form === 'expression'
      ? 'the expression is incomplete: an operator, a bracket or a quote is not closed'
      : 'the script ends inside a statement or an expression: an operator, a bracket, a brace or a quote is not closed';
  return undefined;
}
