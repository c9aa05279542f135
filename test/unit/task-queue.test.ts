/**
 * The front's task queue: fair between apps, then users, then calls (the fewest running first, in
 * turn among equals); retried tasks first; removal of a cancelled call's task. Pure: no clocks, the
 * threads are simulated by started()/finished().
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { type QueuedTask, TaskQueue, YIELD_MAX_MS, YIELD_MIN_MS } from '../../src/sandboxes/task-queue';

let nextId = 1;
/** How long a thread stays kept for a host proven short after its task ends (KEEP_FOR_SHORT_MS), and a little more. */
const KEEP_MS = 2_001;
/** How long a host waits with nothing running before it goes first (STARVED_MS). */
const STARVED_MS = 100;
function task(callId: number, appId = 'app', userId = 'user', host = '127.0.0.1', script = 'script'): QueuedTask {
  const call = { contextKey: `${appId}/${userId}/${script}`, spec: { script, boundNames: [] } } as never;
  const request = { callId, owner: { host, appId, userId }, call, chunks: [], rows: 1, firstRow: 0, budget: {} as never };
  return { id: nextId++, request, resolve: () => undefined, reject: () => undefined, retried: false, askedBack: false, settled: false };
}

/** A clock that never moves: the order a test asserts must not depend on how long the machine took between its steps. */
const frozenClock = (): number => 0;

const calls = (tasks: (QueuedTask | undefined)[]): number[] => tasks.map((t) => t?.request.callId ?? -1);
const apps = (tasks: (QueuedTask | undefined)[]): string[] => tasks.map((t) => t?.request.owner.appId ?? '-');

/** Takes the next task for one of `threads` threads and counts it running, as the pool does when it sends one to a thread. */
function take(queue: TaskQueue, threads?: number): QueuedTask | undefined {
  const next = queue.shift(threads);
  if (next) queue.started(next);
  return next;
}

/**
 * `networks` (10.5.i.1) each queue a 5 s loop; two threads start one each, 2.5 s apart; the engine
 * (10.0.0.1) queues call 999; when the first loop ends (sent again at once), what the free thread takes.
 */
function nextAfterALoopEnds(queue: TaskQueue, advance: (ms: number) => void, networks: number): QueuedTask | undefined {
  for (let i = 0; i < networks; i++) queue.push(task(100 + i, 'hog', 'h', `10.5.${i}.1`));
  const first = take(queue, 2) as QueuedTask;
  advance(2_500);
  take(queue, 2);
  queue.push(task(999, 'sales', 'user', '10.0.0.1'));
  advance(2_500);
  queue.finished(first.id);
  queue.push(task(first.request.callId, 'hog', 'h', first.request.owner.host));
  return take(queue, 2);
}

/** `count` tasks of `host` run one after another, each `taskMs` long and `gapMs` apart; `advance` moves the test's clock. */
function ranOneByOne(queue: TaskQueue, advance: (ms: number) => void, host: string, count: number, taskMs: number, gapMs = 0): void {
  for (let i = 0; i < count; i++) {
    const done = task(900 + i, 'sales', 'user', host);
    queue.push(done);
    queue.started(queue.shift() as QueuedTask);
    advance(taskMs);
    queue.finished(done.id);
    advance(gapMs);
  }
}

