/**
 * READY and RETIRE payloads as the front reads them (src/contract/control-frames.ts): a sandbox
 * process is not trusted, so each field is checked, and every other shape throws (the front then
 * ends that process as a protocol error: test/unit/pool.test.ts).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { HEADER_BYTES } from '../../src/contract/channel';
import { parseReady, parseRetirement, readyFrame, retireFrame } from '../../src/contract/control-frames';

const json = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));

describe('READY payloads', () => {
  it('reads back what a sandbox writes', () => {
    assert.deepEqual(parseReady(readyFrame(3).subarray(HEADER_BYTES), 3), { threads: 3 });
  });

  for (const [name, payload] of [
    ['another thread count', json({ threads: 4 })],
    ['a thread count as text', json({ threads: '3' })],
    ['no object', json([3])],
    ['null', json(null)],
    ['not JSON', Buffer.from('{threads')],
  ] as const) {
    it(`refuses ${name}`, () => assert.throws(() => parseReady(payload, 3)));
  }
});

describe('RETIRE payloads', () => {
  const fine = { reason: 'stuck', taskIds: [7], detail: 'a sandbox thread stopped responding' };

  it('reads back what a sandbox writes, its detail cut to one line', () => {
    assert.deepEqual(parseRetirement(retireFrame({ ...fine, reason: 'fatal' }).subarray(HEADER_BYTES)), { ...fine, reason: 'fatal' });
    assert.equal(parseRetirement(json({ ...fine, detail: `first\nsecond ${'x'.repeat(900)}` })).detail, 'first');
  });

  for (const [name, value] of [
    ['an unknown reason', { ...fine, reason: 'bored' }],
    ['task ids that are not a list', { ...fine, taskIds: 7 }],
    ['a task id that is not an integer', { ...fine, taskIds: [1.5] }],
    ['a negative task id', { ...fine, taskIds: [-1] }],
    ['a task id past u32', { ...fine, taskIds: [2 ** 32] }],
    ['a task id as text', { ...fine, taskIds: ['7'] }],
    ['more task ids than any process runs', { ...fine, taskIds: Array.from({ length: 1_025 }, (_, i) => i) }],
    ['no detail', { reason: 'stuck', taskIds: [] }],
    ['a list', [fine]],
  ] as const) {
    it(`refuses ${name}`, () => assert.throws(() => parseRetirement(json(value)), /RETIRE frame/));
  }
});
