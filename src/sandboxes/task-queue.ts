/**
 * The front's queue of tasks waiting for a sandbox thread, fair between client hosts, then between the
 * apps of a host, the users of an app and the calls of a user. App and user ids are what a client
 * says: one that invents a new app id per call would otherwise get a share per id (40 ids kept another
 * app waiting 30 s), while its address is one share. Qlik's engine is one host, so its apps share
 * fairly among themselves. At each of these levels the next free thread goes to
 * the one with the fewest tasks running, and among equals to the one whose turn it is (each goes to the
 * back of its turn when it is served). So a call of an app with nothing running waits for about one
 * running task to end, whatever another app has queued: per call alone, a trivial call of another app
 * waited 45 s behind 30 CPU-heavy calls of one app (2 threads), since each of those calls had its
 * turn before it. Within an app a user with nothing running goes first in the same way, and a small
 * call waits behind at most one task of each other call of its user.
 *
 * Between client hosts with equally many tasks running, the one that used the threads least lately
 * goes first, not merely the next in turn (thread time per host, halved every USAGE_HALF_LIFE_MS; a
 * host first seen starts as if it had just used a second): a client with many addresses has a
 * share per address, and 40 addresses each looping a script kept another host's call waiting 25 s
 * behind the 38 addresses ahead of it in turn. Now a host that was there before them and used little
 * goes at the next free thread; an address that has run a task waits behind hosts that used less
 * until its use has decayed. Use counts up to USAGE_CAP_MS only: uncapped, a host that had used the
 * threads a lot (Qlik's engine after a busy minute, 4 s here) waited until every new address had used
 * as much (8 new addresses: 14.7 s, behind 29 of their 30 one-second tasks). A host that has not run a
 * task yet ranks at the cap, with the heavy hosts, and among hosts at the cap the one whose tasks are
 * much shorter goes first (HostUsage); and lanes (LONG_TASK_MS) keep a thread for hosts proven short,
 * then for new ones, while hosts whose tasks are long wait: a busy engine's millisecond calls wait for
 * about one running task however many networks keep a loop queued.
 *
 * Tasks sent back because their sandbox process died go first. No operation grows with the queue:
 * push, remove and the running counts touch one line per level; a line exists only while it has tasks
 * queued or running, and choosing among lines looks at no more turns than tasks are running, and in the
 * first of them at each line waiting (among hosts, the hosts with tasks queued: each holds a connection,
 * so at most SSE_MAX_CONNECTIONS of them; below a host, its apps, an app's users, a user's calls: at most
 * the calls open, MAX_OPEN_CALLS).
 */
import { createHash } from 'node:crypto';

import type { PluginError } from '../contract/errors';
import type { ScriptSpec, TaskResult } from '../contract/task';
import type { TaskRequest } from './task-runner';

/** A task from the moment it is queued until it settles; while it runs, its sandbox's handle holds it (src/sandboxes/sandbox-handle.ts). */
export interface QueuedTask {
  readonly id: number;
  readonly request: TaskRequest;
  readonly resolve: (result: TaskResult) => void;
  readonly reject: (error: PluginError) => void;
  /** Sent again after a sandbox died with no culprit named: at most once. */
  retried: boolean;
  /** Asked back from its thread for another host (TaskQueue.taskToYield): at most once. */
  askedBack: boolean;
  settled: boolean;
  /** Removed from the call's signal when the task settles: a listener left behind keeps the task's rows alive until the call ends. */
  onAbort?: () => void;
}

type Key = string | number;

/** How fast a host's use of the threads is forgotten: its weight halves every this many ms. */
export const USAGE_HALF_LIFE_MS = 60_000;
/**
 * What a host is charged when first seen: as if it had just used a thread this long. So an address
 * that appears goes behind a host that was there before it and used less than that lately, and
 * beside hosts that used more: fresh addresses buy no head start.
 */
const NEW_HOST_CHARGE_MS = 1_000;
/**
 * The most use that counts when hosts are compared: a little more than a new address is charged, so a
 * host that was seen and used little still ranks below the cap (ahead of one that used a lot), while a
 * host that used a lot lately ranks with a new address that has run about one task, not behind all it
 * could still run.
 */
const USAGE_CAP_MS = NEW_HOST_CHARGE_MS + 500;
/** Hosts whose use is remembered at most; the least recently charged is forgotten first. */
const MAX_REMEMBERED_HOSTS = 10_000;
/** What a host's tasks are expected to take before it has run one: as long as a newcomer is charged. */
const NEW_HOST_TASK_MS = NEW_HOST_CHARGE_MS;
/**
 * Among hosts tied at the cap, one whose tasks take at most a quarter as long as those of the host
 * whose turn it is goes first; closer ones take turns. Qlik's one-row and chart tasks take
 * milliseconds (a slow script's rows are cut into ~20 ms tasks), a loop stopped by the time limit
 * seconds. A ratio, not fixed steps: a task time moving across a step's edge changed the order
 * between hosts whose tasks hardly differ.
 */
const SHORTER_TASKS_RATIO = 4;
/**
 * Task times below this count as this when lines below a host are compared (Line.nextFair): at
 * a millisecond or less the estimates are noise (0.1 against 0.5 ms), and such lines take turns.
 */
const SHORTEST_COMPARED_TASK_MS = 5;
/**
 * What a line below a host that the queue does not remember pays to enter (virtual ms, see
 * Line.nextFair): as a host never seen counts as if it had just used a second (NEW_HOST_CHARGE_MS).
 * App and user ids are the client's to choose: without it, a fresh id per call would always be served
 * before a user that had just been served.
 */
const NEW_LINE_MS = 1_000;
/**
 * How long a host's last free thread is kept for a user whose short task just ended (keptWithinHost):
 * a LOAD's next row comes within milliseconds; longer would cost others' long tasks more (a trivial call
 * every 1.5 s halved two 1.1 s charts of the host with 2 s).
 */
const KEEP_WITHIN_HOST_MS = 500;
/** What the keep rule takes a script the queue has not timed to take, when its call names no time limit (scriptMsOf). */
const UNKNOWN_SCRIPT_MS = 5_000;
/**
 * The longest a host's long task, none of its host's other long tasks running, is kept from the last
 * thread for other hosts' short tasks (keptBetweenHosts): about its own time, so the two share it.
 */
const KEPT_LONGEST_MS = 1_000;
/** The longest a task asked back waits for a listed host before it may take the last free thread again (heldForPriority). */
const HELD_LONGEST_MS = 1_000;
/** Users of one host whose short ends are remembered at once (keptWithinHost). */
const MAX_SHORT_ENDERS = 32;
/**
 * Lanes, so that hosts whose tasks loop to the time limit cannot take every thread from others. A
 * *priority* host is an address the administrator lists (SSE_PRIORITY_HOSTS: Qlik's engines,
 * src/grpc/client-hosts.ts). Any other host is *proven short* once it has run PROVEN_AFTER_TASKS tasks
 * and they take under LONG_TASK_MS (the average of its last few): a Qlik engine, after a few seconds
 * of work. A host is *long* once its tasks average LONG_TASK_MS or more. Any other host (new, or few
 * tasks) is *unproven*. While a host of one lane waits, hosts of later lanes may hold at most every
 * thread but one. Without lanes, 8 or 40 networks each looping to the time limit took turns with a new
 * host or a busy one (20 s a call, or a whole 20-60 s attack), and one trivial call per network first
 * made them look like light, short hosts.
 */
