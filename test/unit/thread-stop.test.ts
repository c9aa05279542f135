/** The main thread's stop reaches the one thread running the task, and only it (workers/thread-stop.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { claimStopSlot, newStopCells, STOP_BELL, STOP_RUNNING, STOP_TASK, TaskStops } from '../../workers/thread-stop';

describe('stop cells', () => {
  it('a stop is written to the thread running the task and rings its bell; others are untouched', () => {
    const cells = newStopCells();
    const view = new Int32Array(cells);
    const first = claimStopSlot(cells);
    const second = claimStopSlot(cells);
    assert.notEqual(first, second);
    Atomics.store(view, first + STOP_RUNNING, 7);
    Atomics.store(view, second + STOP_RUNNING, 8);
    assert.equal(new TaskStops(cells).stop(8), true);
    assert.equal(Atomics.load(view, second + STOP_TASK), 8);
    assert.equal(Atomics.load(view, second + STOP_BELL), 1);
    assert.equal(Atomics.load(view, first + STOP_TASK), 0);
    assert.equal(Atomics.load(view, first + STOP_BELL), 0);
  });

  it('a task no thread runs (not started, or done) rings nothing: its control cell stops it', () => {
    const cells = newStopCells();
    const view = new Int32Array(cells);
    const slot = claimStopSlot(cells);
    Atomics.store(view, slot + STOP_RUNNING, 3);
    assert.equal(new TaskStops(cells).stop(4), false);
    assert.equal(Atomics.load(view, slot + STOP_BELL), 0);
  });

  it('task ids past 2^31 match as the thread stores them', () => {
    const cells = newStopCells();
    const view = new Int32Array(cells);
    const slot = claimStopSlot(cells);
    const taskId = 2 ** 31 + 5;
    Atomics.store(view, slot + STOP_RUNNING, taskId | 0);
    assert.equal(new TaskStops(cells).stop(taskId), true);
    assert.equal(Atomics.load(view, slot + STOP_TASK), taskId | 0);
  });
});
