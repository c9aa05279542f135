/**
 * The supervisor of the sandbox processes: starts one per slot, and SSE_SPARE_SANDBOXES spares beside
 * them, replaces one that ended, and ends one that must go: past its memory fence, or no longer
 * answering at all (a handle ends itself when its process retires or V8 gives up on it). It knows
 * processes, not tasks: each handle holds its own tasks and tells the scheduler
 * (src/sandboxes/pool.ts, the SandboxListener) of their results directly; the supervisor only adds,
 * to the ready and exit events, what starting and replacing a process needs.
 *
 * A spare is a process started ahead, READY, running nothing (but a task sent back after a death,
 * alone: the pool's quarantine). When a slot's process dies, a spare that is ready and idle takes the
 * slot at once, so other users' calls wait for no start (0.5-1.2 s on 2 loaded cores); the
 * replacement is then started for the spare's place, at once or after the crash-loop delay
 * (src/sandboxes/backoff.ts), exactly as a slot would be. Every death leaves one vacancy and plans one
 * start; a start fills the first vacancy, slots before spares.
 *
 * A slot's process whose resident memory passes RETIRE_AT_FENCE_SHARE of its fence, while a spare is
 * ready, is retired rather than killed later: the spare takes the slot at once, the retired process
 * gets no new task, finishes those it runs and is ended when idle, and a new spare starts. Memory a
 * script left behind (native objects in a kept context) then costs nobody a failed or repeated call;
 * the fence still ends the process if it keeps growing. A process whose main thread native work holds
 * past the fast path's budget (its watcher's HELD) is retired the same way: what is sent there waits.
 */

import { DEFAULT_FAST_PATH_MS, type SandboxSettings } from '../contract/channel';
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
  /** The part of maxQueue one client host's tasks may fill, in percent (SSE_HOST_SHARE_PERCENT); 100 when not given. */
  readonly hostSharePercent?: number;
  /** Resident memory past which a sandbox process is ended, in MB; undefined: defaultSandboxMemoryMb. */
  readonly sandboxMemoryMb: number | undefined;
  /** Niceness of the sandbox processes' threads (SSE_SANDBOX_NICE); 0 when not given. */
  readonly sandboxNice?: number;
  /** Calls open at once, front and sandboxes alike; MAX_OPEN_CALLS (src/contract/channel.ts) unless a test makes it small. */
  readonly maxOpenCalls?: number;
  /** Addresses and networks of client hosts that go ahead of every other (SSE_PRIORITY_HOSTS); none when not given. */
  readonly priorityHosts?: readonly string[];
  /** How fast the queue forgets a client host's use of the threads; USAGE_HALF_LIFE_MS unless a test makes it short. */
  readonly usageHalfLifeMs?: number;
  /** Spare processes kept ready beside the slots (SSE_SPARE_SANDBOXES); none when not given. */
  readonly spareSandboxes?: number;
  /** Console lines and bytes a call keeps (SSE_CONSOLE_LINES, SSE_CONSOLE_BYTES); 0 when not given. */
  readonly consoleLines?: number;
  readonly consoleBytes?: number;
  /** Budget of the sandboxes' main-thread fast path (SSE_FAST_PATH_MS); DEFAULT_FAST_PATH_MS when not given. */
  readonly fastPathMs?: number;
}

/** Where a process serves: a slot (scheduled by the pool), or a spare's place. */
export interface Place {
  readonly role: 'slot' | 'spare';
  readonly index: number;
}

export interface PoolEvents {
  restarted?(reason: RestartReason): void;
  availability?(available: boolean): void;
  /** A task was refused as busy (a full queue, or the open-call bound): sse_busy_refusals_total. */
  refusedBusy?(): void;
}

/** Makes the handle of a slot's process: a real child process, or a fake in unit tests. */
export type SpawnSandbox = (index: number, settings: SandboxSettings, listener: SandboxListener, logger: Logger) => SandboxHandle;

export const spawnSandboxProcess: SpawnSandbox = (index, settings, listener, logger) =>
  new SandboxProcess(index, settings, listener, logger);

const FENCE_INTERVAL_MS = 200;
/**
 * The share of its memory fence at which a slot's process is retired to a ready spare. The default
 * fence allows every isolate twice its heap limit; ordinary load stays far below a quarter of it, so
 * a retirement means memory left behind or a script still growing.
 */
export const RETIRE_AT_FENCE_SHARE = 0.75;
/** Past a task's time limit, how long the front waits for any answer before it ends the sandbox process. */
const UNANSWERED_GRACE_MS = 5_000;
const START_TIMEOUT_MS = 30_000;

