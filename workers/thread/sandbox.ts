/**
 * One isolated-vm isolate per thread. A context is never shared between calls of different apps,
 * users or scripts: its key (src/calls/context-key.ts) is a hash of the three, so a context left by one
 * call is reused only by the next call of the same script, from the same user in the same app (the
 * row-by-row calls of one LOAD), and then with its global object reset (isolate-runtime.ts). Any
 * other call gets a fresh context, prepared ahead of time because creating one costs ~0.9 ms.
 * Compiled scripts are cached per isolate by text; a script compiled once runs in any context.
 * After the isolate hits its memory limit it is disposed by isolated-vm and rebuilt here.
 *
 * Contexts share what belongs to the isolate: its microtask queue, its heap and caches, and V8's
 * protectors (the fast paths of built-ins). So the isolate is discarded and rebuilt (~5 ms) after any
 * time limit (jobs a terminated call left in the queue would run in the next tenant's time), after a
 * script changed a built-in that V8 guards isolate-wide, and a call that fails on memory in an
 * isolate that served other context keys runs once more on a fresh one before it is failed. Every
 * entry into the isolate that can run code does so under a time limit.
 */
import type ivm from 'isolated-vm';

import { PluginError } from '../../src/contract/errors';
import type { LibraryBundle } from '../../src/contract/libraries';
import { memoryLimitError, timeLimitError } from '../../src/contract/limit-errors';
import { DataType, type ScriptSpec } from '../../src/contract/task';
import { installConsole } from './console';
import { installRuntime, type RuntimeEntries, type RuntimeInput, type RuntimeOutput } from './isolate-runtime';
import { NO_STOPPER, type Stopper } from './isolate-stopper';
import { isolatedVm } from './isolated-vm';
import { IsolateLibraries, installRequire, LIBRARIES_GLOBAL } from './libraries';
import { installRejectionWatch, RUN_END } from './rejection-watch';
import { escapesWrapper, type ScriptForm, scriptSyntaxError, wrapperEscapeError, wrapScript } from './script-source';

/**
 * The runtime, with `require` over the library table the context was given (libraries.ts), the
 * rejection watch (rejection-watch.ts: before the runtime, which keeps the global object as it is
 * then) and the `console` (console.ts).
 */
const RUNTIME_SOURCE = `(function (global) {
  const table = global.${LIBRARIES_GLOBAL};
  delete global.${LIBRARIES_GLOBAL};
  (${installRequire.toString()})(global, table);
  const rejections = (${installRejectionWatch.toString()})(global, ${JSON.stringify(RUN_END)});
  return (${installRuntime.toString()})(global, rejections, ${JSON.stringify(RUN_END)}, (${installConsole.toString()})(global, table === undefined ? undefined : table.inspector));
})(globalThis)`;
const SCRIPT_CACHE_SIZE = 64;

interface PreparedContext {
  readonly context: ivm.Context;
  readonly run: ivm.Reference<RuntimeEntries['run']>;
  readonly take: ivm.Reference<RuntimeEntries['take']>;
  readonly describe: ivm.Reference<RuntimeEntries['describe']>;
}

interface KeptContext extends PreparedContext {
  fn: ivm.Reference<unknown>;
  /** The call that used it last: another call of the same key gets it with its globals reset. */
  callId: number;
  idle: NodeJS.Timeout | undefined;
}

/** The warm-up's call and key: no call of the front has them (call ids count up from 1; keys are hashes). */
const WARM_UP_CALL = -1;
const WARM_UP_KEY = 'warm-up';
/** Past limit / this of heap used, other keys' kept contexts are let go before a call runs. */
const KEEP_HEAP_FRACTION = 4;
/** Idle time after which a thread prepares its next fresh context (see scheduleSpare). */
const SPARE_IDLE_MS = 2;
/** Contexts kept per thread (a few interleaving calls or loads stay warm); more evict the oldest. */
const MAX_KEPT_CONTEXTS = 4;
/** A call's next chunk, or a LOAD's next row, comes within milliseconds; after this a context is released. */
const KEPT_CONTEXT_IDLE_MS = 1_000;