const LONG_TASK_MS = 250;
const PROVEN_AFTER_TASKS = 100;
/**
 * A task is asked back (YIELD) once it has run four times as long as its host's tasks take, within
 * these bounds, when a host of its lane or an earlier one other than its own waits (a long host's task
 * only for a priority host, and no priority host's task ever): it stops, runs again from its start
 * later (a script has no effect outside its call, security.md), never asked back again, and its host
 * is judged long and unproven (HostUsage.yielded). Lanes judge a host by its tasks so far, and a host
 * can make them look short: networks that made 100 trivial calls each (and 50 between loops) each put a
 * 5 s loop ahead of a busy engine's calls (40 networks: the whole attack). Each such network now costs
 * a waiting host YIELD_MIN_MS, once per 100 calls it makes to look short again; a Qlik engine's tasks
 * take milliseconds (a slow script's rows are cut into ~20 ms tasks), and an engine whose tasks take
 * longer is given up to YIELD_MAX_MS.
 */
export const YIELD_MIN_MS = 100;
export const YIELD_MAX_MS = 2 * LONG_TASK_MS;
const YIELD_TASK_TIMES = 4;
/**
 * After a task of a host that is not long ends, hosts of later lanes still hold at most every thread
 * but one for this long (with two threads or more): a LOAD's next one-row call comes a millisecond
 * after the last one's answer, and a Qlik engine's next chart calls seconds later, and found every
 * thread taken by other hosts' loops (one 5 s loop a row; a new host beside 40 looping networks: 2.3 s
 * a call). Hosts whose tasks are long have every thread again when no other has been served for this long.
 */
const KEEP_FOR_SHORT_MS = 2_000;
/**
 * Hosts that have had tasks queued this long with nothing running and none served go first (among the
 * hosts the lanes allow; in the usual order among themselves). Otherwise the lighter host and
 * the shorter tasks always go first, and a flood of trivial calls from many networks (each lighter
 * than a busy engine, each task shorter than a host's 1 s calls) kept a host whose tasks are long
 * waiting the whole attack (25-61 s) and a busy engine 1.2-1.6 s a call (3.5-8.5 s at worst).
 */
const STARVED_MS = 100;
type Lane = 0 | 1 | 2 | 3;
const PRIORITY: Lane = 0;
const PROVEN_SHORT: Lane = 1;
const UNPROVEN: Lane = 2;
const LONG: Lane = 3;

/** A host's decayed use and floor (base-2 logs at a time scale) and how long its tasks take (HostUsage). */
interface HostEntry {
  readonly floor: number;
  used: number;
  taskMs: number;
  /** Tasks it has run (while remembered). */
  tasks: number;
  /** Listed in SSE_PRIORITY_HOSTS (found once, when the entry is made). */
  readonly priority: boolean;
}

/**
 * Thread time per host, decayed: each host's sum of (ms × 2^(t/halfLife)) kept as its base-2 log, so
 * that sums from different times compare without rescaling and never overflow. A host also has a floor,
 * NEW_HOST_CHARGE_MS at the time it was first seen, and weighs the larger of the two: a host that has
 * used less than that since it came keeps its place ahead of hosts that came after it. (Added to the
 * use instead, the charge plus 100 ms of one-row calls put a host behind 40 networks that came 3 s
 * later, each looping a script to its time limit: it waited the whole attack, 20 s.) A host that has
 * not run a task yet weighs the cap: it ties with the hosts that used a lot, never goes ahead of them
 * (at its floor, 40 networks that had waited a few seconds went ahead of a busy Qlik engine, one
 * 5-second loop each: 20 s and more a call), and among those tied a host whose tasks are much shorter
 * goes first (SHORTER_TASKS_RATIO): a busy engine's millisecond calls pass the loops, where taking
 * turns with 8 looping networks made each of its calls wait 20 s. A network can make its tasks look
 * shorter with trivial calls between its loops; the lanes (LONG_TASK_MS) still keep a thread for
 * hosts proven short (security.md says what is left).
 */
export class HostUsage {
  private readonly weights = new Map<Key, HostEntry>();

  constructor(
    private readonly halfLifeMs = USAGE_HALF_LIFE_MS,
    private readonly isPriority: (host: string) => boolean = () => false,
  ) {}

  /** Smaller is less used, counting at most USAGE_CAP_MS of use now; a host never seen (or forgotten) is -Infinity. */
  weight(host: Key, nowMs: number): number {
    const cap = nowMs / this.halfLifeMs + Math.log2(USAGE_CAP_MS);
    const entry = this.weights.get(host);
    if (entry === undefined) return Number.NEGATIVE_INFINITY;
    if (entry.used === Number.NEGATIVE_INFINITY) return cap;
    return Math.min(Math.max(entry.floor, entry.used), cap);
  }

  /** The host's lane (see LONG_TASK_MS). */
  laneOf(host: Key): Lane {
    const entry = this.weights.get(host);
    if (entry?.priority) return PRIORITY;
    if (entry === undefined || entry.used === Number.NEGATIVE_INFINITY) return UNPROVEN;
    if (entry.taskMs >= LONG_TASK_MS) return LONG;
    return entry.tasks >= PROVEN_AFTER_TASKS ? PROVEN_SHORT : UNPROVEN;
  }

  /** The host's task was asked back after ranMs (YIELD_MIN_MS): judged long, and unproven again. */
  yielded(host: Key, ranMs: number): void {
    const entry = this.weights.get(host);
    if (entry === undefined) return;
    entry.taskMs = Math.max(entry.taskMs, ranMs, LONG_TASK_MS);
    entry.tasks = 0;
  }

  /** How long the host's tasks take, in ms: its first task, then each moves it halfway; NEW_HOST_TASK_MS before. */
  taskMs(host: Key): number {
    return this.weights.get(host)?.taskMs ?? NEW_HOST_TASK_MS;
  }

  /** A host queues a task: one never seen (or forgotten) starts with a floor of NEW_HOST_CHARGE_MS now. */
  seen(host: Key, nowMs: number): void {
    if (!this.weights.has(host))
      this.remember(host, {
        floor: this.logWeight(NEW_HOST_CHARGE_MS, nowMs),
        used: Number.NEGATIVE_INFINITY,
        taskMs: NEW_HOST_TASK_MS,
        tasks: 0,
        priority: typeof host === 'string' && this.isPriority(host),
      });
  }

  charge(host: Key, ms: number, nowMs: number): void {
    const added = this.logWeight(ms, nowMs);
    const entry = this.weights.get(host) ?? {
      floor: Number.NEGATIVE_INFINITY,
      used: Number.NEGATIVE_INFINITY,
      taskMs: ms,
      tasks: 0,
      priority: typeof host === 'string' && this.isPriority(host),
    };
    entry.tasks++;
    const before = entry.used;
    entry.used = before === Number.NEGATIVE_INFINITY ? added : Math.max(before, added) + Math.log2(1 + 2 ** -Math.abs(before - added));
    // The first task replaces the guess; later ones move it halfway, so a host's next task is judged by
    // its last few. (Its longest lately instead, decayed like use, kept an engine that had run three
    // 1.5 s tasks behind 8 new looping networks, 20 s, long after its calls took milliseconds again.)
    entry.taskMs = before === Number.NEGATIVE_INFINITY ? ms : (entry.taskMs + ms) / 2;
    this.remember(host, entry);
  }

