/**
 * `npm run try` as a user runs it: the built command (dist/src/cli/main.js) in a child process with
 * both of the plugin's node flags and only PATH in its environment (node's own folder first, so that
 * `npm` and the `node` it starts are this one), its output collected.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';

export const TRY_JS = path.join(__dirname, '..', '..', 'src', 'cli', 'main.js');
export const NODE_FLAGS = ['--no-node-snapshot', '--no-concurrent-recompilation'];

export interface Ran {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function runCommand(command: string, args: readonly string[], cwd?: string): Promise<Ran> {
  const child = spawn(command, args, {
    cwd,
    env: { PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env['PATH'] ?? '/usr/bin:/bin'}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

/** The try command with these arguments, in cwd (default: this process's). */
export function runTry(args: readonly string[], cwd?: string): Promise<Ran> {
  return runCommand(process.execPath, [...NODE_FLAGS, TRY_JS, ...args], cwd);
}