export interface SandboxLimits {
  readonly memoryLimitMb: number;
  readonly scriptTimeoutMs: number;
  /** A call's console bounds (SSE_CONSOLE_LINES, SSE_CONSOLE_BYTES); 0: the console keeps nothing. */
  readonly consoleLines?: number;
  readonly consoleBytes?: number;
}

export class Sandbox {
  private isolate: ivm.Isolate;
  private runtime: ivm.Script;
  private readonly scripts = new Map<string, ivm.Script>();
  /** Contexts of recent calls by context key, oldest first. */
  private readonly kept = new Map<string, KeptContext>();
  private spare: PreparedContext | null = null;
  private spareTimer: NodeJS.Timeout | undefined;
  private lastTaskEnd = 0;
  /** Context keys this isolate served since it was built: the first one, and whether any other came. */
  private firstKey: string | undefined;
  private servedOthers = false;
  private readonly libraries = new IsolateLibraries();
  rebuilds = 0;
  /** CPU time of the last evaluate's isolate entries, in ms (Infinity when its isolate went away): the fast path tells a slow script from a busy CPU by it. */
  lastCpuMs = 0;

  constructor(
    private readonly limits: SandboxLimits,
    private readonly onCatastrophicError: (message: string) => void,
    /** Told when the thread enters the isolate between tasks (a spare context), so its watchdog sees it. */
    private readonly activity: ThreadActivity = IDLE_ONLY,
    /** Disposes the isolate from another thread when the running task's call ended (isolate-stopper.ts). */
    private readonly stopper: Stopper = NO_STOPPER,
  ) {
    this.isolate = newIsolate(limits.memoryLimitMb, onCatastrophicError);
    this.runtime = this.isolate.compileScriptSync(RUNTIME_SOURCE, { filename: 'runtime.js' });
    this.stopper.arm(this.isolate);
    this.scheduleSpare();
  }

  /**
   * Runs the script over the given input; throws PluginError for every failure. Tasks with the same
   * context key reuse its context: V8 keeps optimised code per context (a fresh one per chunk ran ~10x
   * slower) and creating one costs ~0.9 ms a call (bench/RESULTS.md).
   */
  evaluate(spec: ScriptSpec, input: RuntimeInput, timeoutMs: number, callId: number, contextKey: string, retried = false): RuntimeOutput {
    // Disposed between tasks: a stop that reached the isolate after its task's run had ended (isolate-stopper.ts).
    if (this.isolate.isDisposed) this.rebuild();
    const started = performance.now();
    const leftMs = (): number => Math.max(1, Math.floor(timeoutMs - (performance.now() - started)));
    const sharedIsolate = this.serve(contextKey);
    const isolate = this.isolate;
    let cpuBeforeNs: bigint | undefined;
    let context: KeptContext | undefined;
    try {
      // In the try: the stopper may dispose the isolate from its own thread at any moment.
      cpuBeforeNs = isolate.cpuTime;
      this.makeRoomFor(contextKey);
      context = this.contextFor(spec, contextKey, timeoutMs);
      const reset = context.callId !== callId && context.callId !== 0;
      context.callId = callId;
      // A plugin function's file-level helpers live in the closure its factory made: a new call gets a new one.
      if (reset && spec.factory === true) this.renew(context, spec, timeoutMs);
      const inputCopy = new isolatedVm.ExternalCopy({ ...input, reset }).copyInto({ release: true });
      runChunk(context.run, [context.fn.derefInto(), inputCopy], leftMs());
      const taken = context.take.applySync(undefined, [], { timeout: leftMs(), result: { copy: true } }) as RuntimeOutput;
      const output = !taken.ok && taken.kind === 'reject' ? describeRejection(context.describe, taken, leftMs()) : taken;
      this.settle(contextKey, context, output);
      if (!output.ok && output.kind === 'dirty') return this.evaluate(spec, input, leftMs(), callId, contextKey, retried);
      if (!retried && sharedIsolate && refusedMemory(output)) return this.evaluateAlone(spec, input, leftMs(), callId, contextKey);
      this.lastCpuMs = cpuMsSince(isolate, cpuBeforeNs);
      return output;
    } catch (error) {
      if (context) this.release(context);
      this.lastCpuMs = cpuBeforeNs === undefined ? 0 : cpuMsSince(isolate, cpuBeforeNs);
      const failure = this.failure(error);
      if (!retried && sharedIsolate && failure.code === 'RESOURCE_EXHAUSTED')
        return this.evaluateAlone(spec, input, leftMs(), callId, contextKey);
      throw failure;
    } finally {
      this.scheduleSpare();
    }
  }

