/**
 * A script that does not compile fails with INVALID_ARGUMENT and a message that points into the
 * author's own text (line and column, never the plugin's wrapper), with a hint for the slips authors
 * make most. Through a real gRPC call to real sandboxes: the position is what Qlik would show.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, num, numbers } from '../helpers/qlik-client';

const N = DataType.NUMERIC;

let t: TestPlugin;
before(async () => (t = await startTestPlugin()));
after(async () => t.stop());

async function compileError(script: string): Promise<string> {
  const r = await t.client.evaluate({ script, params: [{ dataType: N, name: 'Sales' }], bundles: [[[num(1)]]] });
  assert.equal(r.code, status.INVALID_ARGUMENT, r.details);
  assert.equal(r.rows.length, 0);
  assert.doesNotMatch(r.details, /\n/);
  assert.doesNotMatch(r.details, /script\.js|function \(args/, 'nothing of the wrapper');
  return r.details;
}

describe('syntax errors name the line and column in the author script', () => {
  it('an expression that ends too early: the end of the script, not the wrapper’s bracket', async () => {
    const details = await compileError('args[0] *');
    assert.match(details, /^SyntaxError: Unexpected end of the script at line 1, column 10 \(the expression is incomplete/);
  });

  it('an error on the second line of a function body: that line and column', async () => {
    const details = await compileError('const a = args[0];\nconst b = ;\nreturn a + b;');
    assert.match(details, /^SyntaxError: Unexpected token ';' at line 2, column 11$/);
  });

  it('an error in the middle of a one-line expression: its column', async () => {
    assert.match(await compileError('Sales + * 2'), /^SyntaxError: Unexpected token '\*' at line 1, column 9$/);
  });

  it('a stray closing bracket is placed where it stands', async () => {
    assert.match(await compileError('Math.max(args[0], 1))'), /^SyntaxError: Unexpected token '\)' at line 1, column 21$/);
  });

  it('a body begun with a declaration that ends too early: its end, taken as a body', async () => {
    assert.match(
      await compileError('const x = args[0] +'),
      /^SyntaxError: Unexpected end of the script at line 1, column 20 \(the script ends inside a statement/,
    );
  });

  it("V8's own message where it says more than the wrapper's bracket (an unterminated template)", async () => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the script is an unterminated template literal
    const details = await compileError('`total: ${args[0]}');
    assert.match(details, /^SyntaxError: Unexpected end of input at line 1, column 19 \(the expression is incomplete/);
  });

  it('a statement where an expression is expected: a hint to use ?: or a body with return', async () => {
    const details = await compileError('if (Sales > 0) 1 else 2');
    assert.match(details, /^SyntaxError: Unexpected token 'if' at line 1, column 1 \('if' begins a statement, .*c \? a : b.*return/);
  });

  it("Qlik's doubled quote copied into the script: a hint about ''", async () => {
    const details = await compileError("args[0] + ''x''");
    assert.match(
      details,
      /^SyntaxError: Unexpected identifier 'x' at line 1, column 13 \(a quote inside a Qlik string literal is written ''/,
    );
  });

  it('the plugin keeps serving the same script fixed', async () => {
    const r = await t.client.evaluate({ script: 'args[0] * 2', params: [{ dataType: N }], bundles: [[[num(21)]]] });
    assert.deepEqual(numbers(r), [42]);
  });
});
