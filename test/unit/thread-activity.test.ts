/** A sandbox thread's between-task work is visible to its watchdog, which calls it stuck past its limit + grace. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ActivityWatch, newActivityCells, threadActivity } from '../../workers/thread-activity';

const GRACE_MS = 1_000;

describe('thread activity between tasks', () => {
  it('a thread busy between tasks is seen, and called stuck only past its time limit + grace', () => {
    const cells = newActivityCells();
    const thread = threadActivity(cells);
    const watch = new ActivityWatch(cells);
    assert.equal(watch.check(0, GRACE_MS), 'idle');
    thread.enter(500);
    assert.equal(watch.check(100, GRACE_MS), 'busy');
    assert.equal(watch.check(1_600, GRACE_MS), 'busy');
    assert.equal(watch.check(1_601, GRACE_MS), 'stuck');
    thread.leave();
    assert.equal(watch.check(1_700, GRACE_MS), 'idle');
  });

  it('a new busy period starts its own clock, and each thread has its own cells', () => {
    const cells = newActivityCells();
    const first = threadActivity(cells);
    const second = threadActivity(cells);
    const watch = new ActivityWatch(cells);
    first.enter(500);
    assert.equal(watch.check(0, GRACE_MS), 'busy');
    first.leave();
    first.enter(500);
    assert.equal(watch.check(1_400, GRACE_MS), 'busy', 'the second period was first seen at 1400');
    first.leave();
    second.enter(100);
    assert.equal(watch.check(1_500, GRACE_MS), 'busy');
    assert.equal(watch.check(2_601, GRACE_MS), 'stuck');
  });
});