  /** A new library set from the front: every context from now on gets it (kept ones had the old set). */
  setLibraries(bundle: LibraryBundle): void {
    if (this.isolate.isDisposed) this.rebuild();
    this.libraries.set(bundle);
    this.dropKept();
    if (this.spare) this.release(this.spare);
    this.spare = null;
  }

  /**
   * Runs tiny scripts once through the runtime's row loop (numbers and text), so V8 compiles the
   * runtime's functions before the first task: a first task paid 20-35 ms of CPU for that, measured,
   * and outgrew the fast path's budget (workers/fast-path.ts). Then forgets they ran.
   */
  warmUp(): void {
    const base = { mode: 0, rows: 1, table: false, firstRow: 0, bound: [], maxChars: 1024, maxColumns: 1, maxKeyBytes: 1 } as const;
    const runs: [DataType, RuntimeInput][] = [
      [DataType.NUMERIC, { ...base, ret: DataType.NUMERIC, cols: [{ t: DataType.NUMERIC, n: new Float64Array([1]), s: null, l: null }] }],
      [DataType.STRING, { ...base, ret: DataType.STRING, cols: [{ t: DataType.STRING, n: null, s: 'a', l: new Uint32Array([1]) }] }],
    ];
    for (const [type, input] of runs) {
      const spec: ScriptSpec = {
        script: 'args[0]',
        paramTypes: [type],
        boundNames: [''],
        returnType: type,
        mode: 'rows',
        tableAllowed: false,
      };
      try {
        this.evaluate(spec, input, this.limits.scriptTimeoutMs, WARM_UP_CALL, WARM_UP_KEY);
      } catch {
        // Only a head start: the first task builds what is missing.
      }
    }
    this.drop(WARM_UP_KEY);
    this.firstKey = undefined;
    this.servedOthers = false;
  }

  /** True when this isolate served another context key than this one since it was built. */
  private serve(contextKey: string): boolean {
    this.firstKey ??= contextKey;
    if (this.firstKey !== contextKey) this.servedOthers = true;
    return this.servedOthers;
  }

  /**
   * Another tenant's leftovers (garbage, caches that live as long as the isolate) may be what filled
   * the heap: the call runs once more on a fresh isolate, where only its own work counts.
   */
  private evaluateAlone(spec: ScriptSpec, input: RuntimeInput, timeoutMs: number, callId: number, contextKey: string): RuntimeOutput {
    if (this.firstKey !== undefined) this.rebuild(); // not rebuilt yet by failure()
    return this.evaluate(spec, input, timeoutMs, callId, contextKey, true);
  }

  /** Keeps the context for its key's next call, or lets it go; retires the isolate if the script changed a guarded built-in. */
  private settle(contextKey: string, context: KeptContext, output: RuntimeOutput): void {
    if (output.tainted) {
      this.release(context);
      this.rebuild();
      return;
    }
    // A global the script made that cannot be deleted: the context cannot be made clean again.
    if (output.ok || output.kind !== 'dirty') this.keep(contextKey, context);
    else this.release(context);
  }

  /**
   * Every context of this thread shares the isolate's memory limit: what another key's kept context
   * holds must not fail this call. When the heap is past a quarter of the limit (live data and garbage
   * alike), the other keys' contexts are let go before this call runs, so the collector may take them.
   */
  private makeRoomFor(contextKey: string): void {
    if (this.kept.size === 0 || (this.kept.size === 1 && this.kept.has(contextKey))) return;
    const { used_heap_size: usedBytes } = this.isolate.getHeapStatisticsSync();
    if (usedBytes < (this.limits.memoryLimitMb * 1024 * 1024) / KEEP_HEAP_FRACTION) return;
    for (const key of [...this.kept.keys()]) if (key !== contextKey) this.drop(key);
  }

