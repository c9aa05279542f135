/**
 * eval and new Function compile inside the sandbox, as security.md says, up to a length isolated-vm
 * sets: its code-generation callback refuses source longer than the isolate's memory limit / 8
 * characters (SSE_MEMORY_LIMIT_MB × 131072), which the script sees as EvalError "Code generation from
 * strings disallowed for this context".
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { textOf } from '../helpers/sandbox-calls';

const MEMORY_LIMIT_MB = 32;
const MAX_EVAL_CHARS = MEMORY_LIMIT_MB * 131_072;
/** new Function(body) is checked as V8's `(function anonymous(…` wrapper around body: 28 characters more (measured). */
const FUNCTION_WRAPPER_CHARS = 28;
const REFUSED = 'EvalError: Code generation from strings disallowed for this context';

/** Compiles a source of exactly `chars` characters with `how`, and reports what happened. */
const compileOf = (how: 'eval' | 'Function', chars: number): string =>
  `const s = '0;' + ' '.repeat(${chars - 2}); try { ${how === 'eval' ? 'eval(s)' : 'new Function(s)'}; return 'compiled ' + s.length; } catch (e) { return e.name + ': ' + e.message; }`;

describe(`eval in the sandbox (SSE_MEMORY_LIMIT_MB=${MEMORY_LIMIT_MB})`, () => {
  let t: TestPlugin;
  before(async () => (t = await startTestPlugin({ SSE_MEMORY_LIMIT_MB: String(MEMORY_LIMIT_MB) })));
  after(async () => t.stop());

  it("eval('1+1') and new Function work", async () => {
    assert.equal(await textOf(t.client, "String(eval('1+1'))"), '2');
    assert.equal(await textOf(t.client, "String(new Function('a', 'return a * 3')(5))"), '15');
  });

  it(`eval compiles ${MAX_EVAL_CHARS} characters and refuses one more with EvalError`, async () => {
    assert.equal(await textOf(t.client, compileOf('eval', MAX_EVAL_CHARS)), `compiled ${MAX_EVAL_CHARS}`);
    assert.equal(await textOf(t.client, compileOf('eval', MAX_EVAL_CHARS + 1)), REFUSED);
  });

  it(`new Function counts its ${FUNCTION_WRAPPER_CHARS}-character wrapper too`, async () => {
    const body = MAX_EVAL_CHARS - FUNCTION_WRAPPER_CHARS;
    assert.equal(await textOf(t.client, compileOf('Function', body)), `compiled ${body}`);
    assert.equal(await textOf(t.client, compileOf('Function', body + 1)), REFUSED);
  });
});
