/**
 * Fairness between apps and between users, with real sandboxes on 2 threads: one app (or one user)
 * keeps many CPU-heavy calls waiting, then another app (or user) sends a trivial call. Its answer must
 * come while most of the heavy calls are still unanswered: it waits for about one running task, not
 * behind the busy app's queue. Asserted as an order (answers counted), not as a time.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { functionId } from '../../src/functions/signature';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { type CallResult, num, str, strings } from '../helpers/qlik-client';
import { callFrom } from '../helpers/raw-call';
import { evalText, waitFor } from '../helpers/sandbox-calls';

/** Heavy calls of one app or user: a few hundred ms of CPU each, far below the 5 s time limit. */
const HEAVY_CALLS = 12;
const SPIN = 'const end = Date.now() + 300; while (Date.now() < end); return "heavy";';

interface Heavy {
  readonly all: Promise<CallResult[]>;
  answered(): number;
}

function startHeavy(t: TestPlugin, common: { appId: string; userId: string }): Heavy {
  let answered = 0;
  const calls = Array.from({ length: HEAVY_CALLS }, () =>
    evalText(t.client, SPIN, { common }).then((result) => {
      answered++;
      return result;
    }),
  );
  return { all: Promise.all(calls), answered: () => answered };
}

async function assertHeavyAnswered(heavy: Heavy): Promise<void> {
  for (const result of await heavy.all) {
    assert.equal(result.code, status.OK, result.details);
    assert.deepEqual(strings(result), ['heavy']);
  }
}

describe('two threads shared fairly between apps and users', () => {
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_WORKERS: '2', SSE_FUNCTIONS_DIR: path.resolve('examples', 'functions') });
  });
  after(async () => t.stop());

  it("another app's trivial call is answered while most of one app's CPU-heavy calls still wait", async () => {
    const heavy = startHeavy(t, { appId: 'busy-app', userId: 'u1' });
    await waitFor('the heavy calls queued', () => t.plugin.pool.queueSize >= HEAVY_CALLS - 2, 5_000);
    const trivial = await evalText(t.client, 'args[0] * 7', { common: { appId: 'quiet-app', userId: 'u2' } });
    const answeredBefore = heavy.answered();
    assert.equal(trivial.code, status.OK, trivial.details);
    assert.deepEqual(strings(trivial), ['7']);
    // It took the first thread that came free: at most the two running then (and a straggler) ended first.
    assert.ok(answeredBefore <= 3, `${answeredBefore} of ${HEAVY_CALLS} heavy calls were answered before the trivial one`);
    await assertHeavyAnswered(heavy);
  });

  it("another app's plugin function call (ExecuteFunction) also waits for about one running task", async () => {
    const heavy = startHeavy(t, { appId: 'busy-app', userId: 'u1' });
    await waitFor('the heavy calls queued', () => t.plugin.pool.queueSize >= HEAVY_CALLS - 2, 5_000);
    const trivial = await t.client.executeFunction({
      functionId: functionId('PadLeft'),
      bundles: [[[str('42'), num(5), str('0')]]],
      common: { appId: 'quiet-app', userId: 'u2' },
    });
    const answeredBefore = heavy.answered();
    assert.equal(trivial.code, status.OK, trivial.details);
    assert.deepEqual(strings(trivial), ['00042']);
    assert.ok(answeredBefore <= 3, `${answeredBefore} of ${HEAVY_CALLS} heavy calls were answered before the function call`);
    await assertHeavyAnswered(heavy);
  });

  it("within one app, another user's trivial call is answered while most of one user's heavy calls still wait", async () => {
    const heavy = startHeavy(t, { appId: 'shared-app', userId: 'busy-user' });
    await waitFor('the heavy calls queued', () => t.plugin.pool.queueSize >= HEAVY_CALLS - 2, 5_000);
    const trivial = await evalText(t.client, 'args[0] * 7', { common: { appId: 'shared-app', userId: 'quiet-user' } });
    const answeredBefore = heavy.answered();
    assert.equal(trivial.code, status.OK, trivial.details);
    assert.deepEqual(strings(trivial), ['7']);
    assert.ok(answeredBefore <= 3, `${answeredBefore} of ${HEAVY_CALLS} heavy calls were answered before the trivial one`);
    await assertHeavyAnswered(heavy);
  });
});

