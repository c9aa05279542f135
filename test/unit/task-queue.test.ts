/** The front's task queue: fair between calls, retried tasks first, removal of a cancelled call's task. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { TaskQueue, type QueuedTask } from '../../src/task-queue';

let nextId = 1;
function task(callId: number): QueuedTask {
  const request = { callId, call: {} as never, chunks: [], rows: 1, firstRow: 0, budget: { spentMs: 0 } };
  return { id: nextId++, request, resolve: () => undefined, reject: () => undefined, retried: false, sentAt: 0, settled: false };
}

const calls = (tasks: (QueuedTask | undefined)[]): number[] => tasks.map((t) => t?.request.callId ?? -1);

describe('TaskQueue', () => {
  it('takes the calls in turn, each call in its own order', () => {
    const queue = new TaskQueue();
    const big = [task(1), task(1), task(1), task(1)];
    for (const t of big) queue.push(t);
    const small = task(2);
    queue.push(small);
    assert.equal(queue.length, 5);
    const order = [queue.shift(), queue.shift(), queue.shift(), queue.shift(), queue.shift()];
    // The small call's one task goes second, not fifth.
    assert.deepEqual(calls(order), [1, 2, 1, 1, 1]);
    assert.deepEqual(
      order.filter((t) => t?.request.callId === 1),
      big,
    );
    assert.equal(queue.shift(), undefined);
    assert.equal(queue.length, 0);
  });

  it('serves tasks put back at the head first, last one first', () => {
    const queue = new TaskQueue();
    queue.push(task(1));
    const a = task(2);
    const b = task(3);
    queue.unshift(a);
    queue.unshift(b);
    assert.deepEqual([queue.shift(), queue.shift()], [b, a]);
    assert.equal(queue.length, 1);
  });

  it('removes a task of a cancelled call, and drains everything', () => {
    const queue = new TaskQueue();
    const [x, y, z] = [task(1), task(1), task(2)];
    queue.push(x);
    queue.push(y);
    queue.push(z);
    queue.remove(x);
    assert.equal(queue.length, 2);
    assert.deepEqual(queue.drain(), [y, z]);
    assert.equal(queue.length, 0);
  });
});
