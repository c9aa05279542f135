/**
 * One isolated-vm isolate per worker thread. Every task gets a fresh context (so nothing a script
 * does is visible to the next call), prepared ahead of time because creating one costs ~0.8 ms.
 * Compiled scripts are cached per isolate by text; a script compiled once runs in any context.
 * After the isolate hits its memory limit it is disposed by isolated-vm and rebuilt here.
 */
import ivm from 'isolated-vm';

import { PluginError } from '../src/shared/errors';
import { memoryLimitError, timeLimitError } from '../src/shared/limit-errors';
import type { ScriptSpec } from '../src/shared/task';
import { installRuntime, type RuntimeInput, type RuntimeOutput } from './isolate-runtime';

const RUNTIME_SOURCE = `(${installRuntime.toString()})(globalThis)`;
const SCRIPT_CACHE_SIZE = 64;

interface PreparedContext {
  readonly context: ivm.Context;
  readonly run: ivm.Reference<(fn: unknown, input: RuntimeInput) => RuntimeOutput>;
}

interface CallContext extends PreparedContext {
  readonly fn: ivm.Reference<unknown>;
  idle: NodeJS.Timeout | undefined;
}

/** Two calls interleaving on one worker both stay warm; a third evicts the oldest. */
const MAX_CALL_CONTEXTS = 2;
/** A call's next chunk arrives within milliseconds; after this its context is released. */
const CALL_CONTEXT_IDLE_MS = 250;

export interface SandboxLimits {
  readonly memoryLimitMb: number;
  readonly scriptTimeoutMs: number;
}

export class Sandbox {
  private isolate: ivm.Isolate;
  private runtime: ivm.Script;
  private readonly scripts = new Map<string, ivm.Script>();
  /** Contexts of recent calls, oldest first. */
  private readonly calls = new Map<number, CallContext>();
  private spare: PreparedContext | null = null;
  private spareScheduled = false;
  rebuilds = 0;

  constructor(
    private readonly limits: SandboxLimits,
    private readonly onCatastrophicError: () => void,
  ) {
    this.isolate = newIsolate(limits.memoryLimitMb, onCatastrophicError);
    this.runtime = this.isolate.compileScriptSync(RUNTIME_SOURCE, { filename: 'runtime.js' });
  }

  /**
   * Runs the script over the given input; throws PluginError for every failure. Tasks of the same
   * call (callId) on this worker reuse that call's context: V8 keeps optimised code per context, and
   * a fresh one per chunk ran ~10x slower (bench/RESULTS.md). Another call never sees it.
   */
  evaluate(spec: ScriptSpec, input: RuntimeInput, timeoutMs: number, callId: number): RuntimeOutput {
    const started = performance.now();
    let inScript = false;
    let call: CallContext | undefined;
    try {
      call = this.callContext(spec, callId, timeoutMs);
      const inputCopy = new ivm.ExternalCopy(input).copyInto({ release: true });
      const left = Math.max(1, Math.ceil(timeoutMs - (performance.now() - started)));
      inScript = true;
      const output = call.run.applySync(undefined, [call.fn.derefInto(), inputCopy], { timeout: left, result: { copy: true } }) as RuntimeOutput;
      this.keep(callId, call);
      return output;
    } catch (error) {
      if (call) this.release(call);
      throw this.failure(error, inScript);
    } finally {
      this.scheduleSpare();
    }
  }

  dispose(): void {
    this.dropCallContexts();
    if (this.spare) this.release(this.spare);
    this.spare = null;
    if (!this.isolate.isDisposed) this.isolate.dispose();
  }

  /** The call's own context with its compiled function, or a fresh one for a new call. */
  private callContext(spec: ScriptSpec, callId: number, timeoutMs: number): CallContext {
    const kept = this.calls.get(callId);
    if (kept) {
      this.calls.delete(callId);
      clearTimeout(kept.idle);
      return kept;
    }
    const script = this.compile(spec);
    const prepared = this.takeContext();
    try {
      const fn = script.runSync(prepared.context, { reference: true, timeout: timeoutMs }) as ivm.Reference<unknown>;
      return { ...prepared, fn, idle: undefined };
    } catch (error) {
      this.release(prepared);
      throw error;
    }
  }

