/**
 * A call's time budget as the front sees it (src/calls/call-budget.ts): what its results and its
 * lost attempts spend, what is sent with each task, what the log line reports, and the DEADLINE_EXCEEDED
 * the pipeline fails with once nothing is left. Pure: the milliseconds are plain numbers, no clock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CallBudget } from '../../src/calls/call-budget';

describe('CallBudget', () => {
  it('spends the script time of each result and the wall time of each lost attempt', () => {
    const budget = new CallBudget(1_000);
    budget.addResult(120, false);
    budget.addLostAttempt(300);
    budget.addResult(80.5, false);
    assert.equal(budget.spentMs, 500.5);
    assert.equal(budget.remainingMs, 499.5);
    assert.equal(budget.scriptMs, 200.5, 'the log line reports script time only, not lost attempts');
    assert.equal(budget.timedOut, false);
  });

  it('lets a task start while time is left, and fails the next one once it is spent, naming the limit', () => {
    const budget = new CallBudget(1_000);
    budget.addResult(999, false);
    assert.equal(budget.checkBeforeTask(), null);
    budget.addLostAttempt(1);
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

  it('never gives time back for a negative measurement', () => {
    const budget = new CallBudget(1_000);
    budget.addLostAttempt(-40);
    assert.equal(budget.spentMs, 0);
  });
});