  dispose(): void {
    this.dropKept();
    if (this.spare) this.release(this.spare);
    this.spare = null;
    if (!this.isolate.isDisposed) this.isolate.dispose();
  }

  /** The kept context of this key, or a fresh one with the script instantiated in it. */
  private contextFor(spec: ScriptSpec, contextKey: string, timeoutMs: number): KeptContext {
    const kept = this.kept.get(contextKey);
    if (kept) {
      this.kept.delete(contextKey);
      clearTimeout(kept.idle);
      return kept;
    }
    const script = this.compile(spec);
    const prepared = this.takeContext();
    try {
      const fn = this.instantiate(script, prepared.context, spec, timeoutMs);
      return { ...prepared, fn, callId: 0, idle: undefined };
    } catch (error) {
      this.release(prepared);
      throw error;
    }
  }

  private renew(context: KeptContext, spec: ScriptSpec, timeoutMs: number): void {
    const fn = this.instantiate(this.compile(spec), context.context, spec, timeoutMs);
    context.fn.release();
    context.fn = fn;
  }

  /** The script's value in the context; for a plugin function file's script, the function of its entry. */
  private instantiate(script: ivm.Script, context: ivm.Context, spec: ScriptSpec, timeoutMs: number): ivm.Reference<unknown> {
    const value = script.runSync(context, { reference: true, timeout: timeoutMs }) as ivm.Reference<unknown>;
    if (spec.factory !== true || spec.entry === undefined) return value;
    try {
      return value.applySync(undefined, [spec.entry], { result: { reference: true }, timeout: timeoutMs }) as ivm.Reference<unknown>;
    } finally {
      value.release();
    }
  }

  /** Keeps a context for the next task of its key, briefly: an old call's garbage must not fill the heap. */
  private keep(contextKey: string, context: KeptContext): void {
    context.idle = setTimeout(() => this.drop(contextKey), KEPT_CONTEXT_IDLE_MS);
    this.kept.set(contextKey, context);
    for (const [oldest] of this.kept) {
      if (this.kept.size <= MAX_KEPT_CONTEXTS) break;
      this.drop(oldest);
    }
  }

  private drop(contextKey: string): void {
    const context = this.kept.get(contextKey);
    if (!context) return;
    clearTimeout(context.idle);
    this.kept.delete(contextKey);
    this.release(context);
  }

  private dropKept(): void {
    for (const contextKey of [...this.kept.keys()]) this.drop(contextKey);
  }

  /**
   * The runtime catches every throw of the script and reports its unhandled rejections itself, so
   * what escapes an entry is a time or memory limit. Anything else is the plugin's: the isolate goes,
   * with whatever isolated-vm may still hold of the entry (a rejection it did not read).
   */
  private failure(error: unknown): PluginError {
    if (error instanceof PluginError) return error; // a syntax error from compile()
    if (this.isolate.isDisposed && this.stopper.takeStopped() !== 0) {
      this.rebuild();
      return stoppedError();
    }
    if (this.isolate.isDisposed) {
      this.rebuild();
      return memoryLimitError(this.limits.memoryLimitMb);
    }
    const message = error instanceof Error ? error.message : String(error);
    if (/timed out/i.test(message)) {
      // Jobs the terminated script queued stay in the isolate's microtask queue: they go with it.
      this.rebuild();
      return timeLimitError(this.limits.scriptTimeoutMs);
    }
    if (/memory limit|allocation failed|out of memory/i.test(message)) return memoryLimitError(this.limits.memoryLimitMb);
    this.rebuild();
    return new PluginError('INTERNAL', `sandbox failure: ${message}`, { cause: error });
  }