  private logWeight(ms: number, nowMs: number): number {
    return nowMs / this.halfLifeMs + Math.log2(Math.max(ms, 0.001));
  }

  /** Keeps the entry as the most recently charged; the least recently charged is forgotten past MAX_REMEMBERED_HOSTS. */
  private remember(host: Key, entry: HostEntry): void {
    this.weights.delete(host);
    this.weights.set(host, entry);
    if (this.weights.size > MAX_REMEMBERED_HOSTS) {
      const [oldest] = this.weights.keys();
      if (oldest !== undefined) this.weights.delete(oldest);
    }
  }
}

/**
 * How long the tasks of each app, each user of an app, and each script of a user take (per host): the
 * estimates start-time fair queuing charges a task at its start and orders the lines below a host by
 * (Line.nextFair). A call is judged by its script as this user ran it (the context key), else as any
 * user of the host ran it (an app's users run the same charts: a user new to an app passes looping users
 * at once with a chart others ran), else by its user, its app, its host: the first of these the queue
 * knows. Each line's time starts at its first task, then each task moves it halfway. Keys of long ids
 * are hashed, so what is remembered stays small whatever the ids.
 */
class TaskTimes {
  private readonly times = new Map<string, number>();

  /** Undefined for a line not seen (or forgotten): it is then judged by the line above it. */
  taskMs(key: string): number | undefined {
    return this.times.get(key);
  }

  charge(key: string, ms: number): void {
    const before = this.times.get(key);
    remember(this.times, key, before === undefined ? ms : (before + ms) / 2, MAX_REMEMBERED_LINES);
  }
}

/** Sets `key` as the newest entry of `map`, forgetting the oldest past `max` entries. */
function remember<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > max) {
    const [oldest] = map.keys();
    if (oldest !== undefined) map.delete(oldest);
  }
}

/** Lines below hosts whose task times are remembered (TaskTimes): with 64-byte keys, under 2 MB. */
const MAX_REMEMBERED_LINES = 10_000;
/** Keys longer than this are hashed (ids are the client's text, kilobytes each). */
const MAX_TIMES_KEY_CHARS = 64;

/**
 * The TaskTimes key of an app (`[host, app]`), a user (`[host, app, user]`), a user's script
 * (`[host, contextKey]`) or a script as any user runs it (`[host, scriptId(spec)]`).
 */
function timesKey(kind: 'app' | 'user' | 'script' | 'text', parts: readonly Key[]): string {
  const key = `${kind}\u0000${parts.join('\u0000')}`;
  return key.length <= MAX_TIMES_KEY_CHARS ? key : `${kind}#${createHash('sha256').update(key).digest('base64url')}`;
}

/** What makes a script the same for every user: its text and how it is called (made once per prepared spec). */
function scriptId(spec: ScriptSpec | undefined): string {
  if (spec === undefined) return '';
  let id = scriptIds.get(spec);
  if (id === undefined) {
    id = createHash('sha256')
      .update(JSON.stringify([spec.factory === true, spec.entry ?? null, spec.boundNames, spec.script]))
      .digest('base64url');
    scriptIds.set(spec, id);
  }
  return id;
}

const scriptIds = new WeakMap<ScriptSpec, string>();

/** The TaskTimes keys of a request's line at `depth` below the root: none for its host, then its app, user and call. */
function timesKeysAt(depth: number, request: TaskRequest): string[] {
  const { host, appId, userId } = request.owner;
  switch (depth) {
    case 1:
      return [timesKey('app', [host, appId])];
    case 2:
      return [timesKey('user', [host, appId, userId])];
    case 3:
      return [timesKey('script', [host, request.call.contextKey]), timesKey('text', [host, scriptId(request.call.spec)])];
    default:
      return [];
  }
}

/** What a line's virtual times are remembered by while it is out of the tree: its first TaskTimes key, or its host. */
function virtualKey(line: Line): string {
  return line.timesKeys[0] ?? `host\u0000${String(line.key)}`;
}

/** The root, a host, an app of a host, a user of an app, or a call of a user: what is queued and running below it. */
class Line {
  queued = 0;
  running = 0;
  /** A host's: since when it has had tasks queued and none served (STARVED_MS). */
  waitingSinceMs = 0;
  /** An app's, a user's or a call's keys in TaskTimes, the first known judges it; a host has none. */
  timesKeys: readonly string[] = [];
  /**
   * Below a host, start-time fair queuing: the virtual time (thread ms) up to which this line has been
   * served, each task charged its estimated time when it starts and corrected when it ends...
   */
  vfinish = 0;
  /** ...and the virtual time of the lines below this one: the start tag of the last task started among them. */
  vnow = 0;
  /** The lines below with tasks queued or running. */
  readonly below = new Map<Key, Line>();
  /** A call's own tasks in order (calls only). */
  readonly tasks = new Map<number, QueuedTask>();
  /** The lines below with tasks queued, by how many tasks they have running; each Map's order is the turn. */
  private readonly turns: (Map<Key, Line> | undefined)[] = [];

  constructor(
    readonly key: Key,
    readonly parent: Line | undefined,
  ) {}

  /** The line below to serve next: the fewest tasks running, the first in turn among equals. */
  next(): Line | undefined {
    for (const turn of this.turns) if (turn) for (const line of turn.values()) return line;
    return undefined;
  }

  /**
   * Among the lines below with the fewest tasks running, the one whose next task would finish first in
   * virtual time: it starts at the line's start tag (taken when its task arrived, `arrive`) and takes
   * the time its tasks are estimated to take; the first in turn among equals. So a line
   * with nothing queued for a while (a user between clicks) is served before lines that keep tasks
   * queued (40 apps or users each keeping a 1.1 s task queued held a 300 ms chart 22 s a call when
   * lines below a host took turns task by task), and a line whose tasks are much shorter goes first.
   */
  nextFair(taskMsOf: (line: Line) => number): Line | undefined {
    for (const turn of this.turns) {
      if (turn === undefined || turn.size === 0) continue;
      let best: Line | undefined;
      let bestFinish = Number.POSITIVE_INFINITY;
      for (const line of turn.values()) {
        const finish = line.vfinish + Math.max(SHORTEST_COMPARED_TASK_MS, taskMsOf(line));
        if (finish < bestFinish) [best, bestFinish] = [line, finish];
      }
      return best;
    }
    return undefined;
  }

