/**
 * Native work that cannot be stopped at the fast path's budget (compiling a huge eval) holds the
 * sandbox process's main thread until it ends (workers/fast-path.ts). Such an attempt must only be
 * moved to a pool thread: the call is answered right, no sandbox process is replaced for it, and
 * neither that script nor any other takes the fast path again for a while (so a repeated or
 * unique-each-call script cannot hold the main thread call after call). Only a task stuck past its
 * call's own time limit is named to the front as stuck. The FastPath runs here on the test's main
 * thread with a real isolate and a real watcher thread writing to a file with a short grace
 * (test/helpers/fast-path-on-files.ts); the plugin test uses real sandbox processes.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { Frame, type ReceivedFrame } from '../../src/contract/channel';
import { parseRetirement } from '../../src/contract/control-frames';
import { decodeResult } from '../../src/contract/result-frame';
import { DataType, type ScriptSpec } from '../../src/contract/task';
import type { FastPath, FastTask } from '../../workers/fast-path';
import { newBudget } from '../../workers/thread-task';
import { type FastPathOnFiles, fastPathOnFiles } from '../helpers/fast-path-on-files';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { strings } from '../helpers/qlik-client';
import { evalText, textOf } from '../helpers/sandbox-calls';

/** Compiling this takes ~0.5 s of CPU here, far past the 100 ms budget, and V8 does not stop a compile. */
const UNSTOPPABLE = "eval('0;'.repeat(2e6)) + 7";
/** Native work that holds the thread past the budget and ends on the 128 MB memory limit. */
const MEMORY_AFTER_A_HOLD = "'ab'.repeat(4e6).replaceAll('a', 'cd').length";
/** ~1.7 s here: past the watcher's 1 s grace, as in the attack that replaced a process per call. */
const UNSTOPPABLE_PAST_GRACE = "eval('0;'.repeat(8e6)) + 7";

function onceTask(taskId: number, script: string, contextKey: string, callTimeoutMs: number): FastTask {
  const spec: ScriptSpec = { script, paramTypes: [], boundNames: [], returnType: DataType.NUMERIC, mode: 'once', tableAllowed: false };
  return {
    taskId,
    callId: taskId,
    contextKey,
    spec,
    bundles: [],
    rows: 0,
    firstRow: 0,
    maxReplyBytes: 1 << 20,
    libraries: null,
    callTimeoutMs,
    budget: newBudget(),
  };
}

describe('a fast-path attempt that cannot be stopped at its budget', () => {
  let files: FastPathOnFiles;
  let fastPath: FastPath;
  // A budget of 100 ms, not the default 10: on a loaded machine a thread the OS did not run for 10 ms
  // met the budget before reaching the native work, and was stopped in JavaScript (CI, twice). A 100 ms
  // grace: the 0.5 s compile goes well past the budget + grace, not past the call's limit + grace.
  beforeEach(() => {
    files = fastPathOnFiles(100, 100);
    fastPath = files.fastPath;
  });
  afterEach(() => files.dispose());
  const written = (name: 'channel' | 'results'): ReceivedFrame[] => files.written(name);

  it('is moved to a pool thread, not named stuck, and keeps its key and every other off the fast path', () => {
    assert.equal(fastPath.accepts('key-A', 16), true);
    // The watcher looks every 10 ms while the main thread is held: a RETIRE would be written by now.
    assert.equal(fastPath.run(onceTask(1, UNSTOPPABLE, 'key-A', 60_000)), 'moved');
    assert.deepEqual(written('channel'), [], 'the watcher named a task that only outgrew the fast path');
    assert.deepEqual(written('results'), [], 'a moved task was answered here');
    assert.equal(fastPath.accepts('key-A', 16), false, 'the same script takes the fast path again');
    assert.equal(fastPath.accepts('key-B', 16), false, 'a script made unique each call takes the fast path again');
  });

  it('pauses the fast path also when the work that held the thread ends on the memory limit', () => {
    assert.equal(fastPath.run(onceTask(3, MEMORY_AFTER_A_HOLD, 'key-D', 60_000)), 'sent');
    const [answer] = written('results');
    const result = decodeResult(answer?.payload ?? new Uint8Array());
    assert.equal(result.ok ? 'OK' : result.error.code, 'RESOURCE_EXHAUSTED');
    assert.equal(fastPath.accepts('key-D', 16), false, 'the same script takes the fast path again');
    assert.equal(fastPath.accepts('key-E', 16), false, 'a script made unique each call takes the fast path again');
  });

  it('is named stuck once it runs past what its call has left, and fails on its time limit', () => {
    // The longer compile: even on a machine several times faster than this one it outlasts 250 ms + 100 ms.
    assert.equal(fastPath.run(onceTask(2, UNSTOPPABLE_PAST_GRACE, 'key-C', 250)), 'sent');
    const [retire] = written('channel');
    assert.equal(retire?.kind, Frame.RETIRE);
    const retired = parseRetirement(retire.payload);
    assert.equal(retired.reason, 'stuck');
    assert.deepEqual(retired.taskIds, [2]);
    const [answer] = written('results');
    assert.equal(answer?.kind, Frame.RESULT);
    assert.equal(answer.id, 2);
    const result = decodeResult(answer.payload);
    assert.equal(result.ok, false);
    assert.equal(result.ok ? '' : result.error.code, 'DEADLINE_EXCEEDED');
    assert.match(result.ok ? '' : result.error.message, /time limit of 250 ms \(SSE_SCRIPT_TIMEOUT_MS\)/);
  });
});

describe('a script whose uninterruptible work outlasts the watcher grace, called again and again', () => {
  let t: TestPlugin;
  // One thread: the fast path and the pool share one sandbox process.
  before(async () => (t = await startTestPlugin({ SSE_WORKERS: '1' })));
  after(async () => t.stop());

  it('is answered right every time and replaces no sandbox process', async () => {
    const restarts = t.plugin.pool.restarts;
    for (let call = 1; call <= 3; call++) {
      const result = await evalText(t.client, UNSTOPPABLE_PAST_GRACE);
      assert.equal(result.code, status.OK, `call ${call}: ${result.details}`);
      assert.deepEqual(strings(result), ['7'], `call ${call}`);
    }
    assert.equal(t.plugin.pool.restarts, restarts, 'a sandbox process was replaced');
    assert.equal(await textOf(t.client, '"after"'), 'after');
  });
});
