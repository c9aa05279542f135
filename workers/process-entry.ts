/**
 * Entry of a sandbox worker process, forked by src/sandbox-process.ts: one task at a time over the
 * IPC channel, the result sent back as plain data. The process exits when its parent goes away, so
 * no sandbox outlives the plugin.
 */
import type { ChildMessage } from '../src/sandbox-process';
import type { EvaluateTask } from '../src/task';
import evaluate, { warmUp } from './evaluate';

function send(message: ChildMessage): void {
  process.send?.(message);
}

process.on('disconnect', () => process.exit(0));
// The parent decides when a worker ends (disconnect, or SIGKILL). Ctrl+C in a terminal, or a
// service manager signalling the whole process group, must not cut the task in flight: the
// parent drains its calls first (test/ops/stop.test.ts).
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => undefined);
process.on('message', (task: EvaluateTask) => send({ kind: 'result', result: evaluate(task) }));
warmUp();
send({ kind: 'ready' });