  /**
   * Among the lines below with the fewest tasks running, the least used; among those tied (at the cap),
   * the first in turn, unless another's tasks are SHORTER_TASKS_RATIO times shorter (the shortest then).
   */
  leastUsed(usage: HostUsage, nowMs: number, allow: (host: Key) => boolean = () => true): Line | undefined {
    for (const turn of this.turns) {
      if (turn === undefined || turn.size === 0) continue;
      let first: Line | undefined;
      let shortest: Line | undefined;
      let bestWeight = Number.POSITIVE_INFINITY;
      let firstMs = Number.POSITIVE_INFINITY;
      let shortestMs = Number.POSITIVE_INFINITY;
      for (const line of turn.values()) {
        if (!allow(line.key)) continue;
        const weight = usage.weight(line.key, nowMs);
        if (first !== undefined && weight > bestWeight) continue;
        const taskMs = usage.taskMs(line.key);
        if (first === undefined || weight < bestWeight) {
          first = shortest = line;
          bestWeight = weight;
          firstMs = shortestMs = taskMs;
        } else if (taskMs < shortestMs) {
          shortest = line;
          shortestMs = taskMs;
        }
      }
      if (first === undefined || shortest === undefined) continue;
      return shortestMs * SHORTER_TASKS_RATIO <= firstMs ? shortest : first;
    }
    return undefined;
  }

  /** Changes a line below and puts it where its counts now say: at the back of its turn when moved (or rotated). */
  reseat(child: Line, change: (line: Line) => void, rotate: boolean): void {
    const before = child.queued > 0 ? child.running : -1;
    change(child);
    const after = child.queued > 0 ? child.running : -1;
    if (before !== after || rotate) {
      if (before >= 0) this.turns[before]?.delete(child.key);
      if (after >= 0) {
        const turn = this.turns[after] ?? new Map<Key, Line>();
        this.turns[after] = turn;
        turn.set(child.key, child);
      }
    }
    if (child.queued === 0 && child.running === 0) this.below.delete(child.key);
  }
}

/**
 * A task arrives for a call: its line and each above it below the host that had nothing waiting take
 * their start tag now, the later of where they were served up to and their parent's virtual time
 * (start-time fair queuing: a tag taken when the task is served instead floats up with the others'
 * and a line of long tasks waiting beside short ones never went first: 22-42 s for a 1.1 s chart).
 */
function arrive(call: Line): void {
  for (let line: Line | undefined = call; line?.parent !== undefined && line.timesKeys.length > 0; line = line.parent)
    if (line.queued === 0) line.vfinish = Math.max(line.vfinish, line.parent.vnow);
}

/** The host line above a call's (or any) line: the one whose parent is the root. */
function hostLineOf(line: Line): Line {
  let host = line;
  while (host.parent?.parent !== undefined) host = host.parent;
  return host;
}

/** A user whose task ended in under LONG_TASK_MS, and when (TaskQueue.keptWithinHost). */
interface ShortEnd {
  readonly ms: number;
  readonly appId: string;
  readonly userId: string;
}

/** A thread kept for hosts of this lane or an earlier one (and for the host served lately, KEEP_FOR_SHORT_MS). */
interface Kept {
  readonly lane: Lane;
  readonly keptFor: string | undefined;
}

interface Running {
  readonly task: QueuedTask;
  readonly line: Line;
  readonly host: string;
  readonly startedMs: number;
  readonly lane: Lane;
  /** Asked back once it has run this long (YIELD_MIN_MS). */
  readonly yieldAfterMs: number;
  /** The virtual time charged when it started, to the call's line and each above it below the host. */
  readonly charged: readonly number[];
  /** How long its script was estimated to take when it started (TaskQueue.scriptMsOf). */
  readonly scriptMs: number;
  /** Asked back; it answers ABORTED, or ends first. */
  yielding: boolean;
  /** Asked back for a short task of its own host (taskToYield): its host is not judged by it. */
  withinHost: boolean;
}

/** A running task judged long: its script's estimate, asked back once, or run LONG_TASK_MS already. */
function runsLong(run: Running, nowMs: number): boolean {
  return run.scriptMs >= LONG_TASK_MS || run.task.askedBack || nowMs - run.startedMs >= LONG_TASK_MS;
}

export class TaskQueue {
  /** Tasks put back at the head, last one first; `head` may hold removed ones until they are reached. */
  private readonly head: QueuedTask[] = [];
  private readonly inHead = new Set<QueuedTask>();
  private readonly root = new Line('', undefined);
  /** Each task running (started and not finished): its call's line, when it started, its host's lane then. */
  private readonly running = new Map<number, Running>();
  /** When the last task of a host of each lane ended, and whose (KEEP_FOR_SHORT_MS). */
  private readonly lastEnd: { ms: number; host: string }[] = [0, 1, 2, 3].map(() => ({ ms: Number.NEGATIVE_INFINITY, host: '' }));
  /** Tasks running now, by the lane their host was in when they started (LONG_TASK_MS). */
  private readonly runningIn: [number, number, number, number] = [0, 0, 0, 0];
  private readonly usage: HostUsage;
  private readonly taskTimes = new TaskTimes();
  /** When each waiting task was queued (keptBetweenHosts). */
  private readonly queuedAt = new WeakMap<QueuedTask, number>();
  /** Hosts whose task ended in under LONG_TASK_MS within KEEP_WITHIN_HOST_MS, and when, oldest first (keptBetweenHosts). */
  private readonly hostShortEnds = new Map<string, number>();
  /** Per host, when a task of one of its users last ended in under LONG_TASK_MS, and whose (keptWithinHost). */
  private readonly shortEnds = new Map<string, Map<string, ShortEnd>>();
  /** The virtual times of lines that have nothing queued or running now (Line.nextFair), by virtualKey. */
  private readonly virtualTimes = new Map<string, { readonly vfinish: number; readonly vnow: number }>();

  /** nowMs: a clock in ms (tests pass their own); isPriority: whether a host is listed in SSE_PRIORITY_HOSTS. */
  constructor(
    private readonly nowMs: () => number = () => performance.now(),
    halfLifeMs: number = USAGE_HALF_LIFE_MS,
    isPriority: (host: string) => boolean = () => false,
  ) {
    this.usage = new HostUsage(halfLifeMs, isPriority);
  }

  get length(): number {
    return this.inHead.size + this.root.queued;
  }

  /** Tasks of one client host waiting here (not counting those put back at the head). */
  queuedOf(host: string): number {
    return this.root.below.get(host)?.queued ?? 0;
  }

  /**
   * When the queue is full, the task that makes room for one of `host`: the newest of the host with the
   * most tasks waiting, if it has at least two more than `host` (so two hosts never take slots from each
   * other back and forth); undefined when none may be taken.
   */
  displaceableFor(host: string): QueuedTask | undefined {
    const own = this.queuedOf(host);
    let most: Line | undefined;
    for (const line of this.root.below.values()) if (line.queued > (most?.queued ?? own + 1)) most = line;
    if (most === undefined) return undefined;
    let newest: QueuedTask | undefined;
    for (const app of most.below.values())
      for (const user of app.below.values())
        for (const call of user.below.values())
          for (const task of call.tasks.values()) if (newest === undefined || task.id > newest.id) newest = task;
    return newest;
  }

  push(task: QueuedTask): void {
    this.usage.seen(task.request.owner.host, this.nowMs());
    this.queuedAt.set(task, this.nowMs());
    const call = this.callLine(task.request, true) as Line;
    call.tasks.set(task.id, task);
    this.queueIn(call);
  }

  /** Counts a task of this call queued; its host starts waiting now if it had nothing queued. */
  private queueIn(call: Line): void {
    const host = hostLineOf(call);
    if (host.queued === 0) host.waitingSinceMs = this.nowMs();
    arrive(call);
    this.update(call, (line) => line.queued++, false);
  }

