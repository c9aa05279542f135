/**
 * A call's time budget as the front sees it (src/calls/call-budget.ts): what its results spend, what
 * is sent with each task, what the log line reports, and the DEADLINE_EXCEEDED
 * the pipeline fails with once nothing is left. Pure: the milliseconds are plain numbers, no clock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CallBudget } from '../../src/calls/call-budget';

describe('CallBudget', () => {
  it('spends the script time of each result', () => {
    const budget = new CallBudget(1_000);
    budget.addResult(120, false);
    budget.addResult(80.5, false);
    assert.equal(budget.spentMs, 200.5);
    assert.equal(budget.remainingMs, 799.5);
    assert.equal(budget.scriptMs, 200.5);
    assert.equal(budget.timedOut, false);
  });

  it('lets a task start while time is left, and fails the next one once it is spent, naming the limit', () => {
    const budget = new CallBudget(1_000);
    budget.addResult(999, false);
    assert.equal(budget.checkBeforeTask(), null);
    budget.addResult(1, false);
    const error = budget.checkBeforeTask();
    assert.equal(error?.code, 'DEADLINE_EXCEEDED');
    assert.equal(error?.message, 'the script ran past its time limit of 1000 ms (SSE_SCRIPT_TIMEOUT_MS)');
    assert.equal(budget.timedOut, true);
    assert.equal(budget.remainingMs, 0);
  });

  it("records a result its sandbox stopped at the call's limit", () => {
    const budget = new CallBudget(1_000);
    budget.addResult(1_000, true);
    assert.equal(budget.timedOut, true);
  });
});
