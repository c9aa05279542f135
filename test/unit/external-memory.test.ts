/**
 * The front's external-memory sampler: a collection when native memory grows by a step over the floor,
 * and only one per step when the memory is really held (the collection frees nothing).
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';

import { collectOnExternalGrowth } from '../../src/ops/external-memory';

const MB = 1024 * 1024;
const STEP = { stepBytes: 64 * MB, intervalMs: 100 };

describe('collecting on external-memory growth', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setInterval'] }));
  afterEach(() => mock.timers.reset());

  /** Memory that follows `levels` one sample at a time; a collection frees `freed(bytes)`. */
  function run(levels: number[], freed: (bytes: number) => number): { collections: number; afters: number[] } {
    let bytes = levels[0] ?? 0;
    let collections = 0;
    const afters: number[] = [];
    const stop = collectOnExternalGrowth(
      { ...STEP, collected: ({ afterBytes }) => afters.push(afterBytes) },
      () => bytes,
      () => {
        collections++;
        bytes -= freed(bytes);
      },
    );
    for (const level of levels.slice(1)) {
      bytes = level;
      mock.timers.tick(STEP.intervalMs);
    }
    stop();
    return { collections, afters };
  }

  it('collects when memory grows by a step, and the garbage is gone', () => {
    const { collections, afters } = run([10 * MB, 40 * MB, 80 * MB], (bytes) => bytes - 10 * MB);
    assert.equal(collections, 1);
    assert.deepEqual(afters, [10 * MB]);
  });

  it('does not collect below a step', () => {
    assert.equal(run([10 * MB, 50 * MB, 73 * MB, 20 * MB], () => 0).collections, 0);
  });

  it('collects once per step of memory that is really held', () => {
    // Held rows grow 10 -> 200 MB and nothing is garbage: one collection at 80, one at 150.
    const levels = [10, 40, 80, 90, 120, 150, 170, 200].map((mb) => mb * MB);
    assert.equal(run(levels, () => 0).collections, 2);
  });

  it('follows memory down: a later step counts from the lower floor', () => {
    const levels = [10, 200, 210, 30, 60, 100].map((mb) => mb * MB);
    // 200 (first step over 10); held, floor 200; falls to 30 (new floor); 100 is a step over 30.
    assert.equal(run(levels, () => 0).collections, 2);
  });
});
