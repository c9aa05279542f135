/**
 * `npm run try` shows a script's console lines beside its results: on stderr, while stdout holds the
 * results only (so a CSV can still be piped). The real command, as an app author runs it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { runTry } from '../helpers/try-command';

describe('npm run try and the console', () => {
  test('prints console lines on stderr beside the results, warn and error marked', async () => {
    const ran = await runTry([
      '--fn',
      'ScriptEval',
      '{ console.log("row", args[0], { x: args[0] }); if (args[0] > 1) console.warn("big"); return args[0] * 2; }',
      '1',
      '2',
    ]);
    assert.equal(ran.code, 0, ran.stderr);
    assert.equal(ran.stdout, 'ScriptEval\n----------\n2\n4\n');
    assert.equal(ran.stderr, 'console.log: row 1 { x: 1 }\nconsole.log: row 2 { x: 2 }\nconsole.warn: big\n');
  });
});