  unshift(task: QueuedTask): void {
    this.head.push(task);
    this.inHead.add(task);
  }

  /** The next task for a free thread; `threads`: how many there are in all (see LONG_TASK_MS). */
  shift(threads = Number.POSITIVE_INFINITY): QueuedTask | undefined {
    for (let back = this.head.pop(); back !== undefined; back = this.head.pop()) {
      if (this.inHead.delete(back)) return back;
    }
    const now = this.nowMs();
    const kept = this.laneToKeepAThreadFor(threads, now);
    const allow = kept === undefined ? () => true : (host: Key) => this.mayHave(kept, host);
    // A thread kept for a lane with nobody waiting in it stays free (KEEP_FOR_SHORT_MS).
    const starved = this.starvedHosts(now, allow);
    const taskMsOf = (below: Line): number => this.taskMsOf(below);
    // Hosts whose next task was asked back while a listed host is active: it waits for the listed ones.
    const held = new Set<Key>();
    let line: Line | undefined;
    let first: QueuedTask | undefined;
    for (;;) {
      // Starved hosts go first unless every one of them is held.
      const goFirst = starved !== undefined && (held.size === 0 || [...starved].some((host) => !held.has(host))) ? starved : undefined;
      const permitted = (host: Key): boolean => !held.has(host) && (goFirst === undefined ? allow(host) : goFirst.has(host));
      line = this.root.leastUsed(this.usage, now, permitted);
      while (line !== undefined && line.tasks.size === 0) line = line.nextFair(taskMsOf);
      [first] = line?.tasks.values() ?? [];
      if (line === undefined || first === undefined) return undefined;
      const { host } = first.request.owner;
      if (!first.askedBack || this.usage.laneOf(host) === PRIORITY || !this.heldForPriority(first, threads, now)) break;
      held.add(host);
    }
    // A thread kept for another host, or within the host for a user, whose short task just ended goes
    // to its next task when one waits (the fair choice may be the task it is kept from), else stays free.
    const keptForHost = this.keptBetweenHosts(first.request, threads, now, first.askedBack, this.queuedAt.get(first));
    const keptFor =
      keptForHost === undefined ? this.keptWithinHost(first.request, threads, now, first.askedBack, this.queuedAt.get(first)) : undefined;
    if (keptForHost !== undefined) {
      line = this.nextLineOf(this.root.below.get(keptForHost));
      [first] = line?.tasks.values() ?? [];
      if (line === undefined || first === undefined) return undefined;
    } else if (keptFor !== undefined) {
      line = this.nextCallOf(first.request.owner.host, keptFor.appId, keptFor.userId);
      [first] = line?.tasks.values() ?? [];
      if (line === undefined || first === undefined) return undefined;
    }
    hostLineOf(line).waitingSinceMs = now;
    line.tasks.delete(first.id);
    // Served: the call, its user and its app each go to the back of their turn.
    this.update(line, (l) => l.queued--, true);
    return first;
  }

  /**
   * The hosts `allow` allows that have waited with nothing running and none of their tasks served for
   * STARVED_MS or more; none when there are none. They go before every other host, in the usual order
   * among themselves (so a busy engine still goes before networks that looped while it waited).
   */
  private starvedHosts(nowMs: number, allow: (host: Key) => boolean): Set<Key> | undefined {
    let starved: Set<Key> | undefined;
    for (const host of this.root.below.values()) {
      if (host.queued === 0 || host.running > 0 || !allow(host.key)) continue;
      if (nowMs - host.waitingSinceMs < STARVED_MS) continue;
      starved ??= new Set();
      starved.add(host.key);
    }
    return starved;
  }

  /**
   * Whether a task of `host` may take a free thread now, nothing being queued: not when the thread is
   * kept for hosts of an earlier lane (KEEP_FOR_SHORT_MS).
   */
  mayStartNow(request: TaskRequest, threads: number): boolean {
    const now = this.nowMs();
    const kept = this.laneToKeepAThreadFor(threads, now);
    return (
      (kept === undefined || this.mayHave(kept, request.owner.host)) &&
      this.keptBetweenHosts(request, threads, now) === undefined &&
      this.keptWithinHost(request, threads, now) === undefined
    );
  }

  /**
   * Within a host, what the lanes do between hosts: for KEEP_WITHIN_HOST_MS after a task of a user ended
   * in under LONG_TASK_MS, the last free thread is kept for that user from a task of the host whose
   * script is not short and whose next task would finish later in virtual time than the user's
   * (virtualNext, as Line.nextFair orders them). A LOAD sends its rows one call after another: each row
   * freed its thread for the moment before the next arrived, and two other apps of the engine, one call
   * each, took both threads (0.4 rows a second beside two looping apps, 1.8 beside two apps of 1.1 s
   * calls). By virtual time, not by length alone: kept from every longer task, a 1.1 s chart waited
   * 22-42 s beside three apps of 200 ms charts, whose tasks kept ending.
   */
  private keptWithinHost(
    request: TaskRequest,
    threads: number,
    nowMs: number,
    askedBack = false,
    queuedAtMs = nowMs,
  ): ShortEnd | undefined {
    if (!(threads > 1) || this.running.size + 1 < threads) return undefined;
    const scriptMs = this.keepableMs(request, nowMs, askedBack, queuedAtMs);
    if (scriptMs === undefined) return undefined;
    const { host, appId, userId } = request.owner;
    // Every user whose short task ended lately, not only the last: an app that ran trivial calls between
    // its loops made the thread kept for itself, and took it (a LOAD beside two such apps: 3.4 rows/s).
    for (const ended of this.shortEnds.get(host)?.values() ?? []) {
      if (nowMs - ended.ms >= KEEP_WITHIN_HOST_MS || (ended.appId === appId && ended.userId === userId)) continue;
      // Compared where the two part, their apps or else their users, as Line.nextFair compares them.
      const user = ended.appId === appId;
      const candidate = this.virtualNext(host, appId, user ? userId : undefined, scriptMs);
      // The user's next task when it waits already: judged by its own script (4.8 s calls of apps that
      // had made trivial ones took the thread a 300 ms chart was kept from).
      const [own] = this.nextCallOf(host, ended.appId, ended.userId)?.tasks.values() ?? [];
      const endedNext = this.virtualNext(host, ended.appId, user ? ended.userId : undefined, own && this.scriptMsOf(own.request));
      if (candidate > endedNext) return ended;
    }
    return undefined;
  }

  /**
   * Whether a task of another host asked back (taskToYield) waits for a listed host (SSE_PRIORITY_HOSTS)
   * that has tasks waiting, or ended a short task within KEEP_WITHIN_HOST_MS (a LOAD between its rows),
   * rather than take the last free thread: for HELD_LONGEST_MS after it was asked back. Not held, its
   * host had fewer tasks running than the engine, so it took back at once the thread it had given up,
   * and ran its whole time limit (a task is asked back once) while the engine's chart waited for it.
   * Only for listed hosts, which go ahead of every other; among the others, a later lane keeps every
   * thread but one (laneToKeepAThreadFor).
   */
  private heldForPriority(task: QueuedTask, threads: number, nowMs: number): boolean {
    // Held for at most HELD_LONGEST_MS, and only from the last free thread: held while an engine was
    // merely active, an unlisted call waited a whole reload (20-40 s) beside idle threads.
    if (nowMs - (this.queuedAt.get(task) ?? nowMs) >= HELD_LONGEST_MS || this.running.size + 1 < threads) return false;
    return this.priorityHostActive(nowMs);
  }

