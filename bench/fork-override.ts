/**
 * Profiling and experiments only, never in production: preloaded into the plugin (`node -r`) by
 * bench/profile.ts and bench/experiment.ts so the sandbox worker processes it forks get extra node
 * flags (BENCH_SANDBOX_FLAGS, space separated, e.g. --cpu-prof) and the BENCH_* variables (the
 * plugin passes its workers only a short list of variables), without editing src/. The plugin
 * looks `fork` up on the module object at each call, so replacing it there is enough.
 */
import childProcess, { type ForkOptions } from 'node:child_process';

const extraFlags = (process.env['BENCH_SANDBOX_FLAGS'] ?? '').split(' ').filter((flag) => flag !== '');

if (extraFlags.length > 0) {
  const fork = childProcess.fork;
  const benchEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => name.startsWith('BENCH_')));
  const patched = (modulePath: string, args?: readonly string[], options?: ForkOptions): ReturnType<typeof fork> =>
    fork(modulePath, args ?? [], {
      ...options,
      execArgv: [...(options?.execArgv ?? process.execArgv), ...extraFlags],
      env: { ...(options?.env ?? process.env), ...benchEnv },
    });
  (childProcess as { fork: unknown }).fork = patched;
}
