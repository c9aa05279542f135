/**
 * What a dead sandbox process means for the tasks it held (src/sandboxes/pool.ts applies it): why it
 * ended, and the one-line error a task's call gets when it was to blame, or when it was running in
 * two processes that both died.
 */
import { PluginError } from '../contract/errors';
import { memoryLimitError } from '../contract/limit-errors';
import type { SandboxExit } from './sandbox-handle';
import { V8_OUT_OF_MEMORY } from './sandbox-process';

export type RestartReason = 'crash' | 'exit' | 'memory-fence' | 'stuck' | 'fatal' | 'unanswered' | 'protocol' | 'start-failure';

/** The settings the messages name. */
export interface LimitSettings {
  readonly memoryLimitMb: number;
  readonly scriptTimeoutMs: number;
}

export function restartReason(exit: SandboxExit): RestartReason {
  if (!exit.wasReady) return 'start-failure';
  if (exit.killedFor !== undefined && exit.killedFor !== 'stop') return exit.killedFor;
  return exit.signal !== null ? 'crash' : 'exit';
}

export function culpritError(exit: SandboxExit, settings: LimitSettings): PluginError {
  if (exit.retirement?.reason === 'stuck' && !V8_OUT_OF_MEMORY.test(exit.stderrTail)) return pastTimeLimitError(settings);
  return memoryLimitError(settings.memoryLimitMb, 'V8 gave up on the sandbox and it was replaced');
}

/**
 * Whether a death would be blamed on memory: the fence, or V8 giving up on a heap. A task already past
 * its time limit then fails on time instead, the limit it passed first: native work that cannot be
 * interrupted (a regular expression with a million alternatives compiling) runs on past the time limit
 * while its memory grows, and whether the fence or the watchdog notices first depends on the machine.
 * Not for a crash or a process that stopped answering: a frozen process's tasks ran past no limit.
 */
export function blamesMemory(exit: SandboxExit, reason: RestartReason): boolean {
  return reason === 'memory-fence' || reason === 'fatal' || V8_OUT_OF_MEMORY.test(exit.stderrTail);
}

/** A task past its time limit, stuck in native code or there when its process met a memory bound. */
export function pastTimeLimitError(settings: LimitSettings): PluginError {
  return new PluginError(
    'DEADLINE_EXCEEDED',
    `the script stopped responding past its time limit of ${settings.scriptTimeoutMs} ms (SSE_SCRIPT_TIMEOUT_MS) and its sandbox was replaced`,
  );
}

/** A task that was running in two sandbox processes that both died. */
export function suspectError(exit: SandboxExit, reason: RestartReason, settings: LimitSettings): PluginError {
  if (reason === 'memory-fence')
    return memoryLimitError(
      settings.memoryLimitMb,
      'its sandbox process passed its memory fence (SSE_SANDBOX_MEMORY_MB) twice and was replaced',
    );
  if (reason === 'fatal' || V8_OUT_OF_MEMORY.test(exit.stderrTail))
    return memoryLimitError(settings.memoryLimitMb, 'V8 gave up on its sandbox twice and it was replaced');
  return new PluginError(
    'UNAVAILABLE',
    `the sandbox process running this call's script ended twice (${describeExit(exit)}); the call was not completed`,
  );
}

export function describeExit(exit: SandboxExit): string {
  return exit.signal !== null ? `signal ${exit.signal}` : `exit code ${String(exit.code)}`;
}

export function lastLine(text: string): string {
  return (
    text
      .split('\n')
      .filter((line) => line.trim() !== '')
      .pop() ?? ''
  );
}
