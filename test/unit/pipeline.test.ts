/**
 * The call pipeline on its own (src/calls/pipeline.ts), over a fake stream and a fake task runner that
 * finishes tasks out of order on command: request order, the bound on tasks in flight, both sides of
 * backpressure, held tables, failing, cancelling, the modes that run once, the cache trailer, each
 * phase and what a transition out of it gives back, and the call's shared time budget.
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

/**
 * The phases of a call (src/calls/call-phase.ts) and what each transition gives back. Most of these run
 * with an account the stream does not close (accountClosedByStream: false), so held.bytes shows exactly
 * what the pipeline itself released, not what closing the account swept up.
 */
describe('CallPipeline: phases', () => {
  it('reads, drains after the last row, finishes once every result is written, and its one account closes with the stream', async () => {
    const { pipeline, stream, runner, held, outcome } = startPipeline({ maxInFlight: 2 });
    stream.emit('data', bundle(3));
    assert.equal(pipeline.phase, 'reading');
    assert.equal(held.accounts, 1, "the call's rows are in its one account");
    stream.emit('end');
    assert.equal(pipeline.phase, 'draining');
    runner.finish(0);
    runner.finish(1);
    await settle();
    assert.equal(pipeline.phase, 'draining', 'the last task is still to run');
    runner.finish(2);
    assert.equal((await outcome).error, null);
    assert.equal(pipeline.phase, 'finished');
    assert.deepEqual(stream.writtenTasks, [0, 1, 2]);
    assert.equal(held.bytes, 0);
    assert.equal(held.accounts, 0);
  });

  it('cancelled while reading: queued tasks are told to drop, and rows and results are given back as tasks settle', async () => {
    const { pipeline, stream, runner, held, outcome } = startPipeline({ maxInFlight: 2, accountClosedByStream: false });
    stream.emit('data', bundle(4));
    runner.finish(1);
    await settle();
    assert.ok(held.bytes > 0);
    stream.emit('cancelled');
    assert.equal(pipeline.phase, 'finished');
    const { error } = await outcome;
    assert.equal(error?.code, 'CANCELLED');
    assert.deepEqual(stream.errors, [], 'a cancelled call is not answered');
    assert.ok(runner.tasks.every((t) => t.request.signal?.aborted));
    assert.ok(held.bytes > 0, 'the rows of the task still running are held until it settles');
    const started = runner.tasks.length;
    runner.finish(0);
    runner.finish(2);
    await settle();
    assert.deepEqual(stream.written, [], 'task 1 waited for task 0: nothing was in order to write');
    assert.equal(started, 3, 'task 1 finishing made room for task 2');
    assert.equal(runner.tasks.length, started, 'nothing started after the cancel');
    assert.equal(held.bytes, 0);
    assert.equal(stream.paused, false);
  });

  it('cancelled while its tasks run after the last row: it ends at once and ignores their results', async () => {
    const { pipeline, stream, runner, held, outcome } = startPipeline({ accountClosedByStream: false });
    stream.emit('data', bundle(3));
    stream.emit('end');
    runner.finish(2);
    await settle();
    assert.equal(pipeline.phase, 'draining');
    stream.emit('cancelled');
    assert.equal((await outcome).error?.code, 'CANCELLED');
    runner.finish(0);
    runner.finish(1);
    await settle();
    assert.deepEqual(stream.written, [], 'not even the results that were in order by then');
    assert.equal(held.bytes, 0);
  });

  it('cancelled while table chunks are held: nothing is written, no table header is sent, and the chunks are given back', async () => {
    const { stream, runner, held, outcome } = startPipeline({ tableAllowed: true, accountClosedByStream: false });
    stream.emit('data', bundle(3));
    runner.finish(0, tableResult(0));
    runner.finish(2, tableResult(2));
    await settle();
    stream.emit('cancelled');
    runner.finish(1, tableResult(1));
    await settle();
    assert.equal((await outcome).error?.code, 'CANCELLED');
    assert.deepEqual(stream.written, []);
    assert.deepEqual(stream.sentMetadata, []);
    assert.equal(held.bytes, 0);
  });

  it('cancelled while its joined table is on its way to the client: the replies stay counted until the stream is done', async () => {
    const { pipeline, stream, runner, held, outcome } = startPipeline({ tableAllowed: true });
    stream.holdWrites = true;
    stream.emit('data', bundle(2));
    stream.emit('end');
    runner.finish(0, tableResult(0));
    runner.finish(1, tableResult(1));
    const { error, summary } = await outcome;
    assert.equal(error, null, 'the call answered in full on its side');
    assert.equal(summary.table, true);
    assert.equal(pipeline.phase, 'finished');
    assert.ok(held.bytes > 0, 'the table replies the client has not taken are counted');
    assert.equal(held.accounts, 1);
    stream.emit('cancelled');
    assert.equal(held.bytes, 0);
    assert.equal(held.accounts, 0);
    assert.deepEqual(stream.errors, []);
  });

  it('a script error in the first chunk fails the call at once while later chunks run, and their results are dropped', async () => {
    const { pipeline, stream, runner, held, outcome } = startPipeline({ maxInFlight: 3, accountClosedByStream: false });
    stream.emit('data', bundle(3));
    stream.emit('end');
    runner.finish(0, failure('INVALID_ARGUMENT', 'TypeError: x is not a function (at row 0)'));
    await settle();
    assert.equal(pipeline.phase, 'finished', 'no earlier chunk can fail before it');
    assert.equal(stream.errors[0]?.details, 'TypeError: x is not a function (at row 0)');
    assert.ok(runner.tasks.every((t) => t.request.signal?.aborted));
    runner.finish(1);
    runner.finish(2);
    await settle();
    assert.equal((await outcome).error?.code, 'INVALID_ARGUMENT');
    assert.deepEqual(stream.written, []);
    assert.equal(stream.errors.length, 1);
    assert.equal(held.bytes, 0);
  });

  it('a script error in a later chunk waits in failing: nothing more starts, and the call fails once the chunks before it finish', async () => {
    const { pipeline, stream, runner, held, outcome } = startPipeline({ maxInFlight: 2, accountClosedByStream: false });
    stream.emit('data', bundle(4));
    runner.finish(1, failure('INVALID_ARGUMENT', 'RangeError: bad (at row 1)'));
    await settle();
    assert.equal(pipeline.phase, 'failing');
    assert.equal(runner.tasks.length, 2, 'no task starts though the pool has room');
    assert.deepEqual(stream.errors, []);
    stream.emit('end');
    assert.equal(pipeline.phase, 'failing', 'the end of input changes nothing');
    runner.finish(0);
    const { error } = await outcome;
    assert.equal(error?.message, 'RangeError: bad (at row 1)');
    assert.equal(pipeline.phase, 'finished');
    assert.deepEqual(stream.writtenTasks, [0], 'the rows before the failing one were answered');
    assert.equal(held.bytes, 0);
  });

  it('a client that stops reading: nothing more is produced, reads pause, and cancelling gives everything back', async () => {
    // A reply is 4 bytes: one not taken passes maxReplyBytes 3.
    const { pipeline, stream, runner, held, outcome } = startPipeline({ maxInFlight: 1, maxReplyBytes: 3 });
    stream.holdWrites = true;
    stream.emit('data', bundle(3));
    runner.finish(0);
    await settle();
    assert.deepEqual(stream.writtenTasks, [0]);
    assert.equal(runner.tasks.length, 1, 'no task starts while the client takes nothing');
    assert.equal(stream.paused, true);
    assert.equal(pipeline.phase, 'reading');
    assert.ok(held.bytes > 0);
    stream.emit('cancelled');
    assert.equal((await outcome).error?.code, 'CANCELLED');
    assert.equal(stream.paused, false);
    assert.equal(held.bytes, 0);
    assert.equal(held.accounts, 0);
  });

  it("a failed call's replies already written stay counted until the stream has finished with them", async () => {
    const { stream, runner, held, outcome } = startPipeline({ maxInFlight: 2 });
    stream.holdWrites = true;
    stream.emit('data', bundle(2));
    runner.finish(0);
    await settle();
    runner.finish(1, failure('DEADLINE_EXCEEDED', 'the script ran past its time limit of 5000 ms (SSE_SCRIPT_TIMEOUT_MS)'));
    assert.equal((await outcome).error?.code, 'DEADLINE_EXCEEDED');
    assert.equal(stream.errors[0]?.code, status.DEADLINE_EXCEEDED);
    assert.ok(held.bytes >= 4, `the written reply is still counted: ${held.bytes} bytes`);
    assert.equal(held.accounts, 1);
    stream.completeWrites();
    assert.equal(held.bytes, 0);
    assert.equal(held.accounts, 0);
  });

  it('a table chunk refused for its column names is given back with the rest', async () => {
    const { stream, runner, held, outcome } = startPipeline({ tableAllowed: true, accountClosedByStream: false });
    stream.emit('data', bundle(2));
    runner.finish(0, tableResult(0, 'object', 'a'.repeat(MAX_TABLE_KEY_BYTES / 2)));
    runner.finish(1, tableResult(1, 'object', 'b'.repeat(MAX_TABLE_KEY_BYTES / 2 + 1)));
    assert.equal((await outcome).error?.code, 'RESOURCE_EXHAUSTED');
    assert.equal(held.bytes, 0);
  });
});