describe('one thread shared between client hosts: many addresses buy no head start', () => {
  const ADDRESSES = 8;
  /** Use is forgotten fast here, so that "was there first" takes half a second, not minutes. */
  const HALF_LIFE_MS = 50;
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_WORKERS: '1', SSE_SCRIPT_TIMEOUT_MS: '300' }, undefined, { usageHalfLifeMs: HALF_LIFE_MS });
  });
  after(async () => t.stop());

  it('a host that was there first and used little is served at the next free thread, ahead of addresses that queued before its call', async () => {
    const first = await evalText(t.client, 'args[0] * 7', { common: { appId: 'sales', userId: 'u1' } });
    assert.deepEqual(strings(first), ['7']);
    // Ten half-lives: the engine's first-seen charge and its call are mostly forgotten, as after a quiet while.
    await new Promise((resolve) => setTimeout(resolve, 10 * HALF_LIFE_MS));
    let ended = 0;
    // Eight more loopback hosts (each in a /24 of its own), each with a call that runs to the time limit.
    const loops = Array.from({ length: ADDRESSES }, (_, i) =>
      callFrom(t.plugin.port, `127.0.${i + 2}.1`, { script: 'for (;;) {}', params: [{ dataType: 1 }] }, [[num(1)]]).then((result) => {
        ended++;
        return result;
      }),
    );
    await waitFor('the looping calls queued', () => t.plugin.pool.queueSize >= ADDRESSES - 1, 5_000);
    const next = await evalText(t.client, 'args[0] * 7', { common: { appId: 'sales', userId: 'u1' } });
    const endedBefore = ended;
    assert.deepEqual(strings(next), ['7']);
    // The one running then (and a straggler) may end first; in turn alone it waited behind all eight.
    assert.ok(endedBefore <= 2, `${endedBefore} of ${ADDRESSES} looping calls ended before the engine's call`);
    for (const result of await Promise.all(loops)) assert.equal(result.code, status.DEADLINE_EXCEEDED, result.details);
  });
});

describe('one thread shared between client hosts: the addresses of one network are one host', () => {
  const ADDRESSES = 8;
  const ENGINE = { common: { appId: 'sales', userId: 'u1' } };
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_WORKERS: '1', SSE_SCRIPT_TIMEOUT_MS: '300' });
  });
  after(async () => t.stop());

  it('a host that used the thread a lot waits behind a few tasks of a client with many addresses, not one task per address', async () => {
    // The engine (127.0.0.1) has used the thread lately: two calls that run to the time limit.
    for (let i = 0; i < 2; i++) {
      const spent = await evalText(t.client, 'for (;;) {}', ENGINE);
      assert.equal(spent.code, status.DEADLINE_EXCEEDED, spent.details);
    }
    let ended = 0;
    // Eight addresses of 127.0.9.0/24, each with a call that runs to the time limit: per address, each
    // was a new host that had used less than the engine, and the engine waited behind all eight.
    const loops = Array.from({ length: ADDRESSES }, (_, i) =>
      callFrom(t.plugin.port, `127.0.9.${i + 1}`, { script: 'for (;;) {}', params: [{ dataType: 1 }] }, [[num(1)]]).then((result) => {
        ended++;
        return result;
      }),
    );
    await waitFor('the looping calls queued', () => t.plugin.pool.queueSize >= ADDRESSES - 1, 5_000);
    const next = await evalText(t.client, 'args[0] * 7', ENGINE);
    const endedBefore = ended;
    assert.deepEqual(strings(next), ['7']);
    // As one host, the network's use soon ranks with the engine's and turns alternate.
    assert.ok(endedBefore <= 3, `${endedBefore} of ${ADDRESSES} looping calls of one network ended before the engine's call`);
    for (const result of await Promise.all(loops)) assert.equal(result.code, status.DEADLINE_EXCEEDED, result.details);
  });
});

