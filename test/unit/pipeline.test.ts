/**
 * The call pipeline on its own (src/calls/pipeline.ts), over a fake stream and a fake task runner that
 * finishes tasks out of order on command: request order, the bound on tasks in flight, both sides of
 * backpressure, held tables, failing, cancelling, the modes that run once, and the cache trailer.
 * Nothing here waits for time: every step is a command, then the microtasks it queued.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { CACHE_HEADER } from '../../src/calls/pipeline';
import { TABLE_HEADER } from '../../src/calls/table';
import { PluginError } from '../../src/contract/errors';
import { MAX_TABLE_KEY_BYTES } from '../../src/contract/task';
import { decodeMessage, messages } from '../../src/grpc/proto';
import { bundle, failure, settle, startPipeline, success, tableResult } from '../helpers/pipeline-fakes';

function tableValues(replies: Uint8Array[]): number[] {
  return replies.flatMap((bytes) =>
    (decodeMessage(messages.BundledRows, bytes) as { rows: { duals: { numData: number }[] }[] }).rows.map(
      (r) => r.duals[0]?.numData ?? NaN,
    ),
  );
}

describe('CallPipeline: order', () => {
  it('writes replies strictly in request order when tasks finish out of order', async () => {
    const { stream, runner, held, outcome } = startPipeline();
    stream.emit('data', bundle(4));
    stream.emit('end');
    assert.equal(runner.tasks.length, 4);
    assert.deepEqual(
      runner.tasks.map((t) => t.request.firstRow),
      [0, 1, 2, 3],
    );
    for (const [n, expected] of [
      [3, []],
      [1, []],
      [0, [0, 1]],
      [2, [0, 1, 2, 3]],
    ] as const) {
      runner.finish(n);
      await settle();
      assert.deepEqual(stream.writtenTasks, expected, `after task ${n}`);
    }
    const { error, summary } = await outcome;
    assert.equal(error, null);
    assert.equal(summary.rowsIn, 4);
    assert.equal(summary.rowsOut, 4);
    assert.deepEqual(stream.trailers?.get(CACHE_HEADER), []);
    assert.deepEqual(stream.errors, []);
    assert.equal(held.bytes, 0);
  });

  it('answers qlik-cache: no-store when any task used a non-deterministic source', async () => {
    const { stream, runner, outcome } = startPipeline();
    stream.emit('data', bundle(2));
    stream.emit('end');
    runner.finish(1, success(1, 1, { nondeterministic: true }));
    runner.finish(0);
    await outcome;
    assert.deepEqual(stream.trailers?.get(CACHE_HEADER), ['no-store']);
    assert.deepEqual((await outcome).summary.nondeterministic, true);
  });
});

describe('CallPipeline: backpressure', () => {
  it('dispatches at most maxInFlight tasks, pauses reads while saturated and resumes them', async () => {
    const { stream, runner, outcome } = startPipeline({ maxInFlight: 2 });
    stream.emit('data', bundle(5));
    assert.equal(runner.tasks.length, 2);
    assert.equal(stream.paused, true);
    for (const n of [1, 0, 2]) {
      runner.finish(n);
      await settle();
      assert.ok(runner.open <= 2, `${runner.open} tasks in flight after task ${n}`);
    }
    assert.equal(runner.tasks.length, 5);
    assert.equal(stream.paused, false, 'every row is dispatched: reading again');
    stream.emit('end');
    runner.finish(4);
    runner.finish(3);
    assert.equal((await outcome).error, null);
    assert.deepEqual(stream.writtenTasks, [0, 1, 2, 3, 4]);
  });

  it('dispatches nothing while gRPC needs a drain, and continues after the drain', async () => {
    const { stream, runner, outcome } = startPipeline({ maxInFlight: 1 });
    stream.emit('data', bundle(3));
    stream.emit('end');
    stream.writableNeedDrain = true;
    runner.finish(0);
    await settle();
    assert.deepEqual(stream.writtenTasks, [0]);
    assert.equal(runner.tasks.length, 1, 'no new task while writes are blocked');
    assert.equal(stream.paused, true);
    stream.drain();
    assert.equal(runner.tasks.length, 2);
    runner.finish(1);
    await settle();
    runner.finish(2);
    assert.equal((await outcome).error, null);
  });

  it('dispatches nothing while a reply message is still on its way, and continues when it is taken', async () => {
    // A reply is 4 bytes: one unfinished write passes maxReplyBytes 3.
    const { stream, runner, held, outcome } = startPipeline({ maxInFlight: 1, maxReplyBytes: 3 });
    stream.holdWrites = true;
    stream.emit('data', bundle(2));
    stream.emit('end');
    runner.finish(0);
    await settle();
    assert.equal(runner.tasks.length, 1);
    assert.ok(held.bytes > 0, 'the reply not taken yet is counted');
    stream.completeWrites();
    assert.equal(runner.tasks.length, 2);
    runner.finish(1);
    await settle();
    stream.completeWrites();
    assert.equal((await outcome).error, null);
    assert.equal(held.bytes, 0);
  });
});

describe('CallPipeline: tables', () => {
  it('holds table results until the last row, then writes them joined with their header', async () => {
    const { stream, runner, held, outcome } = startPipeline({ tableAllowed: true });
    stream.emit('data', bundle(3));
    stream.emit('end');
    runner.finish(2, tableResult(2));
    runner.finish(0, tableResult(0));
    await settle();
    assert.deepEqual(stream.written, []);
    runner.finish(1, tableResult(1));
    const { error, summary } = await outcome;
    assert.equal(error, null);
    assert.equal(summary.table, true);
    assert.equal(summary.rowsOut, 3);
    assert.equal(stream.sentMetadata.length, 1);
    assert.equal(stream.sentMetadata[0]?.get(TABLE_HEADER).length, 1);
    assert.deepEqual(tableValues(stream.written), [0, 1, 2]);
    assert.equal(held.bytes, 0);
  });

  it('streams once a result is not a table, held tables first', async () => {
    const { stream, runner, outcome } = startPipeline({ tableAllowed: true });
    stream.emit('data', bundle(3));
    stream.emit('end');
    runner.finish(0, tableResult(0));
    await settle();
    assert.deepEqual(stream.written, []);
    runner.finish(1);
    await settle();
    assert.equal(stream.written.length, 2);
    assert.deepEqual(stream.writtenTasks.slice(1), [1]);
    runner.finish(2, tableResult(2));
    const { summary } = await outcome;
    assert.equal(summary.table, false);
    assert.equal(stream.written.length, 3, 'a table after streaming began is written as it is');
    assert.deepEqual(stream.sentMetadata, []);
  });

  it('writes tables of mixed shapes (arrays and objects) as they are, at the end', async () => {
    const { stream, runner, outcome } = startPipeline({ tableAllowed: true });
    stream.emit('data', bundle(2));
    stream.emit('end');
    runner.finish(0, tableResult(0, 'array'));
    runner.finish(1, tableResult(1, 'object'));
    const { error, summary } = await outcome;
    assert.equal(error, null);
    assert.equal(summary.table, false);
    assert.deepEqual(stream.sentMetadata, []);
    assert.equal(stream.written.length, 2);
  });

  it('streams table-shaped results when the call may not answer with a table', async () => {
    const { stream, runner, outcome } = startPipeline({ tableAllowed: false });
    stream.emit('data', bundle(1));
    runner.finish(0, tableResult(0));
    await settle();
    assert.equal(stream.written.length, 1);
    stream.emit('end');
    assert.equal((await outcome).summary.table, false);
  });
});

describe('CallPipeline: table names', () => {
  it("counts each held chunk's column names in the call's held bytes", async () => {
    const name = 'k'.repeat(8_000);
    const { stream, runner, held } = startPipeline({ tableAllowed: true });
    stream.emit('data', bundle(3));
    for (const n of [0, 1, 2]) runner.finish(n, tableResult(n, 'object', name));
    await settle();
    assert.deepEqual(stream.written, [], 'held until the last row');
    assert.ok(held.bytes >= 3 * name.length, `held ${held.bytes} bytes for three chunks named by ${name.length} characters each`);
    stream.emit('cancelled');
    await settle();
  });

  it('fails once the names of all its chunks pass MAX_TABLE_KEY_BYTES, naming the bounds, and gives its bytes back', async () => {
    const { stream, runner, held, outcome } = startPipeline({ tableAllowed: true });
    stream.emit('data', bundle(3));
    // Each chunk alone is within the bounds; together they pass them.
    for (const n of [0, 1, 2]) runner.finish(n, tableResult(n, 'object', String(n).repeat(MAX_TABLE_KEY_BYTES / 2)));
    await settle();
    assert.equal(stream.errors.length, 1, 'failed while the client is still sending');
    assert.equal(stream.errors[0]?.code, status.RESOURCE_EXHAUSTED);
    const { error } = await outcome;
    assert.equal(error?.code, 'RESOURCE_EXHAUSTED');
    assert.match(stream.errors[0]?.details ?? '', /more than 1024 columns or more than 8192 bytes of column names/);
    assert.deepEqual(stream.written, []);
    assert.equal(held.bytes, 0);
  });
});

describe('CallPipeline: failing', () => {
  it('fails the call once with the task status, drops the rest and gives its held bytes back', async () => {
    const { stream, runner, held, outcome } = startPipeline({ maxInFlight: 3 });
    stream.emit('data', bundle(6));
    assert.equal(stream.paused, true);
    runner.finish(2);
    await settle();
    runner.finish(1, failure('INVALID_ARGUMENT', 'Error: boom (at row 1)'));
    await settle();
    runner.finish(0);
    runner.finish(3, failure('DEADLINE_EXCEEDED', 'late'));
    await settle();
    const { error } = await outcome;
    assert.equal(error?.code, 'INVALID_ARGUMENT');
    assert.equal(stream.errors.length, 1);
    assert.equal(stream.errors[0]?.code, status.INVALID_ARGUMENT);
    assert.equal(stream.errors[0]?.details, 'Error: boom (at row 1)');
    // The failure waited for task 0 (before the failing chunk): its rows went out, nothing after them.
    assert.equal(stream.written.length, 1);
    assert.equal(runner.tasks.length, 4, 'no task dispatched after the failure');
    assert.ok(
      runner.tasks.every((t) => t.request.signal?.aborted),
      'queued tasks are told to drop',
    );
    assert.equal(runner.closedCalls.length, 1);
    assert.equal(stream.paused, false);
    assert.equal(held.bytes, 0);
  });

  it('a script error names the earliest failing row, whichever chunk finished first', async () => {
    const { stream, runner, held, outcome } = startPipeline({ maxInFlight: 3 });
    stream.emit('data', bundle(3));
    stream.emit('end');
    runner.finish(2, failure('INVALID_ARGUMENT', 'TypeError: late (at row 2)'));
    await settle();
    runner.finish(1, failure('INVALID_ARGUMENT', 'TypeError: early (at row 1)'));
    await settle();
    assert.equal(stream.errors.length, 0, 'chunk 0 may still fail earlier');
    runner.finish(0);
    const { error } = await outcome;
    assert.equal(error?.message, 'TypeError: early (at row 1)');
    assert.equal(stream.errors.length, 1);
    assert.equal(stream.errors[0]?.code, status.INVALID_ARGUMENT);
    assert.equal(held.bytes, 0);
  });

  it('fails the call with the error of a task that could not run', async () => {
    const { stream, runner, held, outcome } = startPipeline();
    stream.emit('data', bundle(1));
    runner.fail(0, new PluginError('UNAVAILABLE', 'the plugin is shutting down'));
    const { error } = await outcome;
    assert.equal(error?.code, 'UNAVAILABLE');
    assert.equal(stream.errors[0]?.code, status.UNAVAILABLE);
    assert.equal(held.bytes, 0);
  });

  it('stops on cancellation without emitting an error, and ignores results that come later', async () => {
    const { stream, runner, held, outcome } = startPipeline({ maxInFlight: 2 });
    stream.emit('data', bundle(3));
    stream.emit('cancelled');
    const { error } = await outcome;
    assert.equal(error?.code, 'CANCELLED');
    assert.deepEqual(stream.errors, []);
    assert.ok(runner.task(0).request.signal?.aborted);
    runner.finish(1);
    runner.finish(0);
    await settle();
    assert.deepEqual(stream.written, []);
    assert.equal(held.bytes, 0);
    assert.equal(held.accounts, 0);
  });

  it('fails an aggregation whose rows pass the sandbox heap before running it', async () => {
    const { stream, runner, outcome } = startPipeline({ mode: 'aggregate' });
    stream.emit('data', Buffer.concat(Array.from({ length: 9 }, () => bundle(100_000))));
    const { error } = await outcome;
    assert.equal(error?.code, 'RESOURCE_EXHAUSTED');
    assert.equal(stream.errors[0]?.code, status.RESOURCE_EXHAUSTED);
    assert.equal(runner.tasks.length, 0);
  });
});

describe('CallPipeline: modes that run once', () => {
  it('runs an aggregation as one task over every row, at the end, without pausing reads', async () => {
    const { stream, runner, outcome } = startPipeline({ mode: 'aggregate' });
    stream.emit('data', bundle(3));
    stream.emit('data', bundle(2));
    assert.equal(runner.tasks.length, 0);
    assert.equal(stream.paused, false);
    stream.emit('end');
    assert.equal(runner.tasks.length, 1);
    assert.equal(runner.task(0).request.rows, 5);
    runner.finish(0, success(0, 1));
    const { error, summary } = await outcome;
    assert.equal(error, null);
    assert.equal(summary.rowsIn, 5);
    assert.deepEqual(stream.writtenTasks, [0]);
  });

  it('runs a call without parameters once, whatever rows arrive', async () => {
    const { stream, runner, outcome } = startPipeline({ mode: 'once' });
    stream.emit('data', bundle(2));
    stream.emit('end');
    assert.equal(runner.tasks.length, 1);
    assert.equal(runner.task(0).request.rows, 0);
    runner.finish(0, success(0, 1));
    assert.equal((await outcome).error, null);
    assert.deepEqual(stream.writtenTasks, [0]);
  });
});
