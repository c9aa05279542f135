/**
 * The crash-loop backoff (src/sandboxes/backoff.ts), fed a fake clock: as many deaths as there are
 * processes within the window are replaced at once, then each waits 100 ms, doubling, up to its
 * cap; a process that lived past the window ends the loop.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CrashBackoff } from '../../src/sandboxes/backoff';

describe('CrashBackoff', () => {
  it('replaces as many deaths as there are processes at once, then doubles from 100 ms up to 5 s', () => {
    const backoff = new CrashBackoff(2);
    const delays = Array.from({ length: 10 }, (_, i) => backoff.delayAfterDeathMs(i * 10));
    assert.deepEqual(delays, [0, 0, 100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
  });

  it('forgets deaths older than the window: a process that lived 10 s ends the loop', () => {
    const backoff = new CrashBackoff(1);
    assert.deepEqual(
      [0, 1, 2].map((nowMs) => backoff.delayAfterDeathMs(nowMs)),
      [0, 100, 200],
    );
    assert.equal(backoff.delayAfterDeathMs(2 + 10_001), 0);
    assert.equal(backoff.delayAfterDeathMs(2 + 10_002), 100);
  });

  it('counts a death exactly at the edge of the window as recent', () => {
    const backoff = new CrashBackoff(1, 1_000, 5_000);
    backoff.delayAfterDeathMs(0);
    assert.equal(backoff.delayAfterDeathMs(1_000), 100);
    // At 2,000 the death at 0 is past the window, the one at 1,000 exactly on its edge.
    assert.equal(backoff.delayAfterDeathMs(2_000), 100);
  });
});