  private rebuild(): void {
    this.rebuilds++;
    this.dropKept();
    if (this.spare) this.release(this.spare);
    this.spare = null;
    this.scripts.clear();
    this.firstKey = undefined;
    this.servedOthers = false;
    if (!this.isolate.isDisposed) this.isolate.dispose();
    this.isolate = newIsolate(this.limits.memoryLimitMb, this.onCatastrophicError);
    this.runtime = this.isolate.compileScriptSync(RUNTIME_SOURCE, { filename: 'runtime.js' });
    // A stop recorded for the isolate just replaced is used up: a later disposal is not a stop.
    this.stopper.takeStopped();
    this.stopper.arm(this.isolate);
  }

  private compile(spec: ScriptSpec): ivm.Script {
    const params = ['args', ...spec.boundNames.filter((name) => name !== '')].join(', ');
    // Plugin functions compile as they are (their key cannot clash: params always starts with args).
    const key = `${spec.factory === true ? 'factory' : params}\u0000${spec.script}`;
    const cached = this.scripts.get(key);
    if (cached) {
      this.scripts.delete(key);
      this.scripts.set(key, cached);
      return cached;
    }
    const script = spec.factory === true ? this.compileFactory(spec.script) : this.compileWrapped(spec.script, params);
    this.scripts.set(key, script);
    if (this.scripts.size > SCRIPT_CACHE_SIZE) {
      const oldest = this.scripts.keys().next().value;
      if (oldest !== undefined) this.scripts.get(oldest)?.release();
      if (oldest !== undefined) this.scripts.delete(oldest);
    }
    return script;
  }

  /** An expression if the text is one, else a function body; never a text that closes its wrapper (script-source.ts). */
  private compileWrapped(text: string, params: string): ivm.Script {
    const compileAs = (form: ScriptForm): [ivm.Script, string] => {
      const source = wrapScript(text, params, form);
      return [this.isolate.compileScriptSync(source, { filename: 'script.js' }), source];
    };
    let compiled: [ivm.Script, string];
    try {
      compiled = compileAs('expression');
    } catch (expressionError) {
      try {
        compiled = compileAs('body');
      } catch (bodyError) {
        throw scriptSyntaxError(text, expressionError, bodyError);
      }
    }
    const [script, source] = compiled;
    if (!escapesWrapper(source)) return script;
    script.release();
    throw wrapperEscapeError();
  }

  /** A plugin function's script is already an expression whose value is the per-row function. */
  private compileFactory(text: string): ivm.Script {
    try {
      return this.isolate.compileScriptSync(text, { filename: 'function.js' });
    } catch (error) {
      throw syntaxError(error);
    }
  }

  private takeContext(): PreparedContext {
    const spare = this.spare;
    this.spare = null;
    return spare ?? this.prepare();
  }

  /** Under a time limit like every entry that runs code: the runtime's own ~1 ms, or jobs left in the queue. */
  private prepare(): PreparedContext {
    const context = this.isolate.createContextSync();
    try {
      this.libraries.bind(this.isolate, context, this.limits.scriptTimeoutMs);
      const entries = this.runtime.runSync(context, {
        reference: true,
        timeout: this.limits.scriptTimeoutMs,
      }) as ivm.Reference<RuntimeEntries>;
      try {
        // Own data properties of an object the runtime made: reading them runs nothing.
        const entry = <K extends keyof RuntimeEntries>(name: K): ivm.Reference<RuntimeEntries[K]> =>
          entries.getSync(name, { reference: true }) as ivm.Reference<RuntimeEntries[K]>;
        return { context, run: entry('run'), take: entry('take'), describe: entry('describe') };
      } finally {
        entries.release();
      }
    } catch (error) {
      context.release();
      throw error;
    }
  }

  private release(prepared: PreparedContext & { fn?: ivm.Reference<unknown> }): void {
    try {
      prepared.fn?.release();
      prepared.run.release();
      prepared.take.release();
      prepared.describe.release();
      prepared.context.release();
    } catch {
      // The isolate is already gone; nothing left to release.
    }
  }

