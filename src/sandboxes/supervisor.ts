/**
 * The supervisor of the sandbox processes: starts one per slot, replaces one that ended (at once, or
 * after a growing delay when they keep dying: src/sandboxes/backoff.ts), and ends one that must go:
 * past its memory fence, or no longer answering at all (a handle ends itself when its process retires
 * or V8 gives up on it). It knows processes, not tasks: each handle holds its own tasks and tells the
 * scheduler (src/sandboxes/pool.ts, the SandboxListener) of their results directly; the supervisor
 * only adds, to the ready and exit events, what starting and replacing a slot needs.
 */

import type { SandboxSettings } from '../contract/channel';
import type { Logger } from '../ops/log';
import { CrashBackoff } from './backoff';
import { describeExit, lastLine, type RestartReason, restartReason } from './recovery';
import type { SandboxExit, SandboxHandle, SandboxListener, SentTask } from './sandbox-handle';
import { SandboxProcess } from './sandbox-process';

export interface PoolSettings {
  readonly workers: number;
  readonly sandboxProcesses: number;
  readonly memoryLimitMb: number;
  readonly scriptTimeoutMs: number;
  readonly maxQueue: number;
  /** Resident memory past which a sandbox process is ended, in MB; undefined: defaultSandboxMemoryMb. */
  readonly sandboxMemoryMb: number | undefined;
  /** Niceness of the sandbox processes' threads (SSE_SANDBOX_NICE); 0 when not given. */
  readonly sandboxNice?: number;
  /** Calls open at once, front and sandboxes alike; MAX_OPEN_CALLS (src/contract/channel.ts) unless a test makes it small. */
  readonly maxOpenCalls?: number;
  /** Budget of the sandboxes' main-thread fast path (SSE_FAST_PATH_MS); DEFAULT_FAST_PATH_MS when not given. */
  readonly fastPathMs?: number;
}

export interface PoolEvents {
  restarted?(reason: RestartReason): void;
  availability?(available: boolean): void;
}

/** Makes the handle of a slot's process: a real child process, or a fake in unit tests. */
export type SpawnSandbox = (index: number, settings: SandboxSettings, listener: SandboxListener, logger: Logger) => SandboxHandle;

export const spawnSandboxProcess: SpawnSandbox = (index, settings, listener, logger) =>
  new SandboxProcess(index, settings, listener, logger);

const FENCE_INTERVAL_MS = 200;
/** Past a task's time limit, how long the front waits for any answer before it ends the sandbox process. */
const UNANSWERED_GRACE_MS = 5_000;
const START_TIMEOUT_MS = 30_000;

/** The front's default memory fence per sandbox process, in MB: see docs/operations.md "Memory". */
export function defaultSandboxMemoryMb(threads: number, memoryLimitMb: number): number {
  return 160 + threads * (2 * memoryLimitMb + 96);
}

/** Threads of each sandbox process: `workers` split as evenly as they go. */
export function threadSplit(workers: number, processes: number): number[] {
  return Array.from({ length: processes }, (_, i) => Math.floor(workers / processes) + (i < workers % processes ? 1 : 0));
}

export class SandboxSupervisor {
  /** One slot per process; undefined between an exit and its replacement. */
  readonly sandboxes: (SandboxHandle | undefined)[];
  private closing = false;
  private readonly fence: NodeJS.Timeout;
  private readonly backoff: CrashBackoff;
  private readonly startTimers = new Set<NodeJS.Timeout>();
  private readonly threadCounts: number[];
  private wasAvailable = false;
  private readonly restartCounts = new Map<RestartReason, number>();
  restarts = 0;

  constructor(
    private readonly settings: PoolSettings,
    private readonly logger: Logger,
    private readonly events: PoolEvents,
    /** The scheduler: told of results straight from each handle, and of ready and exit after the supervisor. */
    private readonly tasks: SandboxListener,
    private readonly spawn: SpawnSandbox = spawnSandboxProcess,
  ) {
    this.threadCounts = threadSplit(settings.workers, settings.sandboxProcesses);
    this.sandboxes = this.threadCounts.map(() => undefined);
    this.backoff = new CrashBackoff(this.threadCounts.length);
    this.fence = setInterval(() => this.checkSandboxes(), FENCE_INTERVAL_MS).unref();
  }

  /** Starts every sandbox process; rejects with the last thing one said on stderr if one cannot start. */
  async start(): Promise<void> {
    const started = this.threadCounts.map((_, i) => this.startOne(i));
    await Promise.all(started);
  }

  restartsFor(reason: RestartReason): number {
    return this.restartCounts.get(reason) ?? 0;
  }

  /** No more checks or replacements: the plugin is closing. */
  stop(): void {
    this.closing = true;
    clearInterval(this.fence);
    for (const timer of this.startTimers) clearTimeout(timer);
  }

  /** Ends every live sandbox process. */
  async endAll(): Promise<void> {
    const live = this.sandboxes.filter((s): s is SandboxHandle => s !== undefined && s.state !== 'exited');
    await Promise.all(live.map((sandbox) => sandbox.stop()));
  }