describe('one thread shared between client hosts: a task that runs long is asked back for a host that waits', () => {
  const WARM_CALLS = 100;
  let t: TestPlugin;
  before(async () => {
    // 127.0.0.1 (this test's client) is not the priority host here: its own task is the one asked back.
    t = await startTestPlugin({ SSE_WORKERS: '1', SSE_SCRIPT_TIMEOUT_MS: '20000', SSE_PRIORITY_HOSTS: 'none' });
  });
  after(async () => t.stop());

  it("another host's call is answered while the long task runs again from its start, and the long task's answer is right", async () => {
    // Both hosts are proven short: a hundred trivial calls each, as a network that wants to look like a Qlik engine would make.
    for (let i = 0; i < WARM_CALLS; i++) assert.deepEqual(strings(await evalText(t.client, 'args[0] * 7')), ['7']);
    for (let i = 0; i < WARM_CALLS; i++) {
      const warm = await callFrom(t.plugin.port, '127.0.5.1', { script: 'args[0]', params: [{ dataType: 1 }] }, [[num(1)]]);
      assert.equal(warm.code, status.OK, warm.details);
    }
    const yieldedBefore = t.plugin.pool.yieldedTasks;
    const order: string[] = [];
    // 2 s of CPU on the one thread, then an answer that depends on the row.
    const spin = 'const end = Date.now() + 2000; while (Date.now() < end); return args[0] * 2;';
    const long = evalText(t.client, spin, { bundles: [[[num(21)]]] }).then((result) => {
      order.push('long');
      return result;
    });
    await waitFor('the long task running', () => t.plugin.pool.busyWorkers === 1, 5_000);
    const other = await callFrom(t.plugin.port, '127.0.5.1', { script: 'args[0]', params: [{ dataType: 1 }] }, [[num(1)]]);
    order.push('other');
    assert.equal(other.code, status.OK, other.details);
    const answer = await long;
    assert.equal(answer.code, status.OK, answer.details);
    assert.deepEqual(strings(answer), ['42']);
    // Without asking back, the other host's trivial call waited for the whole 2 s task.
    assert.deepEqual(order, ['other', 'long']);
    assert.equal(t.plugin.pool.yieldedTasks, yieldedBefore + 1);
  });
});

describe('one thread, and the engine listed in SSE_PRIORITY_HOSTS', () => {
  let t: TestPlugin;
  before(async () => {
    t = await startTestPlugin({ SSE_WORKERS: '1', SSE_SCRIPT_TIMEOUT_MS: '20000', SSE_PRIORITY_HOSTS: '127.0.0.1' });
  });
  after(async () => t.stop());

  it("the engine's call has even a long host's running task asked back, which then runs again and answers", async () => {
    const network = (script: string): Promise<{ code: number; details: string }> =>
      callFrom(t.plugin.port, '127.0.6.1', { script, params: [{ dataType: 1 }] }, [[num(1)]]);
    // The network's tasks are long (400 ms): for a host that is not listed, its task would run to its end.
    const warm = await network('const end = Date.now() + 400; while (Date.now() < end); return args[0];');
    assert.equal(warm.code, status.OK, warm.details);
    const yieldedBefore = t.plugin.pool.yieldedTasks;
    const order: string[] = [];
    const long = network('const end = Date.now() + 2000; while (Date.now() < end); return args[0];').then((result) => {
      order.push('long');
      return result;
    });
    await waitFor('the long task running', () => t.plugin.pool.busyWorkers === 1, 5_000);
    const engine = await evalText(t.client, 'args[0] * 7');
    order.push('engine');
    assert.deepEqual(strings(engine), ['7']);
    const answer = await long;
    assert.equal(answer.code, status.OK, answer.details);
    assert.deepEqual(order, ['engine', 'long']);
    assert.equal(t.plugin.pool.yieldedTasks, yieldedBefore + 1);
  });
});
