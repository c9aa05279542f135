/**
 * A stop meant for a thread's task can reach its isolate after that task's run ended (the thread had
 * not yet said it was done): the isolate is then disposed between tasks, or under the next task. The
 * next task must run on a rebuilt isolate and answer right, not fail "internal error: Isolate is
 * disposed" (seen under load: a cancelled neighbour's stop failed other calls' chunks). A real
 * Sandbox with its real stopper (isolated-vm), in this process.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';

import { DataType, type ScriptSpec } from '../../src/contract/task';
import type { RuntimeInput, RuntimeOutput } from '../../workers/thread/isolate-runtime';
import { IsolateStopper } from '../../workers/thread/isolate-stopper';
import { Sandbox } from '../../workers/thread/sandbox';
import { newStopCells, ringStopBell, STOP_GENERATION, TaskStops } from '../../workers/thread-stop';
import { waitFor } from '../helpers/sandbox-calls';

const SPEC: ScriptSpec = {
  script: 'args[0] * 2',
  paramTypes: [DataType.NUMERIC],
  boundNames: [''],
  returnType: DataType.NUMERIC,
  mode: 'rows',
  tableAllowed: false,
};

function oneRow(value: number): RuntimeInput {
  return {
    mode: 0,
    rows: 1,
    table: false,
    firstRow: 0,
    bound: [],
    maxChars: 1024,
    maxColumns: 1,
    maxKeyBytes: 1024,
    ret: DataType.NUMERIC,
    cols: [{ t: DataType.NUMERIC, n: new Float64Array([value]), s: null, l: null }],
  };
}

function numbersOf(output: RuntimeOutput): number[] {
  if (!output.ok) assert.fail(`the task failed: ${JSON.stringify(output)}`);
  return Array.from(output.nums ?? []);
}

describe('a stop that reaches the isolate after its task ended', () => {
  const cells = newStopCells();
  const stops = new TaskStops(cells);
  const stopper = new IsolateStopper(cells);
  /** The first group of cells, the one the stopper claimed. */
  const STOPPER_CELLS = 1;
  const sandbox = new Sandbox({ memoryLimitMb: 64, scriptTimeoutMs: 5_000 }, () => undefined, undefined, stopper);
  const disposed = (): boolean => (sandbox as unknown as { isolate: { isDisposed: boolean } }).isolate.isDisposed;
  after(() => {
    sandbox.dispose();
    // Ends the stopper's wait (its isolate's task would keep this process alive): no generation is armed.
    const view = new Int32Array(cells);
    Atomics.store(view, STOPPER_CELLS + STOP_GENERATION, 0);
    ringStopBell(view, STOPPER_CELLS);
  });

  it('the next task runs on a rebuilt isolate and answers right', async () => {
    assert.deepEqual(numbersOf(sandbox.evaluate(SPEC, oneRow(20), 5_000, 1, 'app')), [40]);
    // Task 7 has run; the thread has not yet cleared its running cell when the stop for it arrives.
    stopper.running(7);
    assert.equal(stops.stop(7), true);
    await waitFor('the stopper disposing the isolate', disposed, 10_000);
    stopper.running(0);
    stopper.running(8);
    const output = sandbox.evaluate(SPEC, oneRow(21), 5_000, 2, 'app');
    stopper.running(0);
    assert.deepEqual(numbersOf(output), [42]);
  });
});
