/**
 * A server under test in its own process, so its memory is its own: started with the same node
 * flags as `npm start`, ready once it answers GetCapabilities, measured through /proc/<pid>/status.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';

import { QlikClient } from '../test/helpers/qlik-client';
import { processTree, statusBytes } from './proc';

export const NODE_FLAGS = ['--no-node-snapshot', '--no-concurrent-recompilation'];

export interface ChildOptions {
  readonly name: string;
  readonly entry: string;
  readonly env: Record<string, string>;
  /** Port variable the entry reads (SSE_PORT for the plugin). */
  readonly portVariable: string;
  readonly extraNodeFlags?: readonly string[];
}

export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export class ChildServer {
  private output = '';
  private exited: Promise<number | null>;

  private constructor(
    readonly name: string,
    readonly port: number,
    private readonly child: ChildProcess,
  ) {
    const keep = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString()).slice(-8_000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  static async start(options: ChildOptions): Promise<ChildServer> {
    const port = await freePort();
    const child = spawn(process.execPath, [...NODE_FLAGS, ...(options.extraNodeFlags ?? []), options.entry], {
      env: { ...process.env, ...options.env, [options.portVariable]: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const server = new ChildServer(options.name, port, child);
    await server.waitReady(30_000);
    return server;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** Last lines the process printed (for failures). */
  get recentOutput(): string {
    return this.output;
  }

  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const client = new QlikClient(this.address);
    try {
      for (;;) {
        if (this.child.exitCode !== null) throw new Error(`${this.name} exited with ${this.child.exitCode}: ${this.output}`);
        try {
          await client.getCapabilities();
          return;
        } catch (error) {
          if (Date.now() > deadline) throw new Error(`${this.name} not ready after ${timeoutMs} ms: ${String(error)} ${this.output}`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    } finally {
      client.close();
    }
  }

  /** The server's process and its children (sandbox processes, if it has any). */
  processes(): number[] {
    return processTree(this.pid);
  }

  /** RSS of the server's processes together. */
  rssBytes(): number {
    return this.processes().reduce((sum, pid) => sum + statusBytes(pid, 'VmRSS'), 0);
  }

  /**
   * Peak RSS since start or the last resetPeak(): the sum of each process's own peak, so an upper
   * bound when the server has several processes (their peaks need not coincide).
   */
  peakRssBytes(): number {
    return this.processes().reduce((sum, pid) => sum + statusBytes(pid, 'VmHWM'), 0);
  }

  /** Sets each process's peak-RSS mark back to its current RSS (Linux clear_refs 5). */
  resetPeak(): void {
    for (const pid of this.processes()) {
      try {
        writeFileSync(`/proc/${pid}/clear_refs`, '5');
      } catch {
        // A process that just exited has no peak left to reset.
      }
    }
  }

  /** SIGTERM and wait for exit (the plugin drains and writes any --cpu-prof profile on exit). */
  async stop(timeoutMs = 15_000): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}
