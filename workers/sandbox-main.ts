/**
 * Entry point of a sandbox process (started by src/sandboxes/sandbox-process.ts, never by a person). It owns a
 * piscina pool of threads, each with its isolated-vm isolate, and an isolate of its own on the main
 * thread for small tasks (workers/fast-path.ts), and talks to the front over fd 3 in the frames of
 * src/contract/channel.ts: a call's spec once, then its tasks of raw row bytes (workers/task-dispatch.ts
 * says where each runs). Results go back as encoded reply bytes on fd 4, written by whichever thread
 * ran the task. Whatever a script does here costs this process, never the front.
 *
 * The process holds nothing it does not need: its environment is empty, its only descriptors are
 * the two sockets and stderr, and its settings arrive as one argument. It ignores SIGINT and SIGTERM
 * (Ctrl+C reaches the whole process group; the front drains calls first, then ends it) and ends
 * itself at once when the channel closes, so a front that was killed leaves no sandbox behind.
 */
import { closeSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { getPriority, setPriority } from 'node:os';

import { CHANNEL_FD, DEFAULT_FAST_PATH_MS, FrameReader, RESULTS_FD, type SandboxSettings } from '../src/contract/channel';
import { readyFrame, retireFrame } from '../src/contract/control-frames';
import { FastPath } from './fast-path';
import { TaskDispatch } from './task-dispatch';
import { ThreadPool } from './thread-pool';

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
  const fastPath = new FastPath(options, options.fastPathMs ?? DEFAULT_FAST_PATH_MS, pool.resultLock);
  const dispatch = new TaskDispatch(channel, pool, fastPath, options.maxOpenCalls);
  const reader = new FrameReader((frame) => dispatch.onFrame(frame));
  pool.ready().then(
    () => {
      fastPath.warmUp();
      channel.on('data', (chunk: Buffer) => {
        reader.push(chunk);
        dispatch.flush();
      });
      channel.write(readyFrame(options.threads));
    },
    (error: unknown) => {
      process.stderr.write(`sandbox process could not start its threads: ${error instanceof Error ? error.message : String(error)}\n`);
      end();
    },
  );
}

main();
