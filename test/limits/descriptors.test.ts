/**
 * Descriptors: idle connections cannot take the descriptors a sandbox spawn needs, and a spawn that
 * fails anyway (the table full for another reason) does not end the front: the slot is tried again
 * with backoff, and the front serves once descriptors are free. The real plugin as a process, under
 * a descriptor limit (bash's ulimit -n; util-linux's prlimit to lower it while it runs).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { afterEach, describe, it } from 'node:test';

import * as grpc from '@grpc/grpc-js';

import { softDescriptorLimit } from '../../src/grpc/admission';
import { num, numbers, QlikClient } from '../helpers/qlik-client';
import { type LogLine, type PluginProcess, spawnMain, startMain, until } from '../ops/process';

const hasPrlimit = spawnSync('prlimit', ['--version']).status === 0;
/** Scaled down from 450 connections under `ulimit -n 400`. */
const DESCRIPTOR_LIMIT = 256;
const IDLE_CONNECTIONS = 300;

/** Pids whose parent is `pid` (the front's sandbox processes). */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // The field after "(comm)" are state and ppid; comm may hold spaces, so split after its ")".
      const stat = readFileSync(`/proc/${entry}/stat`, 'latin1');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // The process ended while we read.
    }
  }
  return children;
}

async function doubled(client: QlikClient): Promise<{ code: grpc.status; values: number[] }> {
  const result = await client.evaluate({ script: 'args[0] * 2', params: [{ dataType: 1 }], bundles: [[[num(21)]]], deadlineMs: 5_000 });
  return { code: result.code, values: numbers(result) };
}

/** Connects `count` sockets that send nothing; each records whether the server closed it. */
async function idleConnections(port: number, count: number): Promise<{ sockets: net.Socket[]; closedByServer: () => number }> {
  let closed = 0;
  const sockets = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<net.Socket>((resolve, reject) => {
          const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
          socket.once('error', reject);
          socket.on('close', () => closed++);
          // Reads (and drops) what the server sends, so that its closing the connection is seen.
          socket.resume();
        }),
    ),
  );
  for (const socket of sockets) socket.on('error', () => undefined);
  return { sockets, closedByServer: () => closed };
}

function connectionsLine(plugin: PluginProcess): Promise<LogLine> {
  return plugin.waitForLine((l) => String(l.msg).startsWith('connections:'));
}

describe('descriptors for sandbox spawns', () => {
  let plugin: PluginProcess | undefined;
  let client: QlikClient | undefined;
  afterEach(async () => {
    client?.close();
    await plugin?.kill();
  });

  it('idle connections cannot take the descriptors a sandbox replacement needs', async () => {
    // The handshake deadline is far away: the idle connections stay for the whole test.
    // Every connection comes from this host: let it have them all.
    plugin = await startMain(
      { SSE_WORKERS: '1', SSE_HANDSHAKE_TIMEOUT_MS: '60000', SSE_MAX_CONNECTIONS_PER_HOST: '1000000' },
      { descriptorLimit: DESCRIPTOR_LIMIT },
    );
    const limits = await connectionsLine(plugin);
    assert.equal(limits['descriptorLimit'], DESCRIPTOR_LIMIT);
    const maxConnections = Number(limits['maxConnections']);
    assert.equal(maxConnections, DESCRIPTOR_LIMIT - Number(limits['reservedDescriptors']));

    const idle = await idleConnections(plugin.port, IDLE_CONNECTIONS);
    // Past the limit each newcomer of the host takes the slot of its oldest connection that sent nothing.
    await until(idle.closedByServer, (n) => n >= IDLE_CONNECTIONS - maxConnections, 10_000);
    assert.equal(idle.closedByServer(), IDLE_CONNECTIONS - maxConnections);

    // The sandbox process and the spare: the spare takes over, and a new one is started in its place.
    const [sandbox] = childrenOf(plugin.child.pid as number);
    assert.ok(sandbox !== undefined, 'no sandbox process');
    process.kill(sandbox, 'SIGKILL');
    const replaced = await until(
      () => childrenOf(plugin?.child.pid as number),
      (pids) => pids.length === 2 && !pids.includes(sandbox),
      10_000,
    );
    assert.equal(replaced.length, 2);
    assert.ok(!replaced.includes(sandbox));
    assert.equal(plugin.child.exitCode, null, 'the front ended');

    for (const socket of idle.sockets) socket.destroy();
    client = new QlikClient(`127.0.0.1:${plugin.port}`);
    const served = await until(
      () => doubled(client as QlikClient),
      (r) => r.code === grpc.status.OK,
      15_000,
    );
    assert.deepEqual(served, { code: grpc.status.OK, values: [42] });
    assert.equal(
      plugin.lines.some((l) => String(l.msg).startsWith('a sandbox process could not be started')),
      false,
    );
  });

  it('a sandbox spawn that fails (EMFILE) does not end the front: it is retried with backoff and serves once descriptors are free', {
    skip: !hasPrlimit && 'prlimit (util-linux) is not installed',
  }, async () => {
    plugin = await startMain({ SSE_WORKERS: '1' });
    const front = plugin.child.pid as number;
    client = new QlikClient(`127.0.0.1:${plugin.port}`);
    assert.deepEqual(await doubled(client), { code: grpc.status.OK, values: [42] });

    const soft = softDescriptorLimit(readFileSync(`/proc/${front}/limits`, 'latin1'));
    assert.ok(soft !== undefined);
    // Soft limit 16: the descriptors 0-15 are the front's own, so no new one can be opened.
    execFileSync('prlimit', [`--pid=${front}`, '--nofile=16:']);
    const [sandbox] = childrenOf(front);
    assert.ok(sandbox !== undefined, 'no sandbox process');
    process.kill(sandbox, 'SIGKILL');

    const failed = (line: LogLine): boolean => String(line.msg).startsWith('a sandbox process could not be started');
    const first = await plugin.waitForLine(failed);
    assert.match(String(first['err']), /EMFILE/);
    await until(
      () => plugin?.lines.filter(failed).length ?? 0,
      (n) => n >= 3,
      10_000,
    );
    const delays = plugin.lines.filter(failed).map((l) => Number(l['restartInMs']));
    assert.ok(delays.length >= 3, `failed starts logged: ${delays.length}`);
    assert.ok((delays.at(-1) as number) > (delays[0] as number), `no backoff: ${delays.join(', ')} ms`);
    assert.equal(plugin.child.exitCode, null, 'the front ended');

    execFileSync('prlimit', [`--pid=${front}`, `--nofile=${soft}:`]);
    const served = await until(
      () => doubled(client as QlikClient),
      (r) => r.code === grpc.status.OK,
      15_000,
    );
    assert.deepEqual(served, { code: grpc.status.OK, values: [42] });
    assert.equal(plugin.child.exitCode, null);
  });

  it('an SSE_MAX_CONNECTIONS that does not fit the descriptor limit stops the start, naming both', async () => {
    const started = spawnMain({ SSE_WORKERS: '1', SSE_MAX_CONNECTIONS: '500' }, { descriptorLimit: DESCRIPTOR_LIMIT });
    assert.deepEqual(await started.exited, { code: 2, signal: null });
    assert.match(
      started.stderr(),
      /^configuration error: SSE_MAX_CONNECTIONS=500 does not fit the descriptor limit: this process may open 256 files and keeps \d+ for itself and its sandbox processes, which leaves \d+ for connections; lower SSE_MAX_CONNECTIONS or raise the limit \(ulimit -n/m,
    );
  });
});