  /**
   * Prepares the next fresh context once the thread has been idle for SPARE_IDLE_MS: made at once
   * after a task, its ~0.9 ms would sit in front of the next call when calls come back to back.
   */
  private scheduleSpare(): void {
    this.lastTaskEnd = performance.now();
    if (this.spareTimer !== undefined || this.spare !== null) return;
    const attempt = (): void => {
      const idleMs = performance.now() - this.lastTaskEnd;
      if (idleMs < SPARE_IDLE_MS) {
        this.spareTimer = setTimeout(attempt, SPARE_IDLE_MS - idleMs);
        return;
      }
      this.spareTimer = undefined;
      if (this.spare !== null || this.isolate.isDisposed) return;
      this.activity.enter(this.limits.scriptTimeoutMs);
      try {
        this.spare = this.prepare();
      } catch {
        // Not the runtime's ~1 ms: whatever ran is not wanted in the next call's isolate.
        this.rebuild();
      } finally {
        this.activity.leave();
      }
    };
    this.spareTimer = setTimeout(attempt, SPARE_IDLE_MS);
  }
}

/**
 * Runs the chunk; its output waits in the runtime for `take`. The entry always ends on the run's own
 * rejection, which isolated-vm reads in place of any the script left (rejection-watch.ts).
 */
function runChunk(run: PreparedContext['run'], args: Parameters<PreparedContext['run']['applySync']>[1], timeoutMs: number): void {
  try {
    run.applySync(undefined, args, { timeout: timeoutMs });
  } catch (error) {
    if (error !== RUN_END) throw error;
  }
}

/**
 * The name and message of the rejection `take` found, read by the runtime under what is left of the
 * limit; they leave the isolate as the reason of the entry's own rejection (isolate-runtime.ts).
 */
type RuntimeFailure = Extract<RuntimeOutput, { ok: false }>;

function describeRejection(describe: PreparedContext['describe'], output: RuntimeFailure, timeoutMs: number): RuntimeFailure {
  try {
    describe.applySync(undefined, [], { timeout: timeoutMs });
  } catch (error) {
    if (!(error instanceof Error) || error.name !== RUN_END) throw error;
    const cut = error.message.indexOf('\u0000');
    return { ...output, name: error.message.slice(0, cut), message: error.message.slice(cut + 1) };
  }
  throw new Error('the runtime described no rejection');
}

function cpuMsSince(isolate: ivm.Isolate, beforeNs: bigint): number {
  try {
    return Number(isolate.cpuTime - beforeNs) / 1e6;
  } catch {
    return Number.POSITIVE_INFINITY; // disposed by its memory limit
  }
}

/** The script's own allocation was refused (isolated-vm's allocator counts every tenant's buffers). */
function refusedMemory(output: RuntimeOutput): boolean {
  return !output.ok && output.kind === 'throw' && output.name === 'RangeError' && /^Array buffer allocation failed/.test(output.message);
}

/** A thread's between-task work, for its watchdog (workers/thread-pool.ts). */
export interface ThreadActivity {
  enter(timeoutMs: number): void;
  leave(): void;
}

const IDLE_ONLY: ThreadActivity = { enter: () => undefined, leave: () => undefined };

/** The task's call ended while it ran: nobody reads this but the front's count of the thread's time. */
export function stoppedError(): PluginError {
  return new PluginError('CANCELLED', 'the call ended while this chunk ran: it was stopped');
}

function syntaxError(error: unknown): PluginError {
  const message = error instanceof Error ? error.message : String(error);
  const text = message.startsWith('SyntaxError') ? message : `SyntaxError: ${message}`;
  return new PluginError('INVALID_ARGUMENT', text.replace(/ \[(script|function)\.js:\d+:\d+\]$/, ''));
}

/**
 * Without onCatastrophicError, a fatal V8 error inside the isolate (some out-of-memory paths:
 * isolated-vm #107, #527) aborts the sandbox process at once, with every task it runs. With it,
 * only this thread hangs, and the callback names the task to blame: the sandbox process retires,
 * its other tasks are retried elsewhere and the front ends it (workers/thread-pool.ts).
 */
function newIsolate(memoryLimitMb: number, onCatastrophicError: (message: string) => void): ivm.Isolate {
  return new isolatedVm.Isolate({ memoryLimit: memoryLimitMb, onCatastrophicError });
}