describe('TaskQueue', () => {
  it('a host that invents an app id per call has one share: a call from another host goes next', () => {
    const queue = new TaskQueue(frozenClock);
    for (let i = 0; i < 40; i++) queue.push(task(100 + i, `invented-${i}`, 'user', '10.0.0.9'));
    // Both threads run tasks of the inventing host.
    take(queue);
    const running = take(queue);
    const engine = task(999, 'sales', 'user', '10.0.0.1');
    queue.push(engine);
    if (running) queue.finished(running.id);
    assert.equal(take(queue)?.request.callId, 999);
  });

  it('a client with many addresses cannot keep another host waiting behind them all: the least-used host goes first', () => {
    let nowMs = 0;
    const queue = new TaskQueue(() => nowMs);
    // Qlik's engine made a small call before the flood.
    const earlier = task(998, 'sales', 'user', '10.0.0.1');
    queue.push(earlier);
    queue.started(queue.shift() as QueuedTask);
    nowMs += 2;
    queue.finished(earlier.id);
    nowMs += 1_000;
    // 40 addresses, each with a long task queued; two threads run them 5 s each.
    for (let i = 0; i < 40; i++) queue.push(task(100 + i, 'app', 'user', `10.0.1.${i}`));
    const first = [take(queue), take(queue)];
    nowMs += 5_000;
    for (const running of first) queue.finished((running as QueuedTask).id);
    const second = [take(queue), take(queue)];
    // The engine's next call arrives behind the 36 addresses still waiting for their turn.
    queue.push(task(999, 'sales', 'user', '10.0.0.1'));
    nowMs += 5_000;
    queue.finished((second[0] as QueuedTask).id);
    assert.equal(take(queue)?.request.callId, 999);
  });

  it('a host that used less than a newcomer is charged keeps its place ahead of hosts that came after it', () => {
    let nowMs = 0;
    const queue = new TaskQueue(() => nowMs);
    // Qlik's engine ran 15 one-row calls of 7 ms over 3 s: 105 ms of use, well under what a newcomer is charged.
    ranOneByOne(queue, (ms) => (nowMs += ms), '10.0.0.1', 15, 7, 193);
    // Then 40 networks, each with a loop queued; two threads run them 5 s each.
    for (let i = 0; i < 40; i++) queue.push(task(100 + i, 'hog', 'h', `10.5.${i}.1`));
    const first = [take(queue), take(queue)];
    queue.push(task(999, 'sales', 'user', '10.0.0.1'));
    nowMs += 5_000;
    queue.finished((first[0] as QueuedTask).id);
    // Charged as a newcomer plus its use, the engine waited behind every one of the 40 (20 s and more).
    assert.equal(take(queue)?.request.callId, 999);
  });

  it('a host that used the threads a lot lately waits behind at most one task of each new address, not until they used as much', () => {
    let nowMs = 0;
    const queue = new TaskQueue(() => nowMs);
    // Qlik's engine kept both threads busy for 4 s.
    ranOneByOne(queue, (ms) => (nowMs += ms), '10.0.0.1', 4, 2_000);
    nowMs += 5_000;
    // 8 new addresses queue four 1-second tasks each; two threads run them.
    for (let i = 0; i < 8; i++) for (let j = 0; j < 4; j++) queue.push(task(100 + i * 4 + j, 'atk', 'user', `10.0.1.${i}`));
    const threads = [take(queue), take(queue)];
    queue.push(task(999, 'sales', 'user', '10.0.0.1'));
    let before = 0;
    for (;;) {
      nowMs += 1_000;
      const done = threads.shift() as QueuedTask;
      queue.finished(done.id);
      const next = take(queue) as QueuedTask;
      if (next.request.callId === 999) break;
      threads.push(next);
      before++;
    }
    // The six addresses that had not run yet, and no more (uncapped: 25 of the 30 left).
    assert.ok(before <= 8, `the engine's call waited behind ${before} tasks`);
  });

  it('a host that used the threads a lot goes before networks that have not run yet, however long they waited', () => {
    let nowMs = 0;
    const queue = new TaskQueue(() => nowMs);
    // Qlik's engine kept a thread busy for 4 s with 20 ms tasks: capped, like any heavy host.
    ranOneByOne(queue, (ms) => (nowMs += ms), '10.0.0.1', 200, 20);
    // 40 networks queue a loop each; two threads run the first two to the 5 s time limit.
    for (let i = 0; i < 40; i++) queue.push(task(100 + i, 'hog', 'h', `10.5.${i}.1`));
    const threads = [take(queue), take(queue)];
    nowMs += 3_000;
    queue.push(task(999, 'sales', 'user', '10.0.0.1'));
    nowMs += 2_000;
    queue.finished((threads[0] as QueuedTask).id);
    // At its floor, each network that had waited went first: one 5 s loop each, 100 s on two threads.
    assert.equal(take(queue)?.request.callId, 999);
  });

  it("a busy host's short tasks pass hosts that loop to the time limit, turn after turn", () => {
    let nowMs = 0;
    const queue = new TaskQueue(() => nowMs);
    ranOneByOne(queue, (ms) => (nowMs += ms), '10.0.0.1', 200, 20);
    // 8 networks keep a 5 s loop queued each, re-sent as it ends; the engine sends a call now and then.
    for (let i = 0; i < 8; i++) queue.push(task(100 + i, 'hog', 'h', `10.5.${i}.1`));
    const threads = [take(queue) as QueuedTask, take(queue) as QueuedTask];
    let waitedBehind = 0;
    for (let round = 0; round < 20; round++) {
      queue.push(task(2_000 + round, 'sales', 'user', '10.0.0.1'));
      nowMs += 2_500;
      const done = threads.shift() as QueuedTask;
      queue.finished(done.id);
      queue.push(task(done.request.callId, 'hog', 'h', done.request.owner.host));
      // The next free thread: the engine's call (it takes 5 ms), then a loop again.
      const next = take(queue) as QueuedTask;
      if (next.request.callId !== 2_000 + round) waitedBehind++;
      else {
        nowMs += 5;
        queue.finished(next.id);
        threads.push(take(queue) as QueuedTask);
      }
    }
    // Taking turns with the 8 networks, each of its calls waited for 4 loops: 20 s.
    assert.equal(waitedBehind, 0);
  });

  it('while a new host waits, hosts with long tasks hold at most every thread but one', () => {
    let nowMs = 0;
    const advance = (ms: number): number => (nowMs += ms);
    const queue = new TaskQueue(() => nowMs);
    // 8 networks ran a few trivial tasks and a 5 s loop each (their tasks average ~2.5 s), and keep a loop queued.
    for (let i = 0; i < 8; i++) {
      ranOneByOne(queue, advance, `10.5.${i}.1`, 4, 1);
      ranOneByOne(queue, advance, `10.5.${i}.1`, 1, 5_000);
    }
    // Taking turns, the new host's call waited for all 8 loops: 20 s.
    assert.equal(nextAfterALoopEnds(queue, advance, 8)?.request.callId, 999);
  });

  it('networks that made one trivial call each before looping do not go ahead of a host proven short', () => {
    let nowMs = 0;
    const advance = (ms: number): number => (nowMs += ms);
    const queue = new TaskQueue(() => nowMs);
    // The engine ran 200 calls of 20 ms (4 s: capped); then 40 networks each made one trivial call, and queue a loop.
    ranOneByOne(queue, advance, '10.0.0.1', 200, 20, 5);
    for (let i = 0; i < 40; i++) ranOneByOne(queue, advance, `10.5.${i}.1`, 1, 1);
    // Light and short-looking, each network went first once: 40 loops, 100 s on two threads.
    assert.equal(nextAfterALoopEnds(queue, advance, 40)?.request.callId, 999);
  });

  it('among hosts with as many tasks running, serves the one that used the threads least lately, though later in turn', () => {
    let nowMs = 0;
    const queue = new TaskQueue(() => nowMs);
    const heavy = task(1, 'app', 'user', 'heavy');
    queue.push(heavy);
    queue.started(queue.shift() as QueuedTask);
    nowMs += 10_000;
    queue.finished(heavy.id);
    const light = task(2, 'app', 'user', 'light');
    queue.push(light);
    queue.started(queue.shift() as QueuedTask);
    nowMs += 10;
    queue.finished(light.id);
    queue.push(task(3, 'app', 'user', 'heavy'));
    queue.push(task(4, 'app', 'user', 'light'));
    assert.deepEqual(calls([queue.shift(), queue.shift()]), [4, 3]);
  });

  it('takes the calls in turn, each call in its own order', () => {
    const queue = new TaskQueue(frozenClock);
    const big = [task(1), task(1), task(1), task(1)];
    for (const t of big) queue.push(t);
    const small = task(2);
    queue.push(small);
    assert.equal(queue.length, 5);
    const order = [queue.shift(), queue.shift(), queue.shift(), queue.shift(), queue.shift()];
    // The small call's one task goes second, not fifth.
    assert.deepEqual(calls(order), [1, 2, 1, 1, 1]);
    assert.deepEqual(
      order.filter((t) => t?.request.callId === 1),
      big,
    );
    assert.equal(queue.shift(), undefined);
    assert.equal(queue.length, 0);
  });

  it('takes apps in turn, then the users of an app, then the calls of a user', () => {
    const queue = new TaskQueue(frozenClock);
    for (const t of [task(1, 'A', 'u1'), task(1, 'A', 'u1'), task(1, 'A', 'u1')]) queue.push(t);
    for (const t of [task(2, 'A', 'u2'), task(2, 'A', 'u2')]) queue.push(t);
    for (const t of [task(3, 'B', 'v'), task(3, 'B', 'v')]) queue.push(t);
    const order = Array.from({ length: 8 }, () => queue.shift());
    assert.deepEqual(calls(order), [1, 3, 2, 3, 1, 2, 1, -1]);
  });

  it('gives the next free thread to an app with nothing running, whatever another app has queued', () => {
    const queue = new TaskQueue(frozenClock);
    // App A: 30 one-task calls on 2 threads, both busy with A.
    for (let call = 1; call <= 30; call++) queue.push(task(call, 'A'));
    const running = [take(queue), take(queue)];
    const trivial = task(100, 'B');
    queue.push(trivial);
    // One of A's tasks ends: B's call takes that thread, ahead of A's 28 waiting tasks.
    queue.finished((running[0] as QueuedTask).id);
    assert.equal(take(queue), trivial);
    // While B runs one and A one, A's tasks follow (B has nothing more queued).
    queue.finished((running[1] as QueuedTask).id);
    assert.equal(take(queue)?.request.owner.appId, 'A');
    assert.equal(queue.length, 27);
  });

  it('gives the next free thread to a user of the app with nothing running, whatever another user has queued', () => {
    const queue = new TaskQueue(frozenClock);
    for (let call = 1; call <= 20; call++) queue.push(task(call, 'A', 'heavy'));
    const running = take(queue) as QueuedTask;
    take(queue);
    const light = task(100, 'A', 'light');
    queue.push(light);
    queue.finished(running.id);
    assert.equal(take(queue), light);
  });

  it('shares threads between apps by tasks running, with many apps, users and calls (simulated threads)', () => {
    const queue = new TaskQueue(frozenClock);
    const threads = 3;
    // A deterministic mix: app i has i+1 users, user j has j+1 calls, call k has 4 tasks.
    const appIds = ['A', 'B', 'C', 'D', 'E'];
    const waiting = new Set<QueuedTask>();
    let callId = 1;
    for (const [i, appId] of appIds.entries())
      for (let j = 0; j <= i; j++)
        for (let k = 0; k <= j; k++, callId++)
          for (let n = 0; n < 4; n++) {
            const t = task(callId, appId, `u${j}`);
            queue.push(t);
            waiting.add(t);
          }
    const running: QueuedTask[] = [];
    const served: QueuedTask[] = [];
    const runningOf = (match: (t: QueuedTask) => boolean): number => running.filter(match).length;
    for (let step = 0; waiting.size > 0 || running.length > 0; step++) {
      while (running.length < threads && waiting.size > 0) {
        const next = take(queue) as QueuedTask;
        const { appId, userId } = next.request.owner;
        // The app served has the fewest tasks running of the apps with tasks waiting, and so has its user within the app.
        const fewestInApps = Math.min(...[...waiting].map((w) => runningOf((t) => t.request.owner.appId === w.request.owner.appId)));
        assert.equal(
          runningOf((t) => t.request.owner.appId === appId),
          fewestInApps,
          `step ${step}: app ${appId}`,
        );
        const users = [...waiting].filter((w) => w.request.owner.appId === appId);
        const sameUser = (userOf: string) => (t: QueuedTask) => t.request.owner.appId === appId && t.request.owner.userId === userOf;
        const fewestInUsers = Math.min(...users.map((w) => runningOf(sameUser(w.request.owner.userId))));
        assert.equal(runningOf(sameUser(userId)), fewestInUsers, `step ${step}: user ${userId} of ${appId}`);
        assert.ok(waiting.delete(next));
        running.push(next);
        served.push(next);
      }
      // Threads finish in a fixed rotating order: no clock.
      const done = running.splice(step % running.length, 1)[0] as QueuedTask;
      queue.finished(done.id);
    }
    // The first round serves each app once before any app twice.
    assert.deepEqual(new Set(apps(served.slice(0, appIds.length))), new Set(appIds));
    // Within each call, tasks keep their order.
    for (let id = 1; id < callId; id++) {
      const ofCall = served.filter((t) => t.request.callId === id).map((t) => t.id);
      assert.deepEqual(
        ofCall,
        [...ofCall].sort((a, b) => a - b),
      );
    }
    assert.equal(served.length, 4 * 35);
    assert.equal(queue.length, 0);
    assert.equal(queue.shift(), undefined);
  });

  it('serves tasks put back at the head first, last one first, before any app', () => {
    const queue = new TaskQueue(frozenClock);
    queue.push(task(1));
    const a = task(2, 'other');
    const b = task(3, 'other');
    queue.unshift(a);
    queue.unshift(b);
    assert.equal(queue.length, 3);
    assert.deepEqual([queue.shift(), queue.shift()], [b, a]);
    assert.equal(queue.length, 1);
  });

  it('removes a task put back at the head without serving it', () => {
    const queue = new TaskQueue(frozenClock);
    const [a, b] = [task(1), task(2)];
    queue.unshift(a);
    queue.unshift(b);
    assert.equal(queue.remove(b), true);
    assert.equal(queue.remove(b), false);
    assert.equal(queue.length, 1);
    assert.equal(queue.shift(), a);
    assert.equal(queue.shift(), undefined);
  });

  it('removes a task of a cancelled call, and drains everything', () => {
    const queue = new TaskQueue(frozenClock);
    const [x, y, z] = [task(1), task(1), task(2)];
    queue.push(x);
    queue.push(y);
    queue.push(z);
    assert.equal(queue.remove(x), true);
    assert.equal(queue.remove(x), false);
    assert.equal(queue.length, 2);
    assert.deepEqual(queue.drain(), [y, z]);
    assert.equal(queue.length, 0);
    assert.equal(queue.shift(), undefined);
  });

  it('asks back a loop of a network that made itself look short once it ran long while a host proven short waits', () => {
    let nowMs = 0;
    const advance = (ms: number): number => (nowMs += ms);
    const queue = new TaskQueue(() => nowMs);
    // The engine and 40 networks are all proven short (100 trivial calls each); each network then queues a loop.
    ranOneByOne(queue, advance, '10.0.0.1', 200, 5);
    for (let i = 0; i < 40; i++) ranOneByOne(queue, advance, `10.5.${i}.1`, 100, 1);
    for (let i = 0; i < 40; i++) queue.push(task(100 + i, 'hog', 'h', `10.5.${i}.1`));
    const loops = [take(queue, 2) as QueuedTask, take(queue, 2) as QueuedTask];
    // Only other networks wait: a network of the same lane waiting is another host too.
    // Their tasks take a millisecond: asked back after the least time, YIELD_MIN_MS.
    advance(YIELD_MIN_MS - 1);
    assert.equal(queue.taskToYield(), undefined, 'asked back before it ran YIELD_MIN_MS');
    const engine = task(999, 'sales', 'user', '10.0.0.1');
    queue.push(engine);
    advance(1);
    const asked = queue.taskToYield();
    assert.equal(asked, loops[0]);
    // Asked once: the other loop started at the same time and is the next one asked, not this one again.
    assert.equal(queue.taskToYield(), loops[1]);
    assert.equal(queue.taskToYield(), undefined);
    queue.yielded(loops[0] as QueuedTask);
    // Once it has waited STARVED_MS as the networks have, the engine's call takes the thread (the lighter
    // host among the starved); the loop waits again, first of its call.
    advance(STARVED_MS);
    assert.equal(take(queue, 2), engine);
    advance(5);
    queue.finished(engine.id);
    // Its network is long now: its loop may hold one thread of two (the long lane), and runs to its end.
    advance(KEEP_MS);
    const again = take(queue, 2);
    assert.equal(again?.id, loops[0]?.id);
    queue.push(task(1_000, 'sales', 'user', '10.0.0.1'));
    advance(10 * YIELD_MAX_MS);
    // The other loop was asked back already; the one sent again runs in the long lane and is not asked again.
    assert.equal(queue.taskToYield(), undefined);
  });

  it('never asks back a task for its own host, a long host, or a task sent again after a sandbox died', () => {
    let nowMs = 0;
    const advance = (ms: number): number => (nowMs += ms);
    const queue = new TaskQueue(() => nowMs);
    ranOneByOne(queue, advance, '10.0.0.1', 100, 5);
    ranOneByOne(queue, advance, '10.7.0.1', 4, 2_000);
    const own = task(1, 'a', 'u', '10.0.0.1');
    queue.push(own);
    take(queue, 1);
    // Its own host's next call waits behind it: the engine's apps share its turns, not by asking back.
    queue.push(task(2, 'b', 'u', '10.0.0.1'));
    // A long host waits too: it is of a later lane.
    queue.push(task(3, 'x', 'u', '10.7.0.1'));
    advance(10 * YIELD_MAX_MS);
    assert.equal(queue.taskToYield(), undefined);
    queue.finished(own.id);
    const retried = task(4, 'c', 'u', '10.9.0.1');
    retried.retried = true;
    queue.started(retried);
    queue.push(task(5, 'sales', 'u', '10.0.0.1'));
    advance(10 * YIELD_MAX_MS);
    assert.equal(queue.taskToYield(), undefined);
  });

  it("keeps a thread for a host proven short a moment after its task ends: a LOAD's next row finds it free", () => {
    let nowMs = 0;
    const advance = (ms: number): number => (nowMs += ms);
    const queue = new TaskQueue(() => nowMs);
    ranOneByOne(queue, advance, '10.0.0.1', 100, 1);
    ranOneByOne(queue, advance, '10.7.0.1', 2, 5_000);
    for (let call = 1; call <= 3; call++) queue.push(task(call, 'hog', 'h', '10.7.0.1'));
    take(queue, 2);
    // The engine's row runs on the other thread and ends; its next row comes a moment later.
    const row = task(50, 'sales', 'user', '10.0.0.1');
    queue.push(row);
    assert.equal(take(queue, 2), row);
    advance(1);
    queue.finished(row.id);
    assert.equal(queue.shift(2), undefined, "a long host's loop took the thread the LOAD had just used");
    assert.equal(queue.mayStartNow(task(0, 'a', 'u', '10.7.0.1').request, 2), false);
    assert.equal(queue.mayStartNow(task(0, 'a', 'u', '10.0.0.1').request, 2), true);
    advance(1);
    const next = task(51, 'sales', 'user', '10.0.0.1');
    queue.push(next);
    assert.equal(take(queue, 2), next);
    queue.finished(next.id);
    // The engine went quiet: the thread goes to the long host again; with one thread it was never kept.
    advance(KEEP_MS);
    assert.equal(queue.shift(2)?.request.owner.host, '10.7.0.1');
  });

  it('a thread kept for a host is not kept from that host when its own tasks turned long meanwhile', () => {
    let nowMs = 0;
    const advance = (ms: number): number => (nowMs += ms);
    const queue = new TaskQueue(() => nowMs);
    // A new host's first loops run on both threads and end; its tasks are long now, and it sends two more.
    const loops = [task(1), task(2)];
    for (const loop of loops) queue.push(loop);
    take(queue, 2);
    take(queue, 2);
    advance(1_000);
    for (const loop of loops) queue.finished(loop.id);
    for (const call of [3, 4]) queue.push(task(call));
    assert.equal(take(queue, 2)?.request.callId, 3);
    assert.equal(take(queue, 2)?.request.callId, 4, 'the thread kept after its own task stayed free for nobody');
  });

  it('keeps a thread the same way for a new host between its calls, and never for a host whose tasks are long', () => {
    let nowMs = 0;
    const advance = (ms: number): number => (nowMs += ms);
    const queue = new TaskQueue(() => nowMs);
    ranOneByOne(queue, advance, '10.7.0.1', 2, 5_000);
    for (let call = 1; call <= 3; call++) queue.push(task(call, 'hog', 'h', '10.7.0.1'));
    take(queue, 2);
    const first = task(50, 'sales', 'user', '10.0.0.1');
    queue.push(first);
    assert.equal(take(queue, 2), first);
    advance(1);
    queue.finished(first.id);
    assert.equal(queue.shift(2), undefined, "a long host's loop took the thread a new host had just used");
    advance(KEEP_MS);
    const loop = take(queue, 2) as QueuedTask;
    assert.equal(loop.request.owner.host, '10.7.0.1');
    advance(1);
    queue.finished(loop.id);
    assert.equal(queue.shift(2)?.request.owner.host, '10.7.0.1', 'a thread was kept for a host whose tasks are long');
  });

  it("a priority host's call has every other host's task asked back, a long one's too, once each; its own never", () => {
    let nowMs = 0;
    const advance = (ms: number): number => (nowMs += ms);
    const queue = new TaskQueue(
      () => nowMs,
      undefined,
      (host) => host === '10.0.0.7',
    );
    ranOneByOne(queue, advance, '10.7.0.1', 4, 2_000);
    ranOneByOne(queue, advance, '10.5.0.1', 100, 1);
    const long = task(1, 'x', 'u', '10.7.0.1');
    const short = task(2, 'y', 'u', '10.5.0.1');
    queue.push(long);
    queue.push(short);
    take(queue, 2);
    take(queue, 2);
    // The network proven short waits for the long host's loop: a long task is asked back for a priority host only.
    queue.push(task(3, 'y', 'u', '10.5.0.1'));
    advance(10 * YIELD_MAX_MS);
    assert.equal(queue.taskToYield(), undefined);
    const engine = task(4, 'sales', 'u', '10.0.0.7');
    queue.push(engine);
    assert.deepEqual(new Set([queue.taskToYield(), queue.taskToYield()]), new Set([long, short]));
    assert.equal(queue.taskToYield(), undefined);
    queue.yielded(long);
    assert.equal(take(queue, 2), engine);
    // The engine's own task is never asked back, and the long task, sent again, is not asked twice.
    queue.push(task(5, 'sales', 'u', '10.0.0.7'));
    advance(10 * YIELD_MAX_MS);
    assert.equal(queue.taskToYield(), undefined);
    queue.finished(engine.id);
    queue.finished(short.id);
    // Two threads free: the engine's next call and the long task, sent again (the network waits: it is long now).
    assert.deepEqual(new Set([take(queue, 2)?.request.callId, take(queue, 2)?.request.callId]), new Set([1, 5]));
    queue.push(task(6, 'sales', 'u', '10.0.0.7'));
    advance(10 * YIELD_MAX_MS);
    assert.equal(queue.taskToYield(), undefined);
  });

  it('serves a host that waited 100 ms with nothing running first, though 40 lighter networks flood trivial calls', () => {
    let nowMs = 0;
    const advance = (ms: number): number => (nowMs += ms);
    const queue = new TaskQueue(() => nowMs);
    // A host whose calls take a second, heavy; 40 networks each keep one trivial call queued, sent again as it ends.
    ranOneByOne(queue, advance, '10.7.0.1', 3, 1_000);
    for (let i = 0; i < 40; i++) queue.push(task(100 + i, 'hog', 'h', `10.5.${i}.1`));
    const slow = task(1, 'charts', 'u', '10.7.0.1');
    queue.push(slow);
    let waitedMs = 0;
    let served = false;
    while (!served && waitedMs < 60_000) {
      const next = take(queue, 2) as QueuedTask;
      if (next === slow) served = true;
      else {
        advance(1);
        waitedMs++;
        queue.finished(next.id);
        queue.push(task(next.request.callId, 'hog', 'h', next.request.owner.host));
      }
    }
    // Lighter and shorter, the networks always went first: it waited as long as the flood lasted.
    assert.ok(served && waitedMs <= 200, `served ${served} after ${waitedMs} ms`);
  });

  it('gives the next free thread to an app whose tasks are much shorter, though 40 apps of its host loop and it is last in turn', () => {
    let nowMs = 0;
    const queue = new TaskQueue(() => nowMs);
    // The victim app ran a trivial call; 40 other apps of the same host each keep a 5 s loop queued.
    const trivial = task(1, 'victim', 'u');
    queue.push(trivial);
    take(queue, 2);
    nowMs += 1;
    queue.finished(trivial.id);
    for (let i = 0; i < 40; i++) queue.push(task(100 + i, `loop-${i}`, 'u'));
    const threads = [take(queue, 2) as QueuedTask, take(queue, 2) as QueuedTask];
    const call = task(2, 'victim', 'u');
    queue.push(call);
    nowMs += 5_000;
    const done = threads[0] as QueuedTask;
    queue.finished(done.id);
    queue.push(task(done.request.callId, done.request.owner.appId, 'u'));
    // In turn alone it waited for a loop of each app: 40 loops, 100 s on two threads.
    assert.equal(take(queue, 2), call);
  });

  /**
   * `loopers` lines (made by `looper(i)`) each keep a 5 s loop queued on two threads, after `victim`
   * ran one trivial task; the victim's next call is queued last: what the thread freed by a loop takes.
   */
  function afterTrivialAndLoops(
    victim: (callId: number) => QueuedTask,
    looper: (callId: number, i: number) => QueuedTask,
    victimTaskMs = 1,
  ): [QueuedTask, QueuedTask | undefined] {
    let nowMs = 0;
    const queue = new TaskQueue(() => nowMs);
    const trivial = victim(1);
    queue.push(trivial);
    take(queue, 2);
    nowMs += victimTaskMs;
    queue.finished(trivial.id);
    for (let i = 0; i < 40; i++) queue.push(looper(100 + i, i));
    const running = [take(queue, 2) as QueuedTask, take(queue, 2) as QueuedTask];
    const call = victim(2);
    queue.push(call);
    nowMs += 5_000;
    const done = running[0] as QueuedTask;
    queue.finished(done.id);
    queue.push(looper(done.request.callId, 0));
    return [call, take(queue, 2)];
  }

  it('gives the next free thread to a user whose tasks are much shorter, though 40 users of its app loop and it is last in turn', () => {
    // In turn alone it waited for a loop of each user: 40 loops, 98.5 s measured on two threads.
    const [call, next] = afterTrivialAndLoops(
      (id) => task(id, 'sales', 'victim'),
      (id, i) => task(id, 'sales', `user-${i}`),
    );
    assert.equal(next, call);
  });

  it("gives the next free thread to a user's trivial script, though 40 calls of the user's loop are ahead of it", () => {
    const [call, next] = afterTrivialAndLoops(
      (id) => task(id, 'sales', 'u', '127.0.0.1', 'args[0] + 1'),
      (id) => task(id, 'sales', 'u', '127.0.0.1', 'for (;;) {}'),
    );
    assert.equal(next, call);
  });

  it("gives the next free thread to a new user's call of a script the app's other users ran short", () => {
    // Nothing is known of the newcomer; its script is: another user ran it in 1 ms.
    const [call, next] = afterTrivialAndLoops(
      (id) => task(id, 'sales', id === 1 ? 'analyst' : 'newcomer', '127.0.0.1', 'Sum(args[0])'),
      (id, i) => task(id, 'sales', `user-${i}`, '127.0.0.1', 'for (;;) {}'),
    );
    assert.equal(next, call);
  });

  for (const [what, attacker] of [
    ['40 apps of its host', (i: number, callId: number) => task(callId, `atk-${i}`, 'u', '127.0.0.1', 'busy 1.1 s')],
    ['40 users of its app', (i: number, callId: number) => task(callId, 'sales', `user-${i}`, '127.0.0.1', 'busy 1.1 s')],
  ] as const)
    it(`serves a user's 300 ms chart after one running task, though ${what} each keep a 1.1 s task queued`, () => {
      let nowMs = 0;
      const queue = new TaskQueue(() => nowMs);
      const chart = (callId: number): QueuedTask => task(callId, 'sales', 'victim', '127.0.0.1', 'chart');
      const first = chart(1);
      queue.push(first);
      take(queue, 2);
      nowMs += 300;
      queue.finished(first.id);
      // Just over four times as long as the chart: lines that took turns task by task held it 22 s.
      for (let i = 0; i < 40; i++) queue.push(attacker(i, 100 + i));
      const running: { task: QueuedTask; endMs: number }[] = [];
      let victim: QueuedTask | undefined;
      let queuedAtMs = 0;
      let startedAtMs: number | undefined;
      const fill = (): void => {
        for (
          let next = running.length < 2 ? take(queue, 2) : undefined;
          next !== undefined;
          next = running.length < 2 ? take(queue, 2) : undefined
        ) {
          if (next === victim) startedAtMs = nowMs;
          running.push({ task: next, endMs: nowMs + (next === victim ? 300 : 1_100) });
        }
      };
      fill();
      let callId = 1_000;
      while (startedAtMs === undefined && nowMs < 60_000) {
        running.sort((a, b) => a.endMs - b.endMs);
        const done = running.shift() as { task: QueuedTask; endMs: number };
        nowMs = done.endMs;
        queue.finished(done.task.id);
        const i = Number(
          /\d+$/.exec(
            String(done.task.request.owner.appId === 'sales' ? done.task.request.owner.userId : done.task.request.owner.appId),
          )?.[0],
        );
        queue.push(attacker(i, callId++));
        if (victim === undefined && nowMs >= 5_000) {
          victim = chart(2);
          queue.push(victim);
          queuedAtMs = nowMs;
        }
        fill();
      }
      assert.ok(
        startedAtMs !== undefined && startedAtMs - queuedAtMs <= 1_100,
        `waited ${startedAtMs === undefined ? 'past 60 s' : startedAtMs - queuedAtMs} ms`,
      );
    });

  it("keeps a host's last free thread for half a second after a LOAD's row ended, for the LOAD's next row", () => {
    let nowMs = 0;
    const queue = new TaskQueue(() => nowMs);
    const host = '127.0.0.1';
    // Two apps of the engine, one looping call each (known long).
    const x = task(1, 'loop-x', 'u', host, 'for (;;) {}');
    const y = task(2, 'loop-y', 'u', host, 'for (;;) {}');
    queue.push(x);
    queue.push(y);
    take(queue, 2);
    take(queue, 2);
    nowMs += 5_000;
    queue.finished(y.id);
    // A LOAD's row takes the thread y freed and ends at once.
    const row = task(3, 'load', 'u', host, 'args[0] + 1');
    assert.equal(queue.mayStartNow(row.request, 2), true);
    queue.startNow(row);
    nowMs += 1;
    queue.finished(row.id);
    // y's next call comes before the LOAD's next row: it may not take the last free thread (a LOAD made
    // 0.4 rows a second beside two looping apps when it could).
    const yNext = task(4, 'loop-y', 'u', host, 'for (;;) {}');
    assert.equal(queue.mayStartNow(yNext.request, 2), false);
    queue.push(yNext);
    assert.equal(queue.shift(2), undefined);
    assert.equal(queue.mayStartNow(task(5, 'load', 'u', host, 'args[0] + 1').request, 2), true, "the LOAD's next row may");
    // Half a second without a row: the thread is y's.
    nowMs += 501;
    assert.equal(take(queue, 2), yNext);
  });

  /** What a simulated client does next: a task (its time from send to result, and on its thread), or a pause. */
  type Step =
    | { readonly script: string; readonly wallMs: number; readonly threadMs?: number; readonly pauseMs?: number }
    | { readonly sleepMs: number };
  interface Actor {
    readonly app: string;
    readonly user?: string;
    /** Its client host; 127.0.0.1 when not given. */
    readonly host?: string;
    readonly startMs?: number;
    /** Calls it keeps in flight at once, each a chain of steps. */
    readonly chains?: number;
    step(k: number, chain: number, nowMs: number): Step;
  }
  interface Served {
    readonly app: string;
    readonly script: string;
    readonly arrivedMs: number;
    readonly waitedMs: number;
  }

  /**
   * One host's clients on `threads` threads, in steps of a simulated millisecond, as the pool drives the
   * queue: a task goes at once when nothing is queued and mayStartNow, else it is queued and shifted when
   * a thread is free. A task charges its thread time when it has one (a failure, such as a loop at the
   * time limit, has none). Each served task: its app, script, and how long it waited for a thread.
   */
  function simulate(actors: readonly Actor[], untilMs: number, threads = 2, priorityHosts: readonly string[] = []): Served[] {
    let nowMs = 0;
    const queue = new TaskQueue(
      () => nowMs,
      undefined,
      (host) => priorityHosts.includes(host),
    );
    const served: Served[] = [];
    const running = new Map<number, { endsMs: number; threadMs: number | undefined; next: () => void }>();
    const due: { atMs: number; arrive: () => void }[] = [];
    const waiting = new Map<number, { sinceMs: number; wallMs: number; threadMs: number | undefined; next: () => void }>();
    let callId = 1;
    const run = (one: QueuedTask): void => {
      const wait = waiting.get(one.id) as { sinceMs: number; wallMs: number; threadMs: number | undefined; next: () => void };
      waiting.delete(one.id);
      const { appId } = one.request.owner;
      served.push({ app: appId, script: one.request.call.spec.script, arrivedMs: wait.sinceMs, waitedMs: nowMs - wait.sinceMs });
      running.set(one.id, { endsMs: nowMs + wait.wallMs, threadMs: wait.threadMs, next: wait.next });
    };
    const chain = (actor: Actor, index: number, k: number, atMs: number): void => {
      due.push({
        atMs,
        arrive: () => {
          const step = actor.step(k, index, nowMs);
          if ('sleepMs' in step) return chain(actor, index, k + 1, nowMs + step.sleepMs);
          const one = task(callId++, actor.app, actor.user ?? 'u', actor.host ?? '127.0.0.1', step.script);
          const next = (): void => chain(actor, index, k + 1, nowMs + (step.pauseMs ?? 1));
          waiting.set(one.id, { sinceMs: nowMs, wallMs: step.wallMs, threadMs: step.threadMs, next });
          if (running.size < threads && queue.length === 0 && queue.mayStartNow(one.request, threads)) {
            queue.startNow(one);
            run(one);
          } else queue.push(one);
        },
      });
    };
    for (const actor of actors) for (let i = 0; i < (actor.chains ?? 1); i++) chain(actor, i, 0, actor.startMs ?? 0);
    for (; nowMs < untilMs; nowMs++) {
      for (const [id, one] of running)
        if (one.endsMs <= nowMs) {
          running.delete(id);
          queue.finished(id, one.threadMs);
          one.next();
        }
      for (const next of due.filter((d) => d.atMs <= nowMs)) {
        due.splice(due.indexOf(next), 1);
        next.arrive();
      }
      for (
        let next = running.size < threads ? queue.shift(threads) : undefined;
        next;
        next = running.size < threads ? queue.shift(threads) : undefined
      ) {
        queue.started(next);
        run(next);
      }
    }
    return served;
  }

  /** A loop to the time limit: 5 s on its thread, answered as a failure (no thread time of its own). */
  const loop = (name: string): Step => ({ script: `for (;;) {} /* ${name} */`, wallMs: 5_000 });
  const trivial = (name: string): Step => ({ script: `args[0] /* ${name} */`, wallMs: 2, threadMs: 0.2 });

  /**
   * Two apps of the engine loop (each sent again as it ends; with `trivialBetween`, that many trivial
   * calls first, each a script of its own), a third app's LOAD sends one-row calls back to back, a
   * simulated minute. A row takes 0.2 ms on its thread; `slowEvery`: every that many rows, 300 ms from
   * send to result (a busy machine's hand-offs). The longest a row waited once the LOAD had run 10 s: a
   * new app enters behind the apps it finds (NEW_LINE_MS), so its first rows may wait for a loop.
   */
  function loadBesideLoops(trivialBetween: number, slowEvery: number): { rows: number; longestWaitMs: number } {
    const looper = (app: string): Actor => ({
      app,
      step: (k) => (k % (trivialBetween + 1) === trivialBetween ? loop(`${app} ${k}`) : { script: 'args[0]', wallMs: 2, threadMs: 0.2 }),
    });
    const load: Actor = {
      app: 'load',
      user: 'loader',
      startMs: 2_000,
      step: (k) => ({ script: 'args[0] + 1', wallMs: slowEvery > 0 && k % slowEvery === slowEvery - 1 ? 300 : 2, threadMs: 0.2 }),
    };
    const rows = simulate([looper('loop-x'), looper('loop-y'), load], 62_000).filter((one) => one.app === 'load');
    const settled = rows.filter((one) => one.arrivedMs >= 12_000);
    return { rows: rows.length, longestWaitMs: Math.max(...settled.map((one) => one.waitedMs)) };
  }

  for (const [what, trivialBetween, slowEvery] of [
    ['two looping apps', 0, 0],
    ['two looping apps, and a busy machine slows one row in fifty to 300 ms', 0, 50],
    ['two apps that make ten trivial calls between loops', 10, 0],
  ] as const)
    it(`keeps a LOAD's thread beside ${what}: once under way, no row waits for a loop`, () => {
      const { rows, longestWaitMs } = loadBesideLoops(trivialBetween, slowEvery);
      assert.ok(longestWaitMs < 1_000, `a row waited ${longestWaitMs} ms for a thread (${rows} rows in a minute)`);
      // Alone: a row every 3 ms (20,000 a minute); with one in fifty at 300 ms, one every 9 ms (6,700).
      assert.ok(rows > (slowEvery > 0 ? 5_000 : 15_000), `${rows} rows in a minute`);
    });

  it("keeps one listed engine's LOAD going beside another listed engine's two looping apps", () => {
    // Both engines in SSE_PRIORITY_HOSTS: no lane between them, and a listed host's task is never asked
    // back. Each loop's end freed a thread the LOAD's next row had not reached yet: 0.4 rows a second.
    const looper = (app: string): Actor => ({ app, host: '10.0.0.1', step: (k) => loop(`${app} ${k}`) });
    const load: Actor = {
      app: 'load',
      host: '10.0.0.2',
      startMs: 2_000,
      step: () => ({ script: 'args[0] + 1', wallMs: 2, threadMs: 0.2 }),
    };
    const rows = simulate([looper('loop-x'), looper('loop-y'), load], 32_000, 2, ['10.0.0.1', '10.0.0.2']).filter(
      (one) => one.app === 'load',
    );
    const longest = Math.max(...rows.filter((one) => one.arrivedMs >= 8_000).map((one) => one.waitedMs));
    assert.ok(longest < 1_000, `a row waited ${longest} ms for a thread (${rows.length} rows in 30 s)`);
    assert.ok(rows.length > 7_000, `${rows.length} rows in 30 s`);
  });

  /** A queue with these hosts listed (SSE_PRIORITY_HOSTS), on a clock the test moves. */
  function listedQueue(...listed: string[]): { queue: TaskQueue; clock: { ms: number } } {
    const clock = { ms: 0 };
    return {
      queue: new TaskQueue(
        () => clock.ms,
        undefined,
        (host) => listed.includes(host),
      ),
      clock,
    };
  }

  /** One-row calls of an app of `host`, each sent when called, served at once and ended short 2 ms later. */
  function shortCalls(queue: TaskQueue, clock: { ms: number }, host: string, app: string): () => void {
    let callId = 10;
    return () => {
      const one = task(callId++, app, 'u', host, 'args[0]');
      queue.push(one);
      assert.equal(take(queue, 2), one, `${app} call ${one.request.callId} at ${clock.ms} ms`);
      clock.ms += 2;
      queue.finished(one.id, 0.2);
    };
  }

  /** The listed engine (10.0.0.1) runs a chart on one thread of two, an unlisted network (10.9.0.1) a loop on the other. */
  function engineChartBesideALoop(): { queue: TaskQueue; clock: { ms: number }; loop: QueuedTask } {
    const { queue, clock } = listedQueue('10.0.0.1');
    const loop = task(1, 'loop', 'l', '10.9.0.1', 'for (;;) {}');
    queue.push(loop);
    assert.equal(take(queue, 2), loop);
    const chart = task(2, 'chart', 'v', '10.0.0.1', 'chart()');
    queue.push(chart);
    assert.equal(take(queue, 2), chart);
    return { queue, clock, loop };
  }

  it("gives a listed engine's chart the free thread within about its time while its own clicks come and another host's task holds the other", () => {
    const { queue, clock } = listedQueue('10.0.0.1');
    // Another network's loop holds one thread of two; the engine's clicks end short every 300 ms.
    queue.push(task(1, 'loop', 'l', '10.9.0.1', 'for (;;) {}'));
    assert.equal(take(queue, 2)?.request.callId, 1);
    const click = shortCalls(queue, clock, '10.0.0.1', 'clicks');
    click();
    const chart = task(3, 'chart', 'v', '10.0.0.1', 'chart()');
    queue.push(chart);
    // Kept for the clicks a while; kept for as long as they came, it had no thread until the loop ended (5 s).
    for (; clock.ms < 900; clock.ms += 100) {
      if (clock.ms % 300 < 100) click();
      assert.equal(take(queue, 2), undefined, `the chart took the clicks' thread at ${clock.ms} ms`);
    }
    click();
    clock.ms += 200;
    assert.equal(take(queue, 2), chart);
  });

  it("keeps a thread for one listed engine's LOAD from another's chart for about the chart's time, not for ever", () => {
    const { queue, clock } = listedQueue('10.0.0.1', '10.0.0.2', '10.0.0.3');
    // Engine C's loop holds one thread of two (a listed host's task is never asked back).
    queue.push(task(1, 'loop', 'l', '10.0.0.3', 'for (;;) {}'));
    assert.equal(take(queue, 2)?.request.callId, 1);
    const row = shortCalls(queue, clock, '10.0.0.2', 'load');
    row();
    // Engine A's chart arrives as engine B's LOAD runs: B's rows keep the thread for a while...
    const chart = task(2, 'chart', 'v', '10.0.0.1', 'chart()');
    queue.push(chart);
    for (; clock.ms < 900; clock.ms += 1) {
      assert.equal(take(queue, 2), undefined, `the chart took the LOAD's thread at ${clock.ms} ms`);
      row();
    }
    // ...and the chart takes it once it has waited about its time (at most a second).
    clock.ms += 200;
    assert.equal(take(queue, 2), chart);
  });

  it('holds a task asked back for a listed engine for a second at most, though the engine stays busy', () => {
    const { queue, clock, loop } = engineChartBesideALoop();
    queue.push(task(3, 'load', 'r', '10.0.0.1', 'args[0]'));
    clock.ms += YIELD_MAX_MS;
    assert.equal(queue.taskToYield(), loop);
    assert.ok(queue.yielded(loop));
    // The engine's LOAD goes on beside its chart: the loop waits a second, then takes the thread.
    let callId = 10;
    for (let row = take(queue, 2); clock.ms < YIELD_MAX_MS + 1_000; clock.ms += 1) {
      assert.notEqual(row, loop, `the loop went back ${clock.ms - YIELD_MAX_MS} ms after it was asked back`);
      if (row !== undefined) queue.finished(row.id, 0.2);
      queue.push(task(callId++, 'load', 'r', '10.0.0.1', 'args[0]'));
      row = take(queue, 2);
    }
    // A second after it was asked back, the next free thread may be its again, the LOAD still going.
    const served: (QueuedTask | undefined)[] = [];
    for (let i = 0; i < 3 && !served.includes(loop); i++) {
      const next = take(queue, 2);
      served.push(next);
      if (next !== undefined && next !== loop) queue.finished(next.id, 0.2);
      queue.push(task(callId++, 'load', 'r', '10.0.0.1', 'args[0]'));
    }
    assert.ok(served.includes(loop), `the loop was held past a second (${calls(served).join(', ')})`);
  });

  it('holds a task asked back for a listed engine while the engine is active, then runs it', () => {
    const { queue, clock, loop } = engineChartBesideALoop();
    const row = task(3, 'load', 'r', '10.0.0.1', 'args[0]');
    queue.push(row);
    clock.ms += YIELD_MAX_MS;
    assert.equal(queue.taskToYield(), loop);
    assert.ok(queue.yielded(loop));
    // Its host had no task running and the engine one: it went first and took back the thread at once.
    assert.equal(take(queue, 2), row);
    clock.ms += 1;
    queue.finished(row.id, 0.2);
    assert.equal(take(queue, 2), undefined, 'taken back between two rows of the engine');
    clock.ms += 600;
    assert.equal(take(queue, 2), loop, 'the engine quiet for half a second');
  });

  it("serves an app's chart after about one running task, though other apps made trivial calls for a while before their long ones", () => {
    // Four apps each make a trivial call every 100 ms for 10 s, then two 4.8 s calls at once; again.
    const attacker = (app: string): Actor => ({
      app,
      chains: 2,
      step: (_k, chain, nowMs) => {
        const inCycle = nowMs % 20_000;
        if (inCycle < 10_000) return chain === 0 ? { ...trivial(`${app} ${nowMs}`), pauseMs: 100 } : { sleepMs: 10_000 - inCycle };
        return { script: `busy(4800) /* ${app} */`, wallMs: 4_800, threadMs: 4_800, pauseMs: 20_000 - ((nowMs + 4_800) % 20_000) };
      },
    });
    const chart: Actor = { app: 'victim', step: () => ({ script: 'chart()', wallMs: 300, threadMs: 300, pauseMs: 100 }) };
    const charts = simulate([0, 1, 2, 3].map((i) => attacker(`trickle-${i}`)).concat(chart), 60_000).filter((one) => one.app === 'victim');
    // The first cycle's long calls are scripts the queue has not timed, judged by their apps' trivial
    // calls: each app's first one goes ahead of the chart once (two rounds of the two threads).
    const longest = Math.max(...charts.map((one) => one.waitedMs));
    assert.ok(longest < 10_500, `a chart waited ${longest} ms for a thread (${charts.length} charts in a minute)`);
    const later = Math.max(...charts.filter((one) => one.arrivedMs >= 20_000).map((one) => one.waitedMs));
    assert.ok(later < 5_500, `once their scripts were timed, a chart waited ${later} ms for a thread`);
  });

  it("asks back a task of the host timed short that runs long while a LOAD's short row waits, and keeps the thread from it after", () => {
    let nowMs = 0;
    const queue = new TaskQueue(() => nowMs);
    const host = '127.0.0.1';
    const text = '(args[0] === 1 ? (() => { for (;;) {} })() : args[0])';
    const ran = (one: QueuedTask): void => {
      queue.startNow(one);
      nowMs += 1;
      queue.finished(one.id, 0.2);
    };
    // Another app loops on one thread; the attacker's text is timed short by a trivial run.
    queue.push(task(1, 'loop-x', 'u', host, 'for (;;) {}'));
    take(queue, 2);
    ran(task(2, 'atk', 'u', host, text));
    ran(task(3, 'load', 'u', host, 'args[0] + 1'));
    // The same text loops this time: short by its time, it may take the last free thread.
    const disguised = task(4, 'atk', 'u', host, text);
    assert.equal(queue.mayStartNow(disguised.request, 2), true);
    queue.startNow(disguised);
    const row = task(5, 'load', 'u', host, 'args[0] + 1');
    queue.push(row);
    nowMs += 50;
    assert.equal(queue.taskToYield(), undefined, 'asked back before YIELD_MIN_MS');
    nowMs += YIELD_MIN_MS;
    assert.equal(queue.taskToYield(), disguised, "the disguised loop was not asked back for the LOAD's row");
    assert.equal(queue.yielded(disguised), true);
    // The row goes; the loop, asked back, is kept from the last thread while the LOAD goes on.
    assert.equal(take(queue, 2), row);
    nowMs += 1;
    queue.finished(row.id, 0.2);
    assert.equal(queue.shift(2), undefined, 'the loop asked back took the thread the LOAD had just used');
  });

  it('keeps turns among users whose tasks take about as long', () => {
    const [call, next] = afterTrivialAndLoops(
      (id) => task(id, 'sales', 'victim', '127.0.0.1', 'for (;;) {}'),
      (id, i) => task(id, 'sales', `user-${i}`, '127.0.0.1', 'for (;;) {}'),
      5_000,
    );
    // The victim's loop took as long as the others': the next user in turn goes (0 and 1 ran first).
    assert.equal(next?.request.owner.userId, 'user-2');
    assert.notEqual(next, call);
  });

  it('ignores a finish of a task it never saw start, and a second start or finish', () => {
    const queue = new TaskQueue(frozenClock);
    for (let call = 1; call <= 3; call++) queue.push(task(call, 'A'));
    const first = take(queue) as QueuedTask;
    queue.started(first);
    queue.finished(999_999);
    const b = task(9, 'B');
    queue.push(b);
    // A has one running (counted once), B none: B goes first.
    assert.equal(take(queue), b);
    queue.finished(first.id);
    queue.finished(first.id);
    // A 0 running, B 1: A goes.
    assert.equal(take(queue)?.request.owner.appId, 'A');
  });
});