/**
 * The front's default memory fence per sandbox process, in MB: see docs/operations.md "Memory". Every
 * isolate counts: one per pool thread, and the main thread's when the fast path is on (workers/fast-path.ts).
 */
export function defaultSandboxMemoryMb(threads: number, memoryLimitMb: number, fastPathMs: number): number {
  const isolates = threads + (fastPathMs > 0 ? 1 : 0);
  return 160 + isolates * (2 * memoryLimitMb + 96);
}

/** Threads of each sandbox process: `workers` split as evenly as they go. */
export function threadSplit(workers: number, processes: number): number[] {
  return Array.from({ length: processes }, (_, i) => Math.floor(workers / processes) + (i < workers % processes ? 1 : 0));
}

export class SandboxSupervisor {
  /** One per slot, the processes the pool sends tasks to; undefined between an exit and its replacement. */
  readonly sandboxes: (SandboxHandle | undefined)[];
  /** The spares' places: started ahead, running nothing but a quarantined retry. */
  readonly spares: (SandboxHandle | undefined)[];
  private closing = false;
  private readonly fence: NodeJS.Timeout;
  private readonly backoff: CrashBackoff;
  private readonly startTimers = new Set<NodeJS.Timeout>();
  private readonly threadCounts: number[];
  private wasAvailable = false;
  private readonly restartCounts = new Map<RestartReason, number>();
  /** Processes retired from their slot: finishing what they run, then ended (see the top). */
  private readonly retiring = new Set<SandboxHandle>();
  retirements = 0;
  /** The LIBRARIES frame every process gets at its start (src/contract/libraries.ts); null: none sent yet. */
  private librariesFrame: Buffer | null = null;
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
    this.spares = Array.from({ length: settings.spareSandboxes ?? 0 }, () => undefined);
    this.backoff = new CrashBackoff(this.sandboxes.length + this.spares.length);
    this.fence = setInterval(() => this.checkSandboxes(), FENCE_INTERVAL_MS).unref();
  }

  /** Starts every sandbox process, spares too; rejects with the last thing one said on stderr if one cannot start. */
  async start(): Promise<void> {
    const slots = this.sandboxes.map((_, index) => this.startOne({ role: 'slot', index }));
    const spares = this.spares.map((_, index) => this.startOne({ role: 'spare', index }));
    await Promise.all([...slots, ...spares]);
  }

  /** A new library set: sent once to every live process, and to each process started from now on. */
  setLibraries(frame: Buffer): void {
    this.librariesFrame = frame;
    // Spares too: one may take a slot at any moment.
    for (const sandbox of this.all()) if (sandbox.state !== 'exited') sandbox.sendLibraries(frame);
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

  /** Ends every live sandbox process, spares included. */
  async endAll(): Promise<void> {
    const live = this.all().filter((s) => s.state !== 'exited');
    await Promise.all(live.map((sandbox) => sandbox.stop()));
  }

  /** Every process the supervisor holds: the slots', the spares', then the retiring ones. */
  all(): SandboxHandle[] {
    return [...this.sandboxes, ...this.spares, ...this.retiring].filter((s): s is SandboxHandle => s !== undefined);
  }

  /** A spare ready and running nothing: the one to take over a slot, or to run a quarantined retry. */
  idleSpare(): SandboxHandle | undefined {
    return this.spares.find((s) => s?.state === 'ready' && s.busy === 0);
  }

  /**
   * A slot left empty while no spare was ready (its replacement still starting) is taken by a spare
   * as soon as one is: the pool calls this whenever a process becomes ready or idle.
   */
  fillEmptySlots(): void {
    for (let index = 0; index < this.sandboxes.length; index++) {
      if (this.sandboxes[index] !== undefined) continue;
      if (!this.promoteSpare(index)) return;
    }
  }

  /** Moves an idle ready spare into an empty slot; its place becomes the vacancy a start fills. */
  private promoteSpare(index: number): boolean {
    const spare = this.idleSpare();
    if (this.closing || spare === undefined) return false;
    this.spares[this.spares.indexOf(spare)] = undefined;
    this.sandboxes[index] = spare;
    this.logger.info({ sandbox: index, pid: spare.pid }, 'a spare sandbox process took over');
    return true;
  }

  private placeOf(sandbox: SandboxHandle): Place | undefined {
    const slot = this.sandboxes.indexOf(sandbox);
    if (slot >= 0) return { role: 'slot', index: slot };
    const spare = this.spares.indexOf(sandbox);
    return spare >= 0 ? { role: 'spare', index: spare } : undefined;
  }

  private put(place: Place, sandbox: SandboxHandle | undefined): void {
    (place.role === 'slot' ? this.sandboxes : this.spares)[place.index] = sandbox;
  }

  /** A spare has as many threads as the largest slot: it may take over any of them. */
  private threadsFor(place: Place): number {
    return place.role === 'slot' ? (this.threadCounts[place.index] as number) : Math.max(...this.threadCounts);
  }

  /**
   * Starts the process of a place; resolves once it is ready. A process that cannot start (spawn
   * fails, it exits early, or it is not ready within START_TIMEOUT_MS) rejects, and a start is tried
   * again after the crash-loop delay: the front never gives up on a place while it runs.
   */
  private startOne(place: Place): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const settings: SandboxSettings = {
        threads: this.threadsFor(place),
        memoryLimitMb: this.settings.memoryLimitMb,
        scriptTimeoutMs: this.settings.scriptTimeoutMs,
        nice: this.settings.sandboxNice ?? 0,
        consoleLines: this.settings.consoleLines ?? 0,
        consoleBytes: this.settings.consoleBytes ?? 0,
        ...(this.settings.maxOpenCalls === undefined ? {} : { maxOpenCalls: this.settings.maxOpenCalls }),
        ...(this.settings.fastPathMs === undefined ? {} : { fastPathMs: this.settings.fastPathMs }),
      };
      // Declared before the process exists: its events (never synchronous) clear it.
      let timer: NodeJS.Timeout | undefined;
      let sandbox: SandboxHandle;
      const listener: SandboxListener = {
        ready: (ready) => {
          clearTimeout(timer);
          this.logger.debug({ sandbox: ready.index, pid: ready.pid, threads: settings.threads, role: place.role }, 'sandbox process ready');
          resolve();
          this.tasks.ready(ready);
        },
        result: this.tasks.result,
        held: (held, task, heldMs) => {
          this.retireHeld(held, heldMs);
          this.tasks.held?.(held, task, heldMs);
        },
        exit: (ended, exit, tasks) => {
          clearTimeout(timer);
          if (!exit.wasReady) reject(new Error(`a sandbox process could not start: ${lastLine(exit.stderrTail) || describeExit(exit)}`));
          this.onExit(ended, exit, tasks);
        },
      };
      // Spares are numbered after the slots, in logs and in the metrics' sandbox label.
      const index = place.role === 'slot' ? place.index : this.sandboxes.length + place.index;
      try {
        sandbox = this.spawn(index, settings, listener, this.logger);
      } catch (error) {
        // spawn() throws for what it cannot even try (EINVAL…): the same as a process that could not start.
        reject(new Error(`a sandbox process could not start: ${error instanceof Error ? error.message : String(error)}`));
        this.planRestart(index, 'start-failure', this.restartDelay(), { err: error }, 'a sandbox process could not be started');
        return;
      }
      timer = setTimeout(() => sandbox.kill('stuck'), START_TIMEOUT_MS);
      this.put(place, sandbox);
      // Ahead of every task on the same channel: no task runs without the set in force.
      if (this.librariesFrame !== null) sandbox.sendLibraries(this.librariesFrame);
    });
  }

  private onExit(sandbox: SandboxHandle, exit: SandboxExit, tasks: readonly SentTask[]): void {
    if (this.retiring.delete(sandbox)) return this.onRetiredExit(sandbox, exit, tasks);
    const place = this.placeOf(sandbox);
    if (place) this.put(place, undefined);
    // A slot's process is gone: a spare takes its place before the pool hears of the tasks, so the
    // tasks sent back and the queue go to it at once.
    if (place?.role === 'slot') this.promoteSpare(place.index);
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

  /**
   * A retired process ended: its replacement started when it was retired. Ended by us once idle, it
   * is no restart; killed (the fence, a stuck thread) while finishing its tasks, it counts as one and
   * its tasks are handled as for any death.
   */
  private onRetiredExit(sandbox: SandboxHandle, exit: SandboxExit, tasks: readonly SentTask[]): void {
    this.tasks.exit(sandbox, exit, tasks);
    if (exit.killedFor === 'stop' && tasks.length === 0) {
      this.logger.info({ sandbox: sandbox.index, pid: sandbox.pid }, 'retired sandbox process ended');
      return;
    }
    const fields = { pid: sandbox.pid, code: exit.code, signal: exit.signal, stderr: exit.stderrTail.slice(-1500) || undefined };
    this.planRestart(sandbox.index, restartReason(exit), 0, fields, 'retired sandbox process ended');
  }

  /** Counts the restart, says so in the log, and fills the first vacancy after delayMs. */
  private planRestart(index: number, reason: RestartReason, delayMs: number, fields: Record<string, unknown>, what: string): void {
    if (this.closing) return;
    this.restarts++;
    this.restartCounts.set(reason, this.restartsFor(reason) + 1);
    this.events.restarted?.(reason);
    this.logger.warn({ sandbox: index, reason, restartInMs: delayMs, ...fields }, `${what}; starting a new one in ${delayMs} ms`);
    const timer = setTimeout(() => {
      this.startTimers.delete(timer);
      const place = this.vacancy();
      if (place) this.startOne(place).catch((error: unknown) => this.logger.debug({ sandbox: index, err: error }, 'start failed'));
    }, delayMs);
    this.startTimers.add(timer);
    this.updateAvailability();
  }

  /** The first empty place, slots before spares. */
  private vacancy(): Place | undefined {
    const slot = this.sandboxes.indexOf(undefined);
    if (slot >= 0) return { role: 'slot', index: slot };
    const spare = this.spares.indexOf(undefined);
    return spare >= 0 ? { role: 'spare', index: spare } : undefined;
  }

  /** The memory fence of a sandbox process with this many threads, in MB. */
  fenceMb(threads: number): number {
    const fastPathMs = this.settings.fastPathMs ?? DEFAULT_FAST_PATH_MS;
    return this.settings.sandboxMemoryMb ?? defaultSandboxMemoryMb(threads, this.settings.memoryLimitMb, fastPathMs);
  }

  /**
   * The memory fence, and a backstop for a sandbox process that stopped answering altogether (its
   * own watchdog answers for a stuck thread within its time limit + 1 s): a task sent
   * UNANSWERED_GRACE_MS past its time limit ends its process, and is handled as for a crash.
   */
  private checkSandboxes(): void {
    const now = performance.now();
    for (const sandbox of this.all()) {
      if (sandbox.ending) continue;
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
    // stop(), not end(): a process whose threads do not let it exit is killed after a grace.
    if (this.retiring.has(sandbox) && sandbox.busy === 0) void sandbox.stop();
    const bytes = sandbox.residentBytes();
    if (bytes === undefined) return;
    if (!this.retiring.has(sandbox) && bytes > RETIRE_AT_FENCE_SHARE * fenceMb * 1024 * 1024) this.retire(sandbox, bytes, fenceMb);
    if (bytes <= fenceMb * 1024 * 1024) return;
    this.logger.warn(
      { sandbox: sandbox.index, pid: sandbox.pid, residentMb: Math.round(bytes / 1048576), fenceMb },
      'sandbox process past its memory fence (SSE_SANDBOX_MEMORY_MB): ending it',
    );
    sandbox.kill('memory-fence');
  }

  /** A slot's process past the retirement share: a ready spare takes its slot (see the top). */
  private retire(sandbox: SandboxHandle, bytes: number, fenceMb: number): void {
    if (!this.retireToSpare(sandbox)) return;
    this.logger.warn(
      { sandbox: sandbox.index, pid: sandbox.pid, residentMb: Math.round(bytes / 1048576), fenceMb, running: sandbox.busy },
      'sandbox process near its memory fence (SSE_SANDBOX_MEMORY_MB): a spare took its slot; it ends when idle',
    );
  }

  /**
   * Native work holds a slot's process's main thread (HELD): whatever is sent there waits behind it,
   * for up to its call's time limit + 1 s. A ready spare takes the slot as for memory, and the pool
   * sends the tasks waiting unread there elsewhere; with no spare ready they wait, as before.
   */
  private retireHeld(sandbox: SandboxHandle, heldMs: number): void {
    if (!this.retireToSpare(sandbox)) return;
    this.logger.warn(
      { sandbox: sandbox.index, pid: sandbox.pid, heldMs: Math.round(heldMs), running: sandbox.busy },
      "native work holds a sandbox process's main thread past the fast path's budget: a spare took its slot; it ends when idle",
    );
  }

  /** A ready spare takes the slot of this process, which then takes no new task and ends once idle; a new spare starts. */
  private retireToSpare(sandbox: SandboxHandle): boolean {
    const slot = this.sandboxes.indexOf(sandbox);
    if (this.closing || slot < 0 || !this.promoteSpare(slot)) return false;
    this.retiring.add(sandbox);
    this.retirements++;
    const place = this.vacancy();
    if (place) this.startOne(place).catch((error: unknown) => this.logger.debug({ sandbox: sandbox.index, err: error }, 'start failed'));
    return true;
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
