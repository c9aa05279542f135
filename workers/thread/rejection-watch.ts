// biome-ignore-all lint/suspicious/noRedundantUseStrict: the function is turned into source text and run as a script, where it is not strict otherwise
/**
 * Code that runs INSIDE each sandbox context, like isolate-runtime.ts (turned into source text, so
 * nothing from module scope). It keeps isolated-vm from reading what a script rejected.
 *
 * After every entry into an isolate, once the time limit is disarmed, isolated-vm takes the first
 * promise rejected with no handler and copies its reason out as the entry's error: it reads its
 * `message`, `stack` and `name` (isolated-vm #109; src/isolate/environment.cc TaskEpilogue, 5.0 to
 * 7.0). A reason that is a Proxy, or has a getter, or a `toString` on its message, or an Error whose
 * stack V8 formats through the script's `Error.prepareStackTrace`, runs the script there with no
 * limit: it held the thread until the watchdog retired the whole sandbox process. So each run first
 * rejects a promise of its own with a string reason (`begin`) and keeps it until the run's output
 * is taken: isolated-vm finds that one first, copies the string, and forgets every other rejection
 * of the entry unread.
 *
 * A rejection the script leaves unhandled still fails its call, as far as the runtime can see it:
 * the global `Promise` is a Proxy whose construct trap watches each promise it makes (so `new
 * Promise`, `Promise.reject`, `Promise.all` and every promise a `then` derives, which V8 makes
 * through the species constructor); a promise counts as handled once something reads its
 * `constructor`, which `then`, `catch`, `finally`, `await`, `Promise.resolve` and resolving
 * another promise with it all do (with an accessor there, V8 looks it up on every one of them).
 * Promises V8 makes itself (an async function's result, `import()`) are watched only when they are
 * the script's result; elsewhere their rejections are dropped, never read. `end` gives the first
 * unhandled reason; the runtime turns it into text inside the time limit, in an entry of its own that
 * holds a rejection of its own first too (isolate-runtime.ts `describe`).
 */

/** The reason of each run's own rejection: what isolated-vm hands the host when a run ends. */
export const RUN_END = 'sandbox-runtime: run ended';

export interface RejectionHooks {
  /** First thing in a run: puts the run's own rejection first in isolated-vm's list. */
  begin(): void;
  /** First thing in any other entry that runs script code: its own rejection, with this reason. */
  hold(reason: unknown): void;
  /** A script's result: when it is a promise, even one V8 made itself, its rejection is the script's to handle. */
  observe(value: object): void;
  /** After the run's microtasks: the first rejection the script left unhandled (boxed), or null. */
  end(): { reason: unknown } | null;
}

export function installRejectionWatch(global: Record<string, unknown>, runEnd: string): RejectionHooks {
  'use strict';
  const apply = Reflect.apply;
  const construct = Reflect.construct;
  const defineProperty = Reflect.defineProperty;
  const RealPromise = Promise;
  const promiseThen = RealPromise.prototype.then;
  const promiseReject = RealPromise.reject;
  const PromiseProto = RealPromise.prototype;
  const getPrototypeOf = Reflect.getPrototypeOf;
  const WeakSetCtor = WeakSet;
  const weakAdd = WeakSet.prototype.add;
  const weakHas = WeakSet.prototype.has;
  const MapCtor = Map;
  const mapSet = Map.prototype.set;
  const mapForEach = Map.prototype.forEach;

  /** Promises of this run that rejected, in the order they did, with their reasons. */
  let rejected = new MapCtor<object, unknown>();
  let handled = new WeakSetCtor<object>();
  /** Set while the watch attaches its own reaction, whose species lookup is not the script's handler. */
  let watching = false;
  /** The run's own rejection, kept reachable: isolated-vm holds it weakly and skips it once collected. */
  const kept: { endMark: Promise<never> | undefined } = { __proto__: null, endMark: undefined } as { endMark: undefined };

  const PromiseProxy: PromiseConstructor = new Proxy(RealPromise, {
    construct(target, args, newTarget): object {
      const promise = construct(target, args, newTarget === PromiseProxy ? target : newTarget) as object;
      if (!watching) watch(promise);
      return promise;
    },
  });

  function watch(promise: object): void {
    watching = true;
    try {
      apply(promiseThen, promise, [undefined, (reason: unknown) => apply(mapSet, rejected, [promise, reason])]);
    } catch {
      // A subclass whose constructor gave something else than a promise: nothing to watch.
    } finally {
      watching = false;
    }
  }

  function hold(reason: unknown): void {
    kept.endMark = apply(promiseReject, RealPromise, [reason]) as Promise<never>;
  }

  defineProperty(RealPromise.prototype, 'constructor', {
    __proto__: null,
    get(this: unknown): PromiseConstructor {
      if (!watching && typeof this === 'object' && this !== null) apply(weakAdd, handled, [this]);
      return PromiseProxy;
    },
    set(this: unknown, value: unknown): void {
      defineProperty(this as object, 'constructor', {
        __proto__: null,
        value,
        writable: true,
        enumerable: true,
        configurable: true,
      } as PropertyDescriptor);
    },
    enumerable: false,
    configurable: true,
  } as PropertyDescriptor);
  global['Promise'] = PromiseProxy;

  return {
    begin(): void {
      hold(runEnd);
      rejected = new MapCtor<object, unknown>();
      handled = new WeakSetCtor<object>();
    },
    hold,
    observe(value: object): void {
      try {
        if (getPrototypeOf(value) === PromiseProto) watch(value);
      } catch {
        // A Proxy whose getPrototypeOf trap throws: no promise, and no error of the script's row.
      }
    },
    end(): { reason: unknown } | null {
      let first: { reason: unknown } | null = null;
      apply(mapForEach, rejected, [
        (reason: unknown, promise: object) => {
          if (first === null && apply(weakHas, handled, [promise]) !== true) first = { __proto__: null, reason } as { reason: unknown };
        },
      ]);
      rejected = new MapCtor<object, unknown>();
      kept.endMark = undefined;
      return first;
    },
  };
}
