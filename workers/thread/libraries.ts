// biome-ignore-all lint/suspicious/noRedundantUseStrict: installRequire is turned into source text and run as a script, where it is not strict otherwise
// biome-ignore-all lint/style/useTemplate: installRequire runs as source text in the sandbox, written plainly
/**
 * The libraries a script may `require`, on the sandbox thread. The front sends them as code (a
 * LIBRARIES frame, src/contract/libraries.ts); here they become one script per isolate whose only work
 * when run is to make a factory `function (module, exports, require)` per library: compiled once per
 * isolate (V8's code cache, made by the thread's first compile, serves the isolates built after it),
 * run in each fresh context as it is prepared (a few microseconds: nothing of a library runs), and
 * each factory is called only when a script first requires its library in that context. So a
 * library's code and objects live in the isolate's heap under its limit, its evaluation runs in the
 * script's time under the call's limit, and each context has its own exports: what one call does to
 * them dies with its context, which no other app, user or script ever gets
 * (docs/architecture.md, "Which calls share a context").
 */
import type ivm from 'isolated-vm';

import type { LibraryBundle } from '../../src/contract/libraries';

/** The global the library script leaves for the runtime, which takes it and deletes it before any script runs. */
export const LIBRARIES_GLOBAL = '__sseLibraries';

/** What the library script leaves in a context: the factories, the names offered, the console's formatter. */
export interface LibraryTable {
  readonly factories: Record<string, unknown> | null;
  readonly names: readonly string[];
  readonly inspector: unknown;
}

interface CompiledSet {
  readonly source: string;
  cachedData: ivm.ExternalCopy<ArrayBuffer> | undefined;
  readonly scripts: WeakMap<ivm.Isolate, ivm.Script>;
}

/** The thread's current library set and its compiled script in each isolate the thread builds. */
export class IsolateLibraries {
  private current: CompiledSet | null = null;

  /** A new set from the front: contexts prepared from now on get it. */
  set(bundle: LibraryBundle): void {
    this.current = { source: librarySource(bundle), cachedData: undefined, scripts: new WeakMap() };
  }

  get loaded(): boolean {
    return this.current !== null;
  }

  /** Leaves the library table in a fresh context, before the runtime is installed in it. */
  bind(isolate: ivm.Isolate, context: ivm.Context, timeoutMs: number): void {
    if (this.current === null) return;
    this.compiled(isolate, this.current).runSync(context, { timeout: timeoutMs });
  }

  private compiled(isolate: ivm.Isolate, set: CompiledSet): ivm.Script {
    const kept = set.scripts.get(isolate);
    if (kept) return kept;
    const script =
      set.cachedData === undefined
        ? isolate.compileScriptSync(set.source, { filename: 'libraries.js', produceCachedData: true })
        : isolate.compileScriptSync(set.source, { filename: 'libraries.js', cachedData: set.cachedData });
    const produced = (script as ivm.Script & ivm.CachedDataResult).cachedData;
    if (set.cachedData === undefined && produced) set.cachedData = produced;
    set.scripts.set(isolate, script);
    return script;
  }
}

/**
 * One script for the whole set: each factory is parenthesised, which V8 takes as a hint to compile
 * it at once, so the code cache holds each library's top level and a first require parses nothing.
 */
export function librarySource(bundle: LibraryBundle): string {
  const factories = bundle.libraries.map(
    ({ name, code }) => `${JSON.stringify(name)}: (function (module, exports, require) {\n${code}\n})`,
  );
  const names = JSON.stringify(bundle.libraries.map(({ name }) => name));
  return [
    `globalThis.${LIBRARIES_GLOBAL} = {`,
    `factories: { __proto__: null, ${factories.join(',\n')} },`,
    `names: ${names},`,
    `inspector: (function (module, exports, require) {\n${bundle.inspector}\n})`,
    '};',
  ].join('\n');
}

/** An empty bundle, for a Sandbox made before (or without) the front's LIBRARIES frame. */
export function noLibraries(): LibraryBundle {
  return { libraries: [], inspector: '' };
}

/**
 * Runs INSIDE each sandbox context (as source text: nothing from module scope). Defines `require`
 * over the table the library script left; the first require of a name in a context evaluates its
 * factory there, later ones return the same exports. Anything not offered throws an Error naming
 * what was asked and what is available, which fails the call with INVALID_ARGUMENT unless the script
 * catches it, as Node's "Cannot find module" would.
 */
export function installRequire(global: Record<string, unknown>, table: LibraryTable | undefined): void {
  'use strict';
  const apply = Reflect.apply;
  const defineProperty = Reflect.defineProperty;
  const hasOwn = Object.prototype.hasOwnProperty;
  const StringFn = String;
  const ErrorFn = Error;
  const TypeErrorFn = TypeError;
  const join = Array.prototype.join;
  const factories = table?.factories ?? null;
  const names = table ? table.names : [];
  const exportsByName = new Map<string, unknown>();
  const mapGet = Map.prototype.get;
  const mapHas = Map.prototype.has;
  const mapSet = Map.prototype.set;
  const mapDelete = Map.prototype.delete;
  const available =
    names.length === 0
      ? 'no library is available on this plugin (SSE_LIBRARIES=none, and no SSE_LIBRARIES_DIR)'
      : 'available: ' + (apply(join, names, [', ']) as string);

  function require(name: unknown): unknown {
    if (typeof name !== 'string') throw new TypeErrorFn('require() takes a library name as text, such as require("simple-statistics")');
    if (apply(mapHas, exportsByName, [name]) === true) return apply(mapGet, exportsByName, [name]);
    const factory = factories !== null && apply(hasOwn, factories, [name]) === true ? factories[name] : undefined;
    if (typeof factory !== 'function') {
      const asked = name.length > 100 ? StringFn.prototype.slice.call(name, 0, 100) + '…' : name;
      throw new ErrorFn("require('" + asked + "'): scripts run in a sandbox and may require only the plugin's libraries; " + available);
    }
    const module = { exports: {} as unknown };
    // Set before the factory runs, as Node does: two libraries that require each other see partial exports.
    apply(mapSet, exportsByName, [name, module.exports]);
    try {
      apply(factory, module.exports, [module, module.exports, require]);
    } catch (error) {
      apply(mapDelete, exportsByName, [name]);
      throw error;
    }
    apply(mapSet, exportsByName, [name, module.exports]);
    return module.exports;
  }
  defineProperty(global, 'require', { value: require, writable: true, enumerable: false, configurable: true });
}
