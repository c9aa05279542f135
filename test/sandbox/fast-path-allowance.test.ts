/**
 * A LOAD's rows keep the sandbox's main thread through the pauses V8 puts in them (workers/fast-path.ts):
 * a script whose last tasks there all ended within the fast path's budget gets PROVEN_BUDGETS times it
 * before it is stopped, so a row that V8's compiler or collector holds past the budget is answered
 * there, not moved to a pool thread with its isolate rebuilt. A new script has the budget alone, and a
 * row that uses the allowance uses it up, so a script slow every time gets it once; scripts made unique
 * each call share a bounded part of the main thread. The FastPath runs here on the test's main thread
 * with a real isolate and a real watcher thread (test/helpers/fast-path-on-files.ts); a row that
 * busy-waits stands for V8's pause, as the pause itself cannot be made to order.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';

import { decodeResult } from '../../src/contract/result-frame';
import { DataType, type ScriptSpec } from '../../src/contract/task';
import { type FastPath, type FastTask, PROVEN_BUDGETS } from '../../workers/fast-path';
import { newBudget } from '../../workers/thread-task';
import { type FastPathOnFiles, fastPathOnFiles } from '../helpers/fast-path-on-files';
import { encodeBundle } from '../helpers/qlik-client';

/**
 * The budget: long enough that a quick row never meets it on a loaded machine, and that the pause
 * below stays far from both the budget and the allowance (1.5 and 3 budgets).
 */
const BUDGET_MS = 100;
/** How long the row that stands for V8's pause busy-waits: 1.5 budgets, well within PROVEN_BUDGETS of it. */
const PAUSE_MS = 1.5 * BUDGET_MS;
/** Answers args[0] * 3, at once or after busy-waiting args[1] ms (the values are checked end to end in fast-path.test.ts). */
const SCRIPT = '{ const end = Date.now() + args[1]; while (Date.now() < end); return args[0] * 3; }';
/** Tasks that must end within the budget before the allowance (PROVEN_AFTER_TASKS in workers/fast-path.ts). */
const PROVING_TASKS = 20;

let nextTask = 1;
/** One row (value, pause) of a LOAD of contextKey: a call of its own, as each row of a LOAD is. */
function row(contextKey: string, value: number, pauseMs: number): FastTask {
  const spec: ScriptSpec = {
    script: SCRIPT,
    paramTypes: [DataType.NUMERIC, DataType.NUMERIC],
    boundNames: ['', ''],
    returnType: DataType.NUMERIC,
    mode: 'rows',
    tableAllowed: false,
  };
  const taskId = nextTask++;
  return {
    taskId,
    callId: taskId,
    contextKey,
    spec,
    bundles: [encodeBundle([[{ numData: value }, { numData: pauseMs }]])],
    rows: 1,
    firstRow: 0,
    maxReplyBytes: 1 << 20,
    libraries: null,
    callTimeoutMs: 60_000,
    budget: newBudget(),
  };
}

describe('the fast path beside pauses of a proven script', () => {
  let files: FastPathOnFiles;
  let fastPath: FastPath;
  beforeEach(() => {
    files = fastPathOnFiles(BUDGET_MS, 1_000);
    fastPath = files.fastPath;
  });
  afterEach(() => files.dispose());

  /** The tasks answered, each with a success, in the file standing for the results socket. */
  function answered(): Set<number> {
    const frames = files.written('results');
    for (const frame of frames) {
      const result = decodeResult(frame.payload);
      if (!result.ok) assert.fail(`task ${frame.id} failed: ${result.error.message}`);
      assert.equal(result.rowsOut, 1, `task ${frame.id}`);
    }
    return new Set(frames.map((frame) => frame.id));
  }

  /** Runs `count` quick rows of the key on the fast path; each must be answered there. */
  function quickRows(contextKey: string, count: number): void {
    for (let i = 0; i < count; i++) assert.equal(fastPath.run(row(contextKey, i, 0)), 'sent', `quick row ${i} of ${contextKey}`);
  }

  it('answers a proven LOAD row held past the budget where it ran, and moves a new script held as long', () => {
    assert.ok(PAUSE_MS < BUDGET_MS * PROVEN_BUDGETS, 'the pause must fit in the allowance');
    quickRows('load', PROVING_TASKS);
    const held = row('load', 7, PAUSE_MS);
    assert.equal(fastPath.run(held), 'sent', 'a proven row held 1.5 budgets was moved');
    assert.equal(fastPath.accepts('load', 16), true, 'the proven script lost the fast path');
    const fresh = row('new-script', 8, PAUSE_MS);
    assert.equal(fastPath.run(fresh), 'moved', 'a script with no record got more than the budget');
    assert.ok(answered().has(held.taskId), 'the held row was not answered on the fast path');
    // The allowance is used up: a script slow every time holds the main thread past the budget once.
    assert.equal(fastPath.run(row('load', 9, PAUSE_MS)), 'moved', 'the allowance served a second slow row in a row');
  });

  it('keeps a script made unique each call from taking the main thread from a proven LOAD', async () => {
    // A budget of 20 ms, so that the unproven share (UNPROVEN_SHARE_BUDGETS of it) fills in well under a second.
    const small = fastPathOnFiles(20, 1_000);
    try {
      for (let i = 0; i < PROVING_TASKS; i++) assert.equal(small.fastPath.run(row('load', i, 0)), 'sent');
      // Each its own key (a new app id each call), so no strikes to take: 7 ms each, 60 of them.
      for (let i = 0; i < 60; i++) small.fastPath.run(row(`unique-${i}`, i, 7));
      assert.equal(small.fastPath.accepts('unique-next', 16), false, 'unproven scripts kept the main thread past their share');
      assert.equal(small.fastPath.accepts('load', 16), true, 'the proven LOAD lost the main thread to them');
    } finally {
      await small.dispose();
    }
  });

  it('gives the allowance only after the proving rows, and takes it back from a row that outgrew it', () => {
    quickRows('short-record', PROVING_TASKS - 1);
    assert.equal(fastPath.run(row('short-record', 1, PAUSE_MS)), 'moved', 'the allowance came before its proving rows');
    quickRows('turns-slow', PROVING_TASKS);
    // Past the allowance too: moved, and the script is back on the budget alone.
    assert.equal(fastPath.run(row('turns-slow', 2, BUDGET_MS * PROVEN_BUDGETS * 2)), 'moved');
    assert.equal(fastPath.run(row('turns-slow', 3, PAUSE_MS)), 'moved', 'the allowance outlived a row that outgrew it');
  });
});