  private priorityHostActive(nowMs: number): boolean {
    for (const [host, endedMs] of this.hostShortEnds)
      if (nowMs - endedMs < KEEP_WITHIN_HOST_MS && this.usage.laneOf(host) === PRIORITY) return true;
    for (const host of this.root.below.values()) if (host.queued > 0 && this.usage.laneOf(host.key) === PRIORITY) return true;
    return false;
  }

  /**
   * The script time of a task the keep rules may keep from the last thread, undefined when they may
   * not. A short task frees the thread as soon as it would have been kept: never kept from it (a LOAD's
   * row was kept from its thread for an app whose trivial call had ended, whose loop then took it). A
   * task asked back ran long, whatever its script's time says (taskToYieldWithinHost). With no other
   * long task of its host running, kept at most about its own time since it was queued
   * (KEPT_LONGEST_MS at most): kept for as long as the engine's clicks came while another network's
   * loop held the other thread, its 1.1 s chart waited the whole loop; three listed engines on two
   * threads, one's 1.1 s charts took the thread whenever another's LOAD row had not arrived yet.
   */
  private keepableMs(request: TaskRequest, nowMs: number, askedBack: boolean, queuedAtMs: number): number | undefined {
    const scriptMs = askedBack ? (request.call.callTimeoutMs ?? UNKNOWN_SCRIPT_MS) : this.scriptMsOf(request);
    if (scriptMs < LONG_TASK_MS) return undefined;
    if (!this.longRunsIn(request.owner.host, nowMs) && nowMs - queuedAtMs >= Math.min(scriptMs, KEPT_LONGEST_MS)) return undefined;
    return scriptMs;
  }

  /**
   * Whether a long task of the host runs (runsLong). The keep rules only keep the last thread from a
   * host's long task while another of its long tasks runs: they bound its long work to every thread
   * but one of those it holds, never to none. Kept while another host's loop held the other thread,
   * the engine's 1.1 s chart waited that whole loop (5 s) whenever the engine also made short calls.
   */
  private longRunsIn(host: string, nowMs: number): boolean {
    for (const run of this.running.values()) if (run.host === host && runsLong(run, nowMs)) return true;
    return false;
  }

  /** The call line of a user whose task would be served next, when the user has any queued. */
  private nextCallOf(host: string, appId: string, userId: string): Line | undefined {
    return this.nextLineOf(this.root.below.get(host)?.below.get(appId)?.below.get(userId));
  }

  /** The call line below `line` (a host, app, user or call) whose task would be served next, when it has any queued. */
  private nextLineOf(line: Line | undefined): Line | undefined {
    if (line === undefined || line.queued === 0) return undefined;
    const taskMsOf = (below: Line): number => this.taskMsOf(below);
    let next: Line | undefined = line;
    while (next !== undefined && next.tasks.size === 0) next = next.nextFair(taskMsOf);
    return next;
  }

  /**
   * Between hosts, what keptWithinHost does within one: for KEEP_WITHIN_HOST_MS after a task of a host
   * ended in under LONG_TASK_MS, a task whose script is not short may not take the last thread that no
   * long task holds, when that host is of the task's lane or an earlier one and goes before the task's
   * host (fewer tasks running, or as many and less used). Two engines listed in SSE_PRIORITY_HOSTS: two
   * apps of one looping to the time limit took each thread the other's LOAD freed before its next row
   * arrived (0.3-0.4 rows a second, nearly every row waiting 5 s). Long tasks keep every thread but one
   * while such a host is active, so the cost to them is bounded: one thread of the host's time.
   */
  private keptBetweenHosts(
    request: TaskRequest,
    threads: number,
    nowMs: number,
    askedBack = false,
    queuedAtMs = nowMs,
  ): string | undefined {
    if (!(threads > 1) || this.hostShortEnds.size === 0) return undefined;
    let long = 0;
    for (const run of this.running.values()) if (runsLong(run, nowMs)) long++;
    if (long + 1 < threads || this.keepableMs(request, nowMs, askedBack, queuedAtMs) === undefined) return undefined;
    const { host } = request.owner;
    const lane = this.usage.laneOf(host);
    const running = this.root.below.get(host)?.running ?? 0;
    for (const [ender, endedMs] of this.hostShortEnds) {
      if (ender === host || nowMs - endedMs >= KEEP_WITHIN_HOST_MS || this.usage.laneOf(ender) > lane) continue;
      const enderRunning = this.root.below.get(ender)?.running ?? 0;
      if (enderRunning < running || (enderRunning === running && this.usage.weight(ender, nowMs) <= this.usage.weight(host, nowMs)))
        return ender;
    }
    return undefined;
  }

  /** Remembers that a host's task ended short (keptBetweenHosts): the latest MAX_SHORT_ENDERS hosts of the last KEEP_WITHIN_HOST_MS. */
  private hostEndedShort(host: string, nowMs: number): void {
    this.hostShortEnds.delete(host);
    this.hostShortEnds.set(host, nowMs);
    for (const [oldest, endedMs] of this.hostShortEnds) {
      if (this.hostShortEnds.size <= MAX_SHORT_ENDERS && nowMs - endedMs < KEEP_WITHIN_HOST_MS) break;
      this.hostShortEnds.delete(oldest);
    }
  }

  /** Remembers that a user's task ended short (keptWithinHost): the latest MAX_SHORT_ENDERS users a host, of the latest hosts. */
  private endedShort(host: string, owner: { readonly appId: string; readonly userId: string }, nowMs: number): void {
    let enders = this.shortEnds.get(host);
    if (enders === undefined) {
      enders = new Map();
      remember(this.shortEnds, host, enders, MAX_REMEMBERED_HOSTS);
    }
    remember(
      enders,
      `${owner.appId}\u0000${owner.userId}`,
      { ms: nowMs, appId: owner.appId, userId: owner.userId },
      Number.POSITIVE_INFINITY,
    );
    for (const [oldest, ended] of enders) {
      if (enders.size <= MAX_SHORT_ENDERS && nowMs - ended.ms < KEEP_WITHIN_HOST_MS) break;
      enders.delete(oldest);
    }
  }

