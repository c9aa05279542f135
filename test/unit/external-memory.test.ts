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
    let nowMs = 0;
    const afters: number[] = [];
    const stop = collectOnExternalGrowth(
      { ...STEP, collected: ({ afterBytes }) => afters.push(afterBytes) },
      () => bytes,
      () => {
        collections++;
        bytes -= freed(bytes);
      },
      () => nowMs,
    );
    for (const level of levels.slice(1)) {
      bytes = level;
      nowMs += STEP.intervalMs;
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

  it('looks again at memory that was held once it is no longer held, with nothing growing', () => {
    let bytes = 10 * MB;
    let held = true;
    let nowMs = 0;
    const afters: number[] = [];
    const stop = collectOnExternalGrowth(
      { ...STEP, collected: ({ afterBytes }) => afters.push(afterBytes) },
      () => bytes,
      () => {
        if (!held) bytes = 10 * MB;
      },
      () => nowMs,
    );
    const tick = (): void => {
      nowMs += STEP.intervalMs;
      mock.timers.tick(STEP.intervalMs);
    };
    // Rows of calls in flight reach 200 MB: one collection, which frees nothing.
    bytes = 200 * MB;
    tick();
    assert.deepEqual(afters, [200 * MB]);
    // The calls end: the 200 MB is garbage, and nothing grows to trigger a collection. The recheck
    // (1 s after the first) collects it.
    held = false;
    for (let i = 0; i < 12; i++) tick();
    stop();
    assert.deepEqual(afters, [200 * MB, 10 * MB]);
  });

  it('follows memory down: a later step counts from the lower floor', () => {
    const levels = [10, 200, 210, 30, 60, 100].map((mb) => mb * MB);
    // 200 (first step over 10); held, floor 200; falls to 30 (new floor); 100 is a step over 30.
    assert.equal(run(levels, () => 0).collections, 2);
  });
});