  /** Keeps a call's context for its next chunk, briefly: an old call's garbage must not fill the heap. */
  private keep(callId: number, call: CallContext): void {
    call.idle = setTimeout(() => this.drop(callId), CALL_CONTEXT_IDLE_MS);
    this.calls.set(callId, call);
    for (const [oldest] of this.calls) {
      if (this.calls.size <= MAX_CALL_CONTEXTS) break;
      this.drop(oldest);
    }
  }

  private drop(callId: number): void {
    const call = this.calls.get(callId);
    if (!call) return;
    clearTimeout(call.idle);
    this.calls.delete(callId);
    this.release(call);
  }

  private dropCallContexts(): void {
    for (const callId of [...this.calls.keys()]) this.drop(callId);
  }

  /**
   * run() catches every synchronous throw of the script, so what escapes it is a time or memory
   * limit, or a promise the script rejected and never handled: isolated-vm rethrows those after
   * the microtasks ran. That is the script's error (INVALID_ARGUMENT), not the plugin's.
   */
  private failure(error: unknown, inScript: boolean): PluginError {
    if (error instanceof PluginError) return error; // a syntax error from compile()
    if (this.isolate.isDisposed) {
      this.rebuild();
      return memoryLimitError(this.limits.memoryLimitMb);
    }
    const message = error instanceof Error ? error.message : String(error);
    if (/timed out/i.test(message)) return timeLimitError(this.limits.scriptTimeoutMs);
    if (/memory limit|allocation failed|out of memory/i.test(message)) return memoryLimitError(this.limits.memoryLimitMb);
    if (inScript) {
      const name = error instanceof Error ? error.name : 'Error';
      return new PluginError('INVALID_ARGUMENT', `${name}: ${message} (a promise the script rejected and never handled)`);
    }
    return new PluginError('INTERNAL', `sandbox failure: ${message}`, { cause: error });
  }

  private rebuild(): void {
    this.rebuilds++;
    this.dropCallContexts();
    this.spare = null;
    this.scripts.clear();
    this.isolate = newIsolate(this.limits.memoryLimitMb, this.onCatastrophicError);
    this.runtime = this.isolate.compileScriptSync(RUNTIME_SOURCE, { filename: 'runtime.js' });
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

  /** An expression if the text is one, else a function body. */
  private compileWrapped(text: string, params: string): ivm.Script {
    const expression = text.replace(/[\s;]+$/, '');
    try {
      return this.isolate.compileScriptSync(`(function (${params}) {\nreturn (\n${expression}\n);\n})`, { filename: 'script.js' });
    } catch (expressionError) {
      try {
        return this.isolate.compileScriptSync(`(function (${params}) {\n${text}\n})`, { filename: 'script.js' });
      } catch (bodyError) {
        const looksLikeBody = /;|\breturn\b/.test(expression);
        throw syntaxError(looksLikeBody ? bodyError : expressionError);
      }
    }
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

  private prepare(): PreparedContext {
    const context = this.isolate.createContextSync();
    const run = this.runtime.runSync(context, { reference: true }) as PreparedContext['run'];
    return { context, run };
  }

  private release(prepared: PreparedContext & { fn?: ivm.Reference<unknown> }): void {
    try {
      prepared.fn?.release();
      prepared.run.release();
      prepared.context.release();
    } catch {
      // The isolate is already gone; nothing left to release.
    }
  }

  private scheduleSpare(): void {
    if (this.spareScheduled) return;
    this.spareScheduled = true;
    setImmediate(() => {
      this.spareScheduled = false;
      if (this.spare === null && !this.isolate.isDisposed) {
        try {
          this.spare = this.prepare();
        } catch {
          this.spare = null;
        }
      }
    });
  }
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
function newIsolate(memoryLimitMb: number, onCatastrophicError: () => void): ivm.Isolate {
  return new ivm.Isolate({ memoryLimit: memoryLimitMb, onCatastrophicError });
}