  /**
   * When the next task of an app (or of a user of it) of a host would finish in virtual time, as
   * Line.nextFair judges it: at its start tag (or where it would arrive, `arrive`) plus its estimate
   * (`estimateMs` when given). Not by the start tag alone: a line that arrives starts at its host's
   * virtual time, which a LOAD's own rows move, so a loop that came back started level with the LOAD
   * and took its thread after a few dozen rows (4 s a round; 12-14 rows a second beside two loops).
   */
  private virtualNext(host: string, appId: string, userId: string | undefined, estimateMs?: number): number {
    const hostLine = this.root.below.get(host);
    const appLine = hostLine?.below.get(appId);
    const parent = userId === undefined ? hostLine : appLine;
    const line = userId === undefined ? appLine : appLine?.below.get(userId);
    const vnow = parent?.vnow ?? 0;
    if (line !== undefined) {
      const start = line.queued === 0 ? Math.max(line.vfinish, vnow) : line.vfinish;
      return start + Math.max(SHORTEST_COMPARED_TASK_MS, estimateMs ?? this.taskMsOf(line));
    }
    const key = userId === undefined ? timesKey('app', [host, appId]) : timesKey('user', [host, appId, userId]);
    const start = Math.max(this.virtualTimes.get(key)?.vfinish ?? vnow + NEW_LINE_MS, vnow);
    return start + Math.max(SHORTEST_COMPARED_TASK_MS, estimateMs ?? this.taskTimes.taskMs(key) ?? this.usage.taskMs(host));
  }

  /**
   * How long a task's script takes as the queue knows it (as its user ran it, else as any user of the
   * host ran its text); as long as its call may run when unknown. For the keep rule and the ask-back
   * within a host, not the fair order: apps that made trivial calls between loops, each loop a new text,
   * looked as short as their trivial calls and took a LOAD's thread (100 rows a second, two waits of a
   * whole loop in 15 s). `keys`: the call line's, when it has one (no hashing again per task).
   */
  private scriptMsOf(request: TaskRequest, keys: readonly string[] = timesKeysAt(3, request)): number {
    for (const key of keys) {
      const ms = this.taskTimes.taskMs(key);
      if (ms !== undefined) return ms;
    }
    return request.call.callTimeoutMs ?? UNKNOWN_SCRIPT_MS;
  }

  /** Whether a thread kept for a lane may go to `host`: one of that lane or an earlier one, or the host it is kept for. */
  private mayHave(kept: Kept, host: Key): boolean {
    return this.usage.laneOf(host) <= kept.lane || host === kept.keptFor;
  }

  /**
   * The lane (or an earlier one) the free thread must go to: the first lane with a host waiting (or
   * one served lately, KEEP_FOR_SHORT_MS: that host may have it too, whatever its lane now), when
   * tasks of later lanes already hold every other thread; undefined when any lane may have it. Only
   * looks at the waiting hosts when the running tasks could hold that many.
   */
  private laneToKeepAThreadFor(threads: number, nowMs: number): Kept | undefined {
    if (this.runningIn[PROVEN_SHORT] + this.runningIn[UNPROVEN] + this.runningIn[LONG] + 1 <= threads - 1) return undefined;
    let first: Lane = LONG;
    let keptFor: string | undefined;
    if (threads > 1)
      for (let lane: Lane = UNPROVEN; lane >= PRIORITY; lane--) {
        const end = this.lastEnd[lane] as { ms: number; host: string };
        if (nowMs - end.ms < KEEP_FOR_SHORT_MS) [first, keptFor] = [lane, end.host];
      }
    for (const host of this.root.below.values()) {
      if (first === PRIORITY) break;
      if (host.queued === 0) continue;
      const lane = this.usage.laneOf(host.key);
      if (lane < first) [first, keptFor] = [lane, undefined];
    }
    let later = 0;
    for (let next = first + 1; next <= LONG; next++) later += this.runningIn[next as Lane];
    return later + 1 > threads - 1 ? { lane: first, keptFor } : undefined;
  }

  /** True when the task was waiting here. */
  remove(task: QueuedTask): boolean {
    if (this.inHead.delete(task)) {
      if (this.inHead.size === 0) this.head.length = 0;
      return true;
    }
    const call = this.callLine(task.request, false);
    if (!call?.tasks.delete(task.id)) return false;
    this.update(call, (line) => line.queued--, false);
    return true;
  }

  /**
   * A task that goes to a free thread at once, nothing being queued: what push and then shift would
   * do, without building and undoing its place in the turns (a LOAD's one-row calls all go this way).
   */
  startNow(task: QueuedTask): void {
    this.usage.seen(task.request.owner.host, this.nowMs());
    arrive(this.callLine(task.request, true) as Line);
    this.started(task);
  }

  /** The task was sent to a sandbox thread: it counts as running for its call, user and app until finished. */
  started(task: QueuedTask): void {
    if (this.running.has(task.id)) return;
    const call = this.callLine(task.request, true) as Line;
    const host = task.request.owner.host;
    const lane = this.usage.laneOf(host);
    const yieldAfterMs = Math.min(YIELD_MAX_MS, Math.max(YIELD_MIN_MS, YIELD_TASK_TIMES * this.usage.taskMs(host)));
    const charged = this.chargeStart(call);
    const scriptMs = this.scriptMsOf(task.request, call.timesKeys);
    this.running.set(task.id, {
      task,
      line: call,
      host,
      startedMs: this.nowMs(),
      lane,
      yieldAfterMs,
      scriptMs,
      yielding: false,
      withinHost: false,
      charged,
    });
    this.runningIn[lane]++;
    this.update(call, (line) => line.running++, false);
  }

  /**
   * The task's thread is done with it (a result, or its process ended); unknown ids are ignored. It is
   * charged the time since it was sent: the thread's slot was the task's for that long, hand-offs
   * included (charged only its thread's own time, a LOAD-like flood of trivial calls from 16 apps, 0.2
   * ms each on its thread and ~2 ms in its slot, held a 1.1 s chart for the whole of a 45 s attack).
   * It counts as short by `threadMs`, the time its sandbox thread says it took, when less: on a busy
   * machine one row of a LOAD in about a hundred took 250 ms from send to result (0.2 ms on its
   * thread), was not short, lost its thread to a loop, and the LOAD waited 4 s a round.
   */
  finished(taskId: number, threadMs?: number, askedBack = false): void {
    const running = this.running.get(taskId);
    if (running === undefined) return;
    this.running.delete(taskId);
    this.runningIn[running.lane] -= 1;
    const now = this.nowMs();
    const ranMs = now - running.startedMs;
    this.usage.charge(running.host, ranMs, now);
    let level = 0;
    for (let line: Line | undefined = running.line; line !== undefined; line = line.parent) {
      for (const key of line.timesKeys) this.taskTimes.charge(key, ranMs);
      // What it was charged at its start becomes what it ran.
      if (line.timesKeys.length > 0) line.vfinish += ranMs - (running.charged[level++] ?? 0);
    }
    this.lastEnd[running.lane] = { ms: now, host: running.host };
    // A task asked back did not end: it ran 100-500 ms and was stopped, so it is no short end.
    if (!askedBack && Math.min(ranMs, threadMs ?? Number.POSITIVE_INFINITY) < LONG_TASK_MS) {
      this.endedShort(running.host, running.task.request.owner, now);
      this.hostEndedShort(running.host, now);
    }
    this.update(running.line, (line) => line.running--, false);
  }

  /**
   * A task starts: its call's line and each above it below the host start at their start tag (`arrive`)
   * and are charged its estimated time (Line.nextFair); finished() replaces the estimate by what it ran.
   */
  private chargeStart(call: Line): number[] {
    const charged: number[] = [];
    for (let line: Line | undefined = call; line?.parent !== undefined && line.timesKeys.length > 0; line = line.parent) {
      const parent: Line = line.parent;
      const start = line.vfinish;
      const estimateMs = Math.max(SHORTEST_COMPARED_TASK_MS, this.taskMsOf(line));
      line.vfinish = start + estimateMs;
      parent.vnow = Math.max(parent.vnow, start);
      charged.push(estimateMs);
    }
    return charged;
  }

