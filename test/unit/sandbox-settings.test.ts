/** How threads are split over sandbox processes, and the default memory fence of each. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { defaultSandboxMemoryMb, threadSplit } from '../../src/sandboxes/supervisor';

describe('sandbox process settings', () => {
  it('splits the threads as evenly as they go', () => {
    assert.deepEqual(threadSplit(2, 2), [1, 1]);
    assert.deepEqual(threadSplit(3, 2), [2, 1]);
    assert.deepEqual(threadSplit(8, 4), [2, 2, 2, 2]);
    assert.deepEqual(threadSplit(5, 1), [5]);
  });

  it('fences a process at 160 MB + isolates x (2 x SSE_MEMORY_LIMIT_MB + 96 MB)', () => {
    assert.equal(defaultSandboxMemoryMb(1, 128, 0), 512);
    assert.equal(defaultSandboxMemoryMb(2, 128, 0), 864);
    assert.equal(defaultSandboxMemoryMb(1, 32, 0), 320);
  });

  it("counts the main thread's isolate when the fast path is on", () => {
    assert.equal(defaultSandboxMemoryMb(1, 128, 10), 864);
    assert.equal(defaultSandboxMemoryMb(2, 128, 10), 1216);
    assert.equal(defaultSandboxMemoryMb(1, 32, 1), 480);
  });
});
