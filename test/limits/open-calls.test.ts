/**
 * Calls left open (never half-closed) and the sandbox processes that keep their specs. A sandbox
 * process used to forget its oldest call past 4,096 open ones while the front still counted it as
 * known: after 4,200 one-row calls left open, a LOAD still streaming failed INTERNAL "a task arrived
 * for a call the sandbox does not know". Now the front never has more calls open than the sandboxes
 * keep (MAX_OPEN_CALLS, one constant both import): a newcomer is refused RESOURCE_EXHAUSTED busy,
 * never an older call; and a sandbox told to open more treats it as the front's protocol error,
 * never evicting one. Scaled down: the bound is made 4 (a pool setting the tests use).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { CallBudget } from '../../src/calls/call-budget';
import { type TaskResult, DataType as Type } from '../../src/contract/task';
import { decodeMessage, messages } from '../../src/grpc/proto';
import type { SandboxExit } from '../../src/sandboxes/sandbox-handle';
import { SandboxProcess } from '../../src/sandboxes/sandbox-process';
import type { QueuedTask } from '../../src/sandboxes/task-queue';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { DataType, encodeBundle, FunctionType, num } from '../helpers/qlik-client';
import { openRawCall, type RawCall } from '../helpers/raw-call';
import { waitFor } from '../helpers/sandbox-calls';

const MAX_OPEN = 4;
const SCALAR = {
  script: 'args[0] * 2',
  functionType: FunctionType.SCALAR,
  returnType: DataType.NUMERIC,
  params: [{ dataType: DataType.NUMERIC }],
};

/** Opens a call, sends it one row and waits until that row's reply is back: the call is open in a sandbox. */
async function openWithOneRow(t: TestPlugin, value: number): Promise<RawCall> {
  const call = openRawCall(t.client.client, SCALAR, true, true);
  let replies = 0;
  call.call.on('data', () => replies++);
  call.send([[num(value)]]);
  await waitFor(`the reply to row ${value}`, () => replies > 0, 10_000);
  return call;
}

describe(`calls left open, ${MAX_OPEN} at most (SSE_WORKERS=2, two sandbox processes)`, () => {
  let t: TestPlugin;
  // One host, the whole bound: this is about the front and the sandboxes agreeing, not host shares.
  before(
    async () =>
      (t = await startTestPlugin({ SSE_WORKERS: '2', SSE_SANDBOX_PROCESSES: '2', SSE_HOST_SHARE_PERCENT: '100' }, undefined, {
        maxOpenCalls: MAX_OPEN,
      })),
  );
  after(async () => t.stop());

  it('a newcomer past the bound is refused as busy; a LOAD still streaming goes on and answers every row', async () => {
    const load = await openWithOneRow(t, 1);
    const idle = [await openWithOneRow(t, 2), await openWithOneRow(t, 3), await openWithOneRow(t, 4)];
    const newcomer = openRawCall(t.client.client, SCALAR);
    newcomer.send([[num(5)]]);
    const refused = await newcomer.result;
    assert.equal(refused.code, grpc.status.RESOURCE_EXHAUSTED, refused.details);
    assert.match(refused.details, new RegExp(`busy: ${MAX_OPEN} calls are open at once`));
    // The LOAD's next rows go to whichever process is free, and find their spec there.
    for (let i = 0; i < 20; i++) load.send([[num(10 + i)]]);
    load.call.end();
    const loaded = await load.result;
    assert.equal(loaded.code, grpc.status.OK, loaded.details);
    const values = loaded.messages.flatMap((m) =>
      (decodeMessage(messages.BundledRows, m) as { rows: { duals: { numData: number }[] }[] }).rows.map((r) => r.duals[0]?.numData),
    );
    assert.deepEqual(
      values,
      [1, ...Array.from({ length: 20 }, (_, i) => 10 + i)].map((v) => v * 2),
    );
    for (const call of idle) call.call.end();
    for (const result of await Promise.all(idle.map((call) => call.result))) assert.equal(result.code, grpc.status.OK, result.details);
    // Closed calls make room again.
    const next = await openWithOneRow(t, 6);
    next.call.end();
    assert.equal((await next.result).code, grpc.status.OK);
  });
});