  /**
   * A running task to ask back (YIELD_MIN_MS), marked so it is asked once: the longest running of those
   * that ran their time while a host of their lane or an earlier one other than their own waits (a long
   * host's task: a priority host). Never a priority host's task, one asked back before, or one sent
   * again after a sandbox died (it runs alone).
   */
  taskToYield(): QueuedTask | undefined {
    if (this.root.queued === 0) return undefined;
    const now = this.nowMs();
    let chosen: Running | undefined;
    for (const run of this.running.values()) {
      if (run.lane === PRIORITY || run.yielding || run.task.retried || run.task.askedBack) continue;
      if (now - run.startedMs < run.yieldAfterMs || (chosen !== undefined && run.startedMs >= chosen.startedMs)) continue;
      if (this.waitsIn(run.lane === LONG ? PRIORITY : run.lane, run.host)) chosen = run;
    }
    if (chosen === undefined) chosen = this.taskToYieldWithinHost(now);
    if (chosen !== undefined) chosen.yielding = true;
    return chosen?.task;
  }

  /**
   * Within a host: a task whose script was timed short (so the last free thread was not kept from it)
   * that has run four times its estimate, at least YIELD_MIN_MS, while a user of its host whose short
   * task ended lately has a short task waiting. Its text was short for most arguments and looped for
   * one: a LOAD of another app of the engine waited the whole time limit each time (12.7 rows a
   * second). It runs again later judged long (keptWithinHost), and its host is not judged by it.
   */
  private taskToYieldWithinHost(now: number): Running | undefined {
    let chosen: Running | undefined;
    for (const run of this.running.values()) {
      if (run.yielding || run.task.retried || run.task.askedBack || run.scriptMs >= LONG_TASK_MS) continue;
      if (now - run.startedMs < Math.max(YIELD_MIN_MS, YIELD_TASK_TIMES * run.scriptMs)) continue;
      if (chosen !== undefined && run.startedMs >= chosen.startedMs) continue;
      if (this.shortWaiterBeside(run, now)) chosen = run;
    }
    if (chosen !== undefined) chosen.withinHost = true;
    return chosen;
  }

  /** Whether another user of the task's host, whose short task ended lately, has a short task waiting. */
  private shortWaiterBeside(run: Running, nowMs: number): boolean {
    const { appId, userId } = run.task.request.owner;
    for (const ended of this.shortEnds.get(run.host)?.values() ?? []) {
      if (nowMs - ended.ms >= KEEP_WITHIN_HOST_MS || (ended.appId === appId && ended.userId === userId)) continue;
      const [next] = this.nextCallOf(run.host, ended.appId, ended.userId)?.tasks.values() ?? [];
      if (next !== undefined && this.scriptMsOf(next.request) < LONG_TASK_MS) return true;
    }
    return false;
  }

  /**
   * The task asked back answered ABORTED: its time is charged (finished), its host judged long and
   * unproven (HostUsage.yielded), and it waits again, first of its call's tasks. False, and nothing
   * done, when it was not asked back (taskToYield).
   */
  yielded(task: QueuedTask): boolean {
    const running = this.running.get(task.id);
    if (!running?.yielding) return false;
    const ranMs = this.nowMs() - running.startedMs;
    task.askedBack = true;
    this.finished(task.id, undefined, true);
    this.queuedAt.set(task, this.nowMs());
    if (!running.withinHost) this.usage.yielded(running.host, ranMs);
    const call = this.callLine(task.request, true) as Line;
    const others = [...call.tasks.values()];
    call.tasks.clear();
    for (const one of [task, ...others]) call.tasks.set(one.id, one);
    this.queueIn(call);
    return true;
  }

  /** Whether a host other than `except`, of this lane or an earlier one, has tasks waiting. */
  private waitsIn(lane: Lane, except: string): boolean {
    for (const host of this.root.below.values())
      if (host.queued > 0 && host.key !== except && this.usage.laneOf(host.key) <= lane) return true;
    return false;
  }

  drain(): QueuedTask[] {
    const all = this.head.reverse().filter((task) => this.inHead.has(task));
    const waiting: QueuedTask[] = [];
    for (const host of this.root.below.values())
      for (const app of host.below.values())
        for (const user of app.below.values()) for (const call of user.below.values()) waiting.push(...call.tasks.values());
    this.head.length = 0;
    this.inHead.clear();
    for (const task of waiting) this.remove(task);
    return [...all, ...waiting];
  }

  /** The line of a task's call, below its user, its app and its host; made when `create`. */
  private callLine(request: TaskRequest, create: boolean): Line | undefined {
    const { host, appId, userId } = request.owner;
    let line = this.root;
    for (const [depth, key] of [host, appId, userId, request.callId].entries()) {
      let below = line.below.get(key);
      if (below === undefined) {
        if (!create) return undefined;
        below = new Line(key, line);
        below.timesKeys = timesKeysAt(depth, request);
        const memoryKey = virtualKey(below);
        const kept = this.virtualTimes.get(memoryKey);
        this.virtualTimes.delete(memoryKey);
        below.vnow = kept?.vnow ?? 0;
        // A line never seen (or forgotten) enters behind its parent's virtual time (NEW_LINE_MS).
        below.vfinish = kept?.vfinish ?? (depth === 0 ? 0 : line.vnow + NEW_LINE_MS);
        line.below.set(key, below);
      }
      line = below;
    }
    return line;
  }

  /**
   * How long a line's tasks take, as far as the queue knows (TaskTimes): its own; else those of the line
   * below it that would be served next (a new user's next call, by its script); else those of the line
   * above it; else its host's.
   */
  private taskMsOf(line: Line): number {
    for (let at: Line | undefined = line; at !== undefined; at = at.next()) {
      const ms = this.knownTaskMs(at);
      if (ms !== undefined) return ms;
    }
    let above = line.parent;
    for (; above !== undefined && above.timesKeys.length > 0; above = above.parent) {
      const ms = this.knownTaskMs(above);
      if (ms !== undefined) return ms;
    }
    return this.usage.taskMs(above?.key ?? '');
  }

  private knownTaskMs(line: Line): number | undefined {
    for (const key of line.timesKeys) {
      const ms = this.taskTimes.taskMs(key);
      if (ms !== undefined) return ms;
    }
    return undefined;
  }

  /** Applies a change of counts to a call's line and each line above it, each kept in its right turn. */
  private update(call: Line, change: (line: Line) => void, rotate: boolean): void {
    let line = call;
    for (let parent = line.parent; parent !== undefined; line = parent, parent = line.parent) parent.reseat(line, change, rotate);
    change(line);
    // Lines left with nothing queued or running are gone from the tree: their virtual times are kept.
    for (let gone: Line | undefined = call; gone?.parent !== undefined && gone.queued === 0 && gone.running === 0; gone = gone.parent)
      remember(this.virtualTimes, virtualKey(gone), { vfinish: gone.vfinish, vnow: gone.vnow }, MAX_REMEMBERED_LINES);
  }
}
