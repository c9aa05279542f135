/**
 * Experiment only, UNSAFE, never in production: preloaded into the sandbox workers (worker threads
 * inherit the plugin's `-r`; worker processes get it through the fork-override preload) to price a
 * warm JIT. Every task of the process then runs in one
 * context that is never thrown away, so the runtime's loop and the script's compiled function keep
 * their type feedback and optimised code from task to task. This breaks the isolation between calls
 * the product promises; it only measures what a context kept for the tasks of one call could gain.
 */
import path from 'node:path';
import { isMainThread } from 'node:worker_threads';

interface Prepared {
  readonly context: unknown;
  readonly run: unknown;
}

interface SandboxInternals {
  takeContext(): Prepared;
  release(prepared: Prepared): void;
}

const isSandbox = !isMainThread || path.basename(process.argv[1] ?? '') === 'process-entry.js';

if (isSandbox && process.env['BENCH_WARM_CONTEXT'] === '1') {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- must patch the loaded class
  const { Sandbox } = require(path.join(__dirname, '..', 'workers', 'sandbox.js')) as { Sandbox: { prototype: SandboxInternals } };
  const take = Sandbox.prototype.takeContext;
  const release = Sandbox.prototype.release;
  let kept: Prepared | null = null;
  Sandbox.prototype.takeContext = function takeContext(this: SandboxInternals): Prepared {
    kept ??= take.call(this);
    return kept;
  };
  Sandbox.prototype.release = function releaseUnlessKept(this: SandboxInternals, prepared: Prepared): void {
    if (prepared !== kept) release.call(this, prepared);
  };
}