describe(`every kind of call counts against the bound, ${MAX_OPEN} at most`, () => {
  let t: TestPlugin;
  before(
    async () => (t = await startTestPlugin({ SSE_WORKERS: '2', SSE_HOST_SHARE_PERCENT: '100' }, undefined, { maxOpenCalls: MAX_OPEN })),
  );
  after(async () => t.stop());

  it('calls without parameters and aggregations left open take their slots: a newcomer is refused, and they answer once ended', async () => {
    // Neither sends a task before the client half-closes: they used to be in no count at all.
    const noParams = [0, 1].map(() => openRawCall(t.client.client, { script: '7', returnType: DataType.NUMERIC, params: [] }, true, true));
    const aggregations = [0, 1].map(() =>
      openRawCall(
        t.client.client,
        {
          script: 'args[0].length',
          functionType: FunctionType.AGGREGATION,
          returnType: DataType.NUMERIC,
          params: [{ dataType: DataType.NUMERIC }],
        },
        true,
        true,
      ),
    );
    for (const call of noParams) call.send([]);
    for (const call of aggregations) call.send([[num(1)], [num(2)], [num(3)]]);
    await waitFor(`${MAX_OPEN} calls open in the front`, () => t.plugin.held.accounts >= MAX_OPEN, 10_000);
    const newcomer = openRawCall(t.client.client, SCALAR);
    newcomer.send([[num(5)]]);
    newcomer.call.end();
    const refused = await newcomer.result;
    assert.equal(refused.code, grpc.status.RESOURCE_EXHAUSTED, refused.details);
    assert.match(refused.details, new RegExp(`busy: ${MAX_OPEN} calls are open at once`));
    const open = [...noParams, ...aggregations];
    for (const call of open) call.call.end();
    const results = await Promise.all(open.map((call) => call.result));
    const values = results.map((result) => {
      assert.equal(result.code, grpc.status.OK, result.details);
      return result.messages.flatMap((m) =>
        (decodeMessage(messages.BundledRows, m) as { rows: { duals: { numData: number }[] }[] }).rows.map((r) => r.duals[0]?.numData),
      );
    });
    assert.deepEqual(values, [[7], [7], [3], [3]]);
  });
});

describe('a sandbox process told to open more calls than the bound', () => {
  it('ends as on a protocol error, and never answers an older call "does not know"', async () => {
    const results: TaskResult[] = [];
    let ready!: () => void;
    const isReady = new Promise<void>((resolve) => (ready = resolve));
    let exited!: (exit: SandboxExit) => void;
    const exit = new Promise<SandboxExit>((resolve) => (exited = resolve));
    const sandbox = new SandboxProcess(
      0,
      { threads: 1, memoryLimitMb: 64, scriptTimeoutMs: 1_000, nice: 0, maxOpenCalls: 2 },
      {
        ready: () => ready(),
        result: (_, _task, result) => results.push(result),
        exit: (_, info) => exited(info),
      },
      pino({ level: 'silent' }),
    );
    await isReady;
    const spec = {
      script: 'args[0]',
      paramTypes: [Type.NUMERIC],
      boundNames: [''],
      returnType: Type.NUMERIC,
      mode: 'rows' as const,
      tableAllowed: false,
    };
    const call = { spec, contextKey: 'k', callTimeoutMs: 1_000, maxReplyBytes: 4 * 1024 * 1024 };
    const task = (id: number, callId: number): QueuedTask => ({
      id,
      request: {
        callId,
        owner: { host: 'h', appId: 'a', userId: 'u' },
        call,
        rows: 1,
        firstRow: 0,
        budget: new CallBudget(call.callTimeoutMs),
        chunks: [encodeBundle([[num(callId)]])],
      },
      resolve: () => undefined,
      reject: () => undefined,
      retried: false,
      askedBack: false,
      settled: false,
    });
    // The front's pool never does this: calls 1 and 2 are open, 3 is one more, and call 1 sends again.
    for (const [taskId, callId] of [
      [1, 1],
      [2, 2],
      [3, 3],
      [4, 1],
    ] as const)
      sandbox.send(task(taskId, callId));
    const ended = await exit;
    assert.match(ended.stderrTail, /protocol error: the front opened more than 2 calls at once/);
    for (const result of results) assert.ok(result.ok, `a task failed: ${result.ok ? '' : result.error.message}`);
  });
});
