/**
 * One isolated-vm isolate per worker thread. Every task gets a fresh context (so nothing a script
 * does is visible to the next call), prepared ahead of time because creating one costs ~0.8 ms.
 * Compiled scripts are cached per isolate by text; a script compiled once runs in any context.
 * After the isolate hits its memory limit it is disposed by isolated-vm and rebuilt here.
 */
import ivm from 'isolated-vm';

import { PluginError } from '../src/errors';
import { memoryLimitError, timeLimitError } from '../src/limit-errors';
import type { ScriptSpec } from '../src/task';
import { installRuntime, type RuntimeInput, type RuntimeOutput } from './isolate-runtime';

const RUNTIME_SOURCE = `(${installRuntime.toString()})(globalThis)`;
const SCRIPT_CACHE_SIZE = 64;

interface PreparedContext {
  readonly context: ivm.Context;
  readonly run: ivm.Reference<(fn: unknown, input: RuntimeInput) => RuntimeOutput>;
}

export interface SandboxLimits {
  readonly memoryLimitMb: number;
  readonly scriptTimeoutMs: number;
}

export class Sandbox {
  private isolate: ivm.Isolate;
  private runtime: ivm.Script;
  private readonly scripts = new Map<string, ivm.Script>();
  private spare: PreparedContext | null = null;
  private spareScheduled = false;
  rebuilds = 0;

  constructor(private readonly limits: SandboxLimits) {
    this.isolate = newIsolate(limits.memoryLimitMb);
    this.runtime = this.isolate.compileScriptSync(RUNTIME_SOURCE, { filename: 'runtime.js' });
  }

  /** Runs the script over the given input; throws PluginError for every failure. */
  evaluate(spec: ScriptSpec, input: RuntimeInput, timeoutMs: number): RuntimeOutput {
    const script = this.compile(spec);
    const prepared = this.takeContext();
    const started = performance.now();
    let fn: ivm.Reference<unknown> | undefined;
    let inScript = false;
    try {
      fn = script.runSync(prepared.context, { reference: true, timeout: timeoutMs }) as ivm.Reference<unknown>;
      const inputCopy = new ivm.ExternalCopy(input).copyInto({ release: true });
      const left = Math.max(1, Math.ceil(timeoutMs - (performance.now() - started)));
      inScript = true;
      return prepared.run.applySync(undefined, [fn.derefInto(), inputCopy], { timeout: left, result: { copy: true } }) as RuntimeOutput;
    } catch (error) {
      throw this.failure(error, inScript);
    } finally {
      fn?.release();
      this.release(prepared);
      this.scheduleSpare();
    }
  }

  dispose(): void {
    if (this.spare) this.release(this.spare);
    this.spare = null;
    if (!this.isolate.isDisposed) this.isolate.dispose();
  }

  /**
   * run() catches every synchronous throw of the script, so what escapes it is a time or memory
   * limit, or a promise the script rejected and never handled: isolated-vm rethrows those after
   * the microtasks ran. That is the script's error (INVALID_ARGUMENT), not the plugin's.
   */
  private failure(error: unknown, inScript: boolean): PluginError {
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
    this.spare = null;
    this.scripts.clear();
    this.isolate = newIsolate(this.limits.memoryLimitMb);
    this.runtime = this.isolate.compileScriptSync(RUNTIME_SOURCE, { filename: 'runtime.js' });
  }

  private compile(spec: ScriptSpec): ivm.Script {
    const params = ['args', ...spec.boundNames.filter((name) => name !== '')].join(', ');
    const key = `${params}\u0000${spec.script}`;
    const cached = this.scripts.get(key);
    if (cached) {
      this.scripts.delete(key);
      this.scripts.set(key, cached);
      return cached;
    }
    const script = this.compileWrapped(spec.script, params);
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

  private release(prepared: PreparedContext): void {
    try {
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
  return new PluginError('INVALID_ARGUMENT', text.replace(/ \[script\.js:\d+:\d+\]$/, ''));
}

/**
 * Without onCatastrophicError, a fatal V8 error inside the isolate (some out-of-memory paths:
 * isolated-vm #107, #527) aborts the whole plugin process. With it, only this worker thread hangs;
 * the pool's watchdog replaces it (src/pool.ts). The callback itself cannot run JavaScript safely.
 */
function newIsolate(memoryLimitMb: number): ivm.Isolate {
  return new ivm.Isolate({ memoryLimit: memoryLimitMb, onCatastrophicError: () => undefined });
}