describe('CallPipeline: time budget', () => {
  it("sends every task the call's one budget, with what earlier results spent", async () => {
    const { stream, runner } = startPipeline({ maxInFlight: 1 });
    stream.emit('data', bundle(2));
    assert.equal(runner.task(0).request.budget.spentMs, 0);
    runner.finish(0, success(0, 1, { scriptMs: 7 }));
    await settle();
    assert.equal(runner.task(1).request.budget, runner.task(0).request.budget);
    assert.equal(runner.task(1).request.budget.spentMs, 7);
    stream.emit('cancelled');
  });

  it('starts no task once results have spent the time, and fails DEADLINE_EXCEEDED naming the limit', async () => {
    const { stream, runner, outcome } = startPipeline({ maxInFlight: 1, timeoutMs: 5 });
    stream.emit('data', bundle(3));
    runner.finish(0, success(0, 1, { scriptMs: 5 }));
    const { error, summary } = await outcome;
    assert.equal(error?.code, 'DEADLINE_EXCEEDED');
    assert.equal(stream.errors[0]?.details, 'the script ran past its time limit of 5 ms (SSE_SCRIPT_TIMEOUT_MS)');
    assert.equal(runner.tasks.length, 1);
    assert.equal(summary.timedOut, true);
    assert.equal(summary.scriptMs, 5);
  });
});
