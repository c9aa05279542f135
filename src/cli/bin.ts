#!/usr/bin/env node
/**
 * `npx qlik-sse-js try …`: the package's command. isolated-vm needs Node started with
 * --no-node-snapshot (and the plugin runs with --no-concurrent-recompilation, see docs/operations.md,
 * "Starting"), and a `bin` file cannot pass flags to Node portably (a shebang takes one argument; npm's
 * Windows shims read only the interpreter), so this file starts Node again with the flags, on the
 * real command, and hands its exit code back.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const COMMANDS: Readonly<Record<string, string>> = { try: path.join(__dirname, 'main.js') };
const NODE_FLAGS = ['--no-node-snapshot', '--no-concurrent-recompilation'];

const [command, ...rest] = process.argv.slice(2);
const script = command === undefined ? undefined : COMMANDS[command];
if (script === undefined) {
  process.stderr.write(`usage: qlik-sse-js try [options] <script> [value ...]   (qlik-sse-js try --help for the options)\n`);
  process.exitCode = 2;
} else {
  const child = spawnSync(process.execPath, [...NODE_FLAGS, script, ...rest], { stdio: 'inherit' });
  if (child.error) throw child.error;
  process.exitCode = child.status ?? 1;
}
