/**
 * Entry point of a sandbox process (started by src/sandboxes/sandbox-process.ts, never by a person). It owns a
 * piscina pool of threads, each with its isolated-vm isolate, and talks to the front over fd 3 in
 * the frames of src/contract/channel.ts: a call's spec once, then its tasks of raw row bytes. Results
 * go back as encoded reply bytes on fd 4, written by the threads themselves. Whatever a script does
 * here costs this process, never the front.
 *
 * The process holds nothing it does not need: its environment is empty, its only descriptors are
 * the two sockets and stderr, and its settings arrive as one argument. It ignores SIGINT and SIGTERM
 * (Ctrl+C reaches the whole process group; the front drains calls first, then ends it) and ends
 * itself at once when the channel closes, so a front that was killed leaves no sandbox behind.
 */
import { closeSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { getPriority, setPriority } from 'node:os';

import {
  type CallSpec,
  CHANNEL_FD,
  Frame,
  FrameReader,
  MAX_OPEN_CALLS,
  parseJson,
  RESULTS_FD,
  type ReceivedFrame,
  readTaskFrame,
  type SandboxSettings,
} from '../src/contract/channel';
import { readyFrame, retireFrame } from '../src/contract/control-frames';
import { PluginError } from '../src/contract/errors';
import { readLibraryBundle } from '../src/contract/libraries';
import { resultFrame } from '../src/contract/result-frame';
import type { TaskResult } from '../src/contract/task';
import { libraryCell } from './library-cell';
import { ThreadPool } from './thread-pool';
import { BUDGET_SPENT_MS, newBudget } from './thread-task';

interface OpenCall {
  readonly call: CallSpec;
  /** Int32[BUDGET_SPENT_MS], shared by the call's tasks on this process's threads. */
  readonly budget: SharedArrayBuffer;
}

/**
 * A child inherits every descriptor its parent opened without close-on-exec (the front's own parent,
 * a shell or a service manager, may have left some). Node and libuv open all of theirs with it, so
 * past the channel any descriptor without it came from outside: closed before any script runs (Linux).
 */
function closeInheritedDescriptors(): void {
  const O_CLOEXEC = 0o2000000;
  let fds: string[];
  try {
    fds = readdirSync('/proc/self/fd');
  } catch {
    return;
  }
  for (const name of fds) {
    const fd = Number(name);
    if (!(fd > RESULTS_FD)) continue;
    try {
      const flags = /flags:\s*([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'))?.[1];
      if (flags !== undefined && (parseInt(flags, 8) & O_CLOEXEC) === 0) closeSync(fd);
    } catch {
      // Gone already (the directory listing's own descriptor).
    }
  }
}

/**
 * Linux keeps a niceness per thread, and a thread starts with its creator's: set on every thread that
 * exists now (the main thread, V8's and libuv's), before the pool makes its threads, it covers them all.
 */
function lowerPriority(nice: number): void {
  if (!(nice > 0)) return;
  let threads: string[] = [];
  try {
    threads = readdirSync('/proc/self/task');
  } catch {
    // Not Linux: the process's own priority is all there is.
  }
  for (const tid of threads.length > 0 ? threads.map(Number) : [0]) {
    try {
      // Never raised: a front started nicer than this keeps its sandboxes at least as nice.
      if (getPriority(tid) < nice) setPriority(tid, nice);
    } catch {
      // A thread that ended meanwhile.
    }
  }
}

function main(): void {
  closeInheritedDescriptors();
  const options = JSON.parse(process.argv[2] ?? '{}') as SandboxSettings;
  lowerPriority(options.nice);
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', () => undefined);
  const channel = new net.Socket({ fd: CHANNEL_FD, readable: true, writable: true });
  // A thread stuck in native code keeps a normal exit waiting for ever: only SIGKILL is sure.
  const end = (): void => void process.kill(process.pid, 'SIGKILL');
  channel.on('end', end).on('close', end).on('error', end);
  const pool = new ThreadPool(options.threads, options, (retirement) => channel.write(retireFrame(retirement)));
  const calls = new OpenCalls(options.maxOpenCalls ?? MAX_OPEN_CALLS);
  const reader = new FrameReader((frame) => onFrame(frame, calls, pool, channel));
  pool.ready().then(
    () => {
      channel.on('data', (chunk: Buffer) => reader.push(chunk));
      channel.write(readyFrame(options.threads));
    },
    (error: unknown) => {
      process.stderr.write(`sandbox process could not start its threads: ${error instanceof Error ? error.message : String(error)}\n`);
      end();
    },
  );
}

/**
 * The calls the front has opened here and not closed. The front never opens more than maxOpenCalls
 * (src/sandboxes/pool.ts); one more is the front's protocol error, and this process ends rather than
 * forget a call whose tasks may still come (the front then sends them again to a new process).
 */
class OpenCalls extends Map<number, OpenCall> {
  constructor(private readonly maxOpenCalls: number) {
    super();
  }

  open(callId: number, call: OpenCall): void {
    if (!this.has(callId) && this.size >= this.maxOpenCalls) {
      process.stderr.write(`sandbox process: protocol error: the front opened more than ${this.maxOpenCalls} calls at once\n`);
      process.kill(process.pid, 'SIGKILL');
      return;
    }
    this.set(callId, call);
  }
}

/** The current library set for the threads (workers/library-cell.ts); null until the front's first LIBRARIES frame. */
const libraries: { cell: SharedArrayBuffer | null; version: number } = { cell: null, version: 0 };

function onFrame(frame: ReceivedFrame, calls: OpenCalls, pool: ThreadPool, channel: net.Socket): void {
  switch (frame.kind) {
    case Frame.LIBRARIES:
      // Checked here, once: a malformed set ends this process (the frame reader's caller) before any task uses it.
      readLibraryBundle(frame.payload);
      libraries.version++;
      libraries.cell = libraryCell(frame.payload, libraries.version);
      return;
    case Frame.OPEN_CALL:
      // The front is trusted here (it started this process); its OPEN_CALL is its own CallSpec.
      calls.open(frame.id, { call: parseJson(frame.payload) as CallSpec, budget: newBudget() });
      return;
    case Frame.CLOSE_CALL:
      calls.delete(frame.id);
      return;
    case Frame.TASK:
      runTask(frame.id, frame.payload, frame.owned, calls, pool).then(
        (result) => {
          if (result) sendResult(channel, frame.id, result);
        },
        // runTask turns every failure into a result; anything else is a bug of this process: end it.
        (error: unknown) => {
          process.stderr.write(`sandbox process failed: ${error instanceof Error ? error.message : String(error)}\n`);
          process.kill(process.pid, 'SIGKILL');
        },
      );
      return;
    default:
      throw new Error(`unknown channel frame kind ${frame.kind}`);
  }
}

async function runTask(
  taskId: number,
  payload: Uint8Array,
  owned: boolean,
  calls: OpenCalls,
  pool: ThreadPool,
): Promise<TaskResult | null> {
  const task = readTaskFrame(payload);
  const open = calls.get(task.callId);
  if (!open)
    return {
      ok: false,
      error: new PluginError('INTERNAL', 'internal error: a task arrived for a call the sandbox does not know').toData(),
      scriptMs: 0,
      isolateRebuilt: false,
      timedOut: false,
    };
  // Tasks of one call may also run in other sandbox processes: the front's count of its script time wins when larger.
  const spent = new Int32Array(open.budget);
  if (task.spentMs > Atomics.load(spent, BUDGET_SPENT_MS)) Atomics.store(spent, BUDGET_SPENT_MS, task.spentMs);
  // Moved to the thread: as it is when the frame owns its buffer, else a copy (a view of the
  // channel's chunk would be cloned whole, and Buffer#slice would share it).
  const bytes = owned ? task.bytes : new Uint8Array(task.bytes);
  const { call } = open;
  return pool.run(
    {
      taskId,
      callId: task.callId,
      contextKey: call.contextKey,
      spec: call.spec,
      bundles: [bytes],
      rows: task.rows,
      firstRow: task.firstRow,
      callTimeoutMs: call.callTimeoutMs,
      budget: open.budget,
      maxReplyBytes: call.maxReplyBytes,
      libraries: libraries.cell,
    },
    [bytes.buffer as ArrayBuffer],
  );
}

/** A result its thread could not write (workers/result-writer.ts), or that no thread made: one writev on the channel. */
function sendResult(channel: net.Socket, taskId: number, result: TaskResult): void {
  channel.cork();
  for (const piece of resultFrame(taskId, result)) channel.write(piece);
  channel.uncork();
}

main();
