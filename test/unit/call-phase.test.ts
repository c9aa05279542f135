/**
 * The phase of one call (src/calls/call-phase.ts): the transitions the pipeline may make, and that any
 * other is refused rather than silently taken. Pure: no stream, no clock.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CallPhase, type Phase, type PhaseName } from '../../src/calls/call-phase';
import { PluginError } from '../../src/contract/errors';

const error = new PluginError('INVALID_ARGUMENT', 'TypeError: x (at row 3)');
const phase = (name: PhaseName): Phase => (name === 'failing' ? { name, chunk: 3, error } : { name });

/** A CallPhase moved along `path` from reading. */
function at(...path: PhaseName[]): CallPhase {
  const state = new CallPhase();
  for (const name of path) state.moveTo(phase(name));
  return state;
}

describe('CallPhase', () => {
  it('starts reading, and takes rows and starts tasks only while reading or draining', () => {
    assert.equal(at().name, 'reading');
    assert.equal(at().running, true);
    assert.equal(at('draining').running, true);
    assert.equal(at('failing').running, false);
    assert.equal(at('finished').running, false);
  });

  it('allows reading → draining → finished, a script error from either, and an earlier one replacing it', () => {
    assert.equal(at('draining', 'finished').name, 'finished');
    assert.equal(at('failing', 'finished').name, 'finished');
    assert.equal(at('draining', 'failing', 'finished').name, 'finished');
    const state = at('failing');
    state.moveTo({ name: 'failing', chunk: 1, error });
    assert.deepEqual(state.current, { name: 'failing', chunk: 1, error });
  });

  for (const [path, next] of [
    [['draining'], 'reading'],
    [['draining'], 'draining'],
    [['failing'], 'draining'],
    [['failing'], 'reading'],
    [['finished'], 'finished'],
    [['finished'], 'failing'],
    [['draining', 'finished'], 'draining'],
  ] as const) {
    it(`refuses ${[...path].join(' → ')} → ${next}, and stays where it was`, () => {
      const state = at(...path);
      assert.throws(() => state.moveTo(phase(next)), new RegExp(`cannot go from ${path.at(-1)} to ${next}`));
      assert.equal(state.name, path.at(-1));
    });
  }
});