  /**
   * Starts the process of a slot; resolves once it is ready. A process that cannot start (spawn
   * fails, it exits early, or it is not ready within START_TIMEOUT_MS) rejects, and its slot is
   * tried again after the crash-loop delay: the front never gives up on a slot while it runs.
   */
  private startOne(index: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const settings: SandboxSettings = {
        threads: this.threadCounts[index] as number,
        memoryLimitMb: this.settings.memoryLimitMb,
        scriptTimeoutMs: this.settings.scriptTimeoutMs,
        nice: this.settings.sandboxNice ?? 0,
        ...(this.settings.maxOpenCalls === undefined ? {} : { maxOpenCalls: this.settings.maxOpenCalls }),
        ...(this.settings.fastPathMs === undefined ? {} : { fastPathMs: this.settings.fastPathMs }),
      };
      // Declared before the process exists: its events (never synchronous) clear it.
      let timer: NodeJS.Timeout | undefined;
      let sandbox: SandboxHandle;
      const listener: SandboxListener = {
        ready: (ready) => {
          clearTimeout(timer);
          this.logger.debug({ sandbox: index, pid: ready.pid, threads: settings.threads }, 'sandbox process ready');
          resolve();
          this.tasks.ready(ready);
        },
        result: this.tasks.result,
        exit: (ended, exit, tasks) => {
          clearTimeout(timer);
          if (!exit.wasReady) reject(new Error(`a sandbox process could not start: ${lastLine(exit.stderrTail) || describeExit(exit)}`));
          this.onExit(ended, exit, tasks);
        },
      };
      try {
        sandbox = this.spawn(index, settings, listener, this.logger);
      } catch (error) {
        // spawn() throws for what it cannot even try (EINVAL…): the same as a process that could not start.
        reject(new Error(`a sandbox process could not start: ${error instanceof Error ? error.message : String(error)}`));
        this.planRestart(index, 'start-failure', this.restartDelay(), { err: error }, 'a sandbox process could not be started');
        return;
      }
      timer = setTimeout(() => sandbox.kill('stuck'), START_TIMEOUT_MS);
      this.sandboxes[index] = sandbox;
    });
  }

  private onExit(sandbox: SandboxHandle, exit: SandboxExit, tasks: readonly SentTask[]): void {
    this.sandboxes[sandbox.index] = undefined;
    // Ended while running scripts: a script's doing, whose call fails after one retry, so the loop ends
    // with the script. Replace it at once: others' calls are waiting. Deaths with nothing running (a
    // process that cannot start, or dies by itself) back off.
    const scriptDeath = exit.wasReady && tasks.length > 0;
    this.tasks.exit(sandbox, exit, tasks);
    if (this.closing) return;
    const delayMs = scriptDeath ? 0 : this.restartDelay();
    if (exit.spawnError !== undefined) {
      this.planRestart(sandbox.index, 'start-failure', delayMs, { err: exit.spawnError }, 'a sandbox process could not be started');
      return;
    }
    this.planRestart(
      sandbox.index,
      restartReason(exit),
      delayMs,
      { pid: sandbox.pid, code: exit.code, signal: exit.signal, stderr: exit.stderrTail.slice(-1500) || undefined },
      'sandbox process ended',
    );
  }

  /** Counts the restart, says so in the log, and starts the slot's process again after delayMs. */
  private planRestart(index: number, reason: RestartReason, delayMs: number, fields: Record<string, unknown>, what: string): void {
    if (this.closing) return;
    this.restarts++;
    this.restartCounts.set(reason, this.restartsFor(reason) + 1);
    this.events.restarted?.(reason);
    this.logger.warn({ sandbox: index, reason, restartInMs: delayMs, ...fields }, `${what}; starting a new one in ${delayMs} ms`);
    const timer = setTimeout(() => {
      this.startTimers.delete(timer);
      this.startOne(index).catch((error: unknown) => this.logger.debug({ sandbox: index, err: error }, 'start failed'));
    }, delayMs);
    this.startTimers.add(timer);
    this.updateAvailability();
  }

  /** The memory fence of a sandbox process with this many threads, in MB. */
  fenceMb(threads: number): number {
    return this.settings.sandboxMemoryMb ?? defaultSandboxMemoryMb(threads, this.settings.memoryLimitMb);
  }

  /**
   * The memory fence, and a backstop for a sandbox process that stopped answering altogether (its
   * own watchdog answers for a stuck thread within its time limit + 1 s): a task sent
   * UNANSWERED_GRACE_MS past its time limit ends its process, and is handled as for a crash.
   */
  private checkSandboxes(): void {
    const now = performance.now();
    for (const sandbox of this.sandboxes) {
      if (!sandbox || sandbox.ending) continue;
      if (sandbox.overdue(now, UNANSWERED_GRACE_MS)) {
        this.logger.warn({ sandbox: sandbox.index, pid: sandbox.pid }, 'sandbox process stopped answering: ending it');
        sandbox.kill('unanswered');
        continue;
      }
      this.checkMemory(sandbox);
    }
  }

  private checkMemory(sandbox: SandboxHandle): void {
    const fenceMb = this.fenceMb(sandbox.settings.threads);
    const bytes = sandbox.residentBytes();
    if (bytes === undefined || bytes <= fenceMb * 1024 * 1024) return;
    this.logger.warn(
      { sandbox: sandbox.index, pid: sandbox.pid, residentMb: Math.round(bytes / 1048576), fenceMb },
      'sandbox process past its memory fence (SSE_SANDBOX_MEMORY_MB): ending it',
    );
    sandbox.kill('memory-fence');
  }

  private restartDelay(): number {
    return this.backoff.delayAfterDeathMs(performance.now());
  }

  updateAvailability(): void {
    const available = this.sandboxes.some((s) => s?.wasReady && s.state !== 'exited');
    if (available === this.wasAvailable) return;
    this.wasAvailable = available;
    this.events.availability?.(available);
  }
}
