/**
 * Runs the real entry point (`node <FRONT_NODE_FLAGS> dist/src/main.js`, as `npm start` does) as a child process, on loopback, and reads its JSON log lines. Also small
 * HTTP and Prometheus-text readers for the /metrics endpoint.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';

import { FRONT_NODE_FLAGS } from '../../src/ops/node-flags';

export const MAIN_JS = path.join(__dirname, '..', '..', 'src', 'main.js');
const BECOME_USER_JS = path.join(__dirname, 'become-user.js');
/** As `npm start` runs it. */
export const NODE_FLAGS = FRONT_NODE_FLAGS;

export type LogLine = Record<string, unknown> & { msg?: string; level?: number };

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface PluginProcess {
  readonly child: ChildProcess;
  readonly lines: LogLine[];
  readonly port: number;
  readonly metricsPort: number | undefined;
  stderr(): string;
  readonly exited: Promise<Exit>;
  /** Resolves with the first log line (already seen or coming) that matches. */
  waitForLine(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** SIGKILL if still running (test clean-up). */
  kill(): Promise<void>;
}

/** Only what the plugin needs: the test runner's own environment (NODE_TEST_CONTEXT…) stays out. */
function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: process.env['PATH'] ?? '/usr/bin:/bin', SSE_PORT: '0', SSE_HOST: '127.0.0.1', SSE_WORKERS: '1', ...env };
}

export interface SpawnOptions {
  /**
   * Start as root, load every module, then become this user just before the certificates are read
   * (see become-user.ts for why the process is not simply spawned as that user).
   */
  readonly becomeUser?: { readonly uid: number; readonly gid: number };
  /** Its own process group, as in a terminal or under a service manager (signals to -pid reach all). */
  readonly ownGroup?: boolean;
  /** Started under `ulimit -n` of this many descriptors (soft and hard), through bash's exec: the pid stays the plugin's. */
  readonly descriptorLimit?: number;
  /** A command that sets something up and execs the plugin (e.g. setpriv …): the pid stays the plugin's. */
  readonly execThrough?: readonly string[];
  /** main.js at another path (the checkout seen through a bind mount); default MAIN_JS. */
  readonly mainJs?: string;
  /** Node or V8 flags after NODE_FLAGS (a V8 trace whose lines come out on stdout as notJson lines). */
  readonly nodeFlags?: readonly string[];
}

export function spawnMain(env: Record<string, string>, options: SpawnOptions = {}): Omit<PluginProcess, 'port' | 'metricsPort'> {
  const become = options.becomeUser;
  const preload = become ? ['--require', BECOME_USER_JS] : [];
  const becomeEnv = become ? { TEST_BECOME_UID: String(become.uid), TEST_BECOME_GID: String(become.gid) } : {};
  const command = [
    ...(options.execThrough ?? []),
    process.execPath,
    ...NODE_FLAGS,
    ...(options.nodeFlags ?? []),
    ...preload,
    options.mainJs ?? MAIN_JS,
  ];
  const limited =
    options.descriptorLimit === undefined
      ? command
      : ['/bin/bash', '-c', `ulimit -n ${options.descriptorLimit} && exec "$@"`, 'bash', ...command];
  const child = spawn(limited[0] as string, limited.slice(1), {
    env: childEnv({ ...env, ...becomeEnv }),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: options.ownGroup === true,
  });
  const lines: LogLine[] = [];
  const waiters = new Set<() => void>();
  let stderr = '';
  let pending = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    const parts = pending.split('\n');
    pending = parts.pop() ?? '';
    for (const part of parts.filter((p) => p.trim() !== '')) {
      lines.push(parseLine(part));
      for (const wake of waiters) wake();
    }
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  exited.then(
    () => {
      for (const wake of [...waiters]) wake();
    },
    () => undefined,
  );
  let hasExited = false;
  void exited.then(() => (hasExited = true));

  const waitForLine = (match: (line: LogLine) => boolean, timeoutMs = 15_000): Promise<LogLine> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => done(new Error(`no matching log line within ${timeoutMs} ms; stdout: ${JSON.stringify(lines)}; stderr: ${stderr}`)),
        timeoutMs,
      );
      const check = (): void => {
        const found = lines.find(match);
        if (found) done(null, found);
        else if (hasExited) done(new Error(`the plugin exited before the log line; stdout: ${JSON.stringify(lines)}; stderr: ${stderr}`));
      };
      function done(error: Error | null, line?: LogLine): void {
        clearTimeout(timer);
        waiters.delete(check);
        if (error) reject(error);
        else resolve(line as LogLine);
      }
      waiters.add(check);
      check();
    });

  return {
    child,
    lines,
    stderr: () => stderr,
    exited,
    waitForLine,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

function parseLine(text: string): LogLine {
  try {
    return JSON.parse(text) as LogLine;
  } catch {
    return { msg: text, notJson: true };
  }
}

/** Starts main.js and waits until it has logged where it listens and how Qlik reaches it. */
export async function startMain(env: Record<string, string>, options: SpawnOptions = {}): Promise<PluginProcess> {
  const started = spawnMain(env, options);
  try {
    const listening = await started.waitForLine((line) => typeof line.msg === 'string' && line.msg.startsWith('listening on'));
    // The QMC line comes after the TLS lines: by then the start-up diagnostics are all out.
    await started.waitForLine((line) => line['qmc'] !== undefined);
    const metricsUrl = typeof listening['metrics'] === 'string' ? new URL(listening['metrics']) : undefined;
    return { ...started, port: Number(listening['port']), metricsPort: metricsUrl ? Number(metricsUrl.port) : undefined };
  } catch (error) {
    await started.kill();
    throw error;
  }
}

export function httpGet(url: string): Promise<{ status: number; contentType: string; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type']), body }));
      })
      .on('error', reject);
  });
}

/** The value of one sample in Prometheus text, matching the name and (a subset of) its labels; 0 if absent. */
export function sampleValue(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = new Map([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([key, value]) => found.get(key) === value)) return Number(match[3]);
  }
  return 0;
}

export async function metricsText(port: number): Promise<string> {
  const response = await httpGet(`http://127.0.0.1:${port}/metrics`);
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
  return response.body;
}

export const SLOW_SCRIPT_MS = 1_500;
/** Keeps a sandbox busy for SLOW_SCRIPT_MS, then answers its parameter. */
export const SLOW_SCRIPT = `const t = Date.now(); while (Date.now() - t < ${SLOW_SCRIPT_MS}) {} return args[0];`;

/** Reads until `done` says yes (or the time is up: a hang detector, not a speed test) and returns the last value read. */
export async function until<T>(read: () => Promise<T> | T, done: (value: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
