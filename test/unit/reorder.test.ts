/** The reorder buffer (src/calls/reorder.ts): results in, by index, in any order; results out in order. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ReorderBuffer } from '../../src/calls/reorder';

function drain(buffer: ReorderBuffer<string>): string[] {
  const out: string[] = [];
  for (let next = buffer.shift(); next !== undefined; next = buffer.shift()) out.push(next);
  return out;
}

describe('ReorderBuffer', () => {
  it('releases nothing while the next index is missing, then everything in order', () => {
    const buffer = new ReorderBuffer<string>();
    buffer.put(2, 'c');
    buffer.put(1, 'b');
    assert.deepEqual(drain(buffer), []);
    assert.equal(buffer.size, 2);
    buffer.put(0, 'a');
    assert.deepEqual(drain(buffer), ['a', 'b', 'c']);
    assert.equal(buffer.size, 0);
    assert.equal(buffer.next, 3);
  });

  it('stops at a gap and continues when it is filled', () => {
    const buffer = new ReorderBuffer<string>();
    buffer.put(0, 'a');
    buffer.put(2, 'c');
    assert.deepEqual(drain(buffer), ['a']);
    buffer.put(1, 'b');
    assert.deepEqual(drain(buffer), ['b', 'c']);
  });

  it('refuses an index that already arrived or was released', () => {
    const buffer = new ReorderBuffer<string>();
    buffer.put(0, 'a');
    assert.throws(() => buffer.put(0, 'again'));
    drain(buffer);
    assert.throws(() => buffer.put(0, 'late'));
  });

  it('drops what waits on clear', () => {
    const buffer = new ReorderBuffer<string>();
    buffer.put(1, 'b');
    buffer.clear();
    assert.equal(buffer.size, 0);
    buffer.put(0, 'a');
    assert.deepEqual(drain(buffer), ['a']);
  });
});
