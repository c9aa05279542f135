/**
 * SSE_SANDBOX_USER: the real sandbox processes run as that user with no supplementary groups, no
 * capabilities (also when the front holds CAP_SETUID/CAP_SETGID as ambient capabilities, as the
 * systemd unit gives them), no-new-privileges, no network and no core dumps where those layers work,
 * and a key file of the front's with mode 0600 is out of their reach; a front that may not switch
 * users refuses to start, naming the variable. Needs root (to switch users), like CI.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ConfigError } from '../../src/ops/config';
import { type Confinement, prepareConfinement, spawnConfined } from '../../src/sandboxes/sandbox-confinement';
import { startTestPlugin, type TestPlugin } from '../helpers/plugin';
import { num, numbers } from '../helpers/qlik-client';
import { startMain, until } from './process';

const SANDBOX_USER = 'nobody';
/** A uid with no passwd entry for the front in the systemd shape: not root, not the sandbox user. */
const FRONT_UID = 65_533;
const FRONT_GROUPS = [4, 65_532];

interface ProcessStatus {
  readonly uid: string;
  readonly gid: string;
  readonly groups: string;
  readonly capEff: string;
  readonly capAmb: string;
  readonly noNewPrivs: string;
  readonly coreLimit: string;
  readonly exe: string;
}

function statusOf(pid: number): ProcessStatus {
  const text = readFileSync(`/proc/${pid}/status`, 'latin1');
  const field = (name: string): string => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(text)?.[1]?.trim() ?? '';
  return {
    uid: field('Uid'),
    gid: field('Gid'),
    groups: field('Groups'),
    capEff: field('CapEff'),
    capAmb: field('CapAmb'),
    noNewPrivs: field('NoNewPrivs'),
    coreLimit: /^Max core file size\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'latin1'))?.[1] ?? '',
    exe: readlinkSync(`/proc/${pid}/exe`),
  };
}

/** The processes whose parent is `pid` (from /proc/<n>/stat). */
function childrenOf(pid: number): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((name) => {
      try {
        const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid;
      } catch {
        return false;
      }
    })
    .map(Number);
}

function expectedLayers(confinement: Confinement): Partial<ProcessStatus> {
  const on = (name: keyof Confinement['layers']): boolean => !confinement.layers[name].startsWith('off');
  return {
    ...(on('noNewPrivileges') ? { noNewPrivs: '1' } : {}),
    ...(on('coreDumps') ? { coreLimit: '0' } : {}),
  };
}

/** Reads each file from a process spawned exactly as the sandbox processes are; "ok" or the error code. */
function readAsSandbox(confinement: Confinement, files: readonly string[]): Promise<string[]> {
  const source = `process.stdout.write(JSON.stringify(JSON.parse(process.argv[1]).map((f) => { try { require('node:fs').readFileSync(f); return 'ok'; } catch (e) { return e.code; } })))`;
  const child = spawnConfined(confinement, process.execPath, ['-e', source, JSON.stringify(files)], {
    env: {},
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  return new Promise((resolve, reject) =>
    child.once('close', () => (out ? resolve(JSON.parse(out) as string[]) : reject(new Error('no output')))),
  );
}

const isRoot = process.platform === 'linux' && process.getuid?.() === 0;

/** Why the suite cannot run here, or false. */
function cannotRun(): string | false {
  if (!isRoot) return 'switching users needs root (CI runs as root)';
  try {
    prepareConfinement({ sandboxUser: SANDBOX_USER, sandboxGroup: undefined });
    return false;
  } catch (error) {
    // A checkout inside a private folder (mode 0700): the sandbox user cannot load the code at all.
    if (error instanceof ConfigError && /cannot read/.test(error.message))
      return `${SANDBOX_USER} cannot read this checkout: ${error.message}`;
    throw error;
  }
}

const skip = cannotRun();

describe('sandbox processes under their own user', { skip }, () => {
  let plugin: TestPlugin;
  let dir: string;
  let confinement: Confinement;

  before(async () => {
    confinement = prepareConfinement({ sandboxUser: SANDBOX_USER, sandboxGroup: undefined });
    plugin = await startTestPlugin({ SSE_SANDBOX_USER: SANDBOX_USER, SSE_WORKERS: '2', SSE_SANDBOX_PROCESSES: '2' });
    dir = mkdtempSync(path.join(tmpdir(), 'sse-front-files-'));
    chmodSync(dir, 0o755);
  });

  after(async () => {
    await plugin?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('every sandbox process runs as the sandbox user, no groups, no capabilities, and still runs scripts', async () => {
    const result = await plugin.client.evaluate({ script: 'args[0] * 2', params: [{ dataType: 1 }], bundles: [[[num(21)]]] });
    assert.deepEqual(numbers(result), [42]);
    const pids = plugin.plugin.pool.processes().map((p) => p.pid as number);
    assert.equal(pids.length, 2);
    for (const pid of pids) {
      const status = statusOf(pid);
      assert.deepEqual(
        { uid: status.uid, gid: status.gid, groups: status.groups, capEff: status.capEff, capAmb: status.capAmb, exe: status.exe },
        {
          uid: '65534\t65534\t65534\t65534',
          gid: '65534\t65534\t65534\t65534',
          groups: '',
          capEff: '0000000000000000',
          capAmb: '0000000000000000',
          // The layers exec one another: the pid the front holds (and signals) is the sandbox's node.
          exe: process.execPath,
        },
      );
      // The memory fence reads the process's /proc/<pid>/statm although it belongs to another user.
      const resident = plugin.plugin.pool
        .residentBytes()
        .find((sample) => sample.index === plugin.plugin.pool.processes().find((p) => p.pid === pid)?.index);
      assert.ok((resident?.bytes ?? 0) > 0, `resident bytes of ${pid}`);
      const layers = expectedLayers(confinement);
      for (const [name, value] of Object.entries(layers)) assert.equal(status[name as keyof ProcessStatus], value, name);
    }
  });

  test("a key file of the front's with mode 0600 cannot be read by the sandbox user", async () => {
    const key = path.join(dir, 'sse_server_key.pem');
    const open = path.join(dir, 'root_cert.pem');
    writeFileSync(key, 'private', { mode: 0o600 });
    writeFileSync(open, 'public', { mode: 0o644 });
    // The readable file shows the folder is reachable: only the key's mode keeps the sandbox out.
    assert.deepEqual(await readAsSandbox(confinement, [key, open]), ['EACCES', 'ok']);
  });

  test('a sandbox process that is ended is replaced under the same user', async () => {
    const [first] = plugin.plugin.pool.processes();
    process.kill(first?.pid as number, 'SIGKILL');
    const replaced = await until(
      () => plugin.plugin.pool.processes().find((p) => p.index === first?.index && p.pid !== first?.pid && p.ready),
      (p) => p !== undefined,
    );
    assert.equal(statusOf(replaced?.pid as number).uid, '65534\t65534\t65534\t65534');
  });
});

describe('a front that switches users', { skip }, () => {
  test('as a non-root user with ambient CAP_SETUID/CAP_SETGID (the systemd unit): sandbox processes keep no capability and no group', async () => {
    const main = await startMain(
      { SSE_SANDBOX_USER: SANDBOX_USER, SSE_LOG_FORMAT: 'json' },
      {
        execThrough: [
          '/usr/bin/setpriv',
          `--reuid=${FRONT_UID}`,
          `--regid=${FRONT_UID}`,
          // Supplementary groups of the front's (a certificate group, say): none may reach the sandbox.
          `--groups=${FRONT_GROUPS.join(',')}`,
          '--inh-caps=+setuid,+setgid',
          '--ambient-caps=+setuid,+setgid',
          '--',
        ],
      },
    );
    try {
      const front = statusOf(main.child.pid as number);
      assert.deepEqual([front.capAmb, front.groups], ['00000000000000c0', FRONT_GROUPS.join(' ')]);
      const sandboxes = await until(
        () => childrenOf(main.child.pid as number),
        (pids) => pids.length > 0,
      );
      for (const pid of sandboxes) {
        const status = statusOf(pid);
        assert.deepEqual(
          { uid: status.uid, groups: status.groups, capEff: status.capEff, capAmb: status.capAmb },
          { uid: '65534\t65534\t65534\t65534', groups: '', capEff: '0000000000000000', capAmb: '0000000000000000' },
        );
      }
    } finally {
      await main.kill();
    }
  });

  test('without CAP_SETUID and CAP_SETGID the start is refused, naming the variable', async () => {
    const { spawnMain } = await import('./process');
    const main = spawnMain(
      { SSE_SANDBOX_USER: SANDBOX_USER },
      { execThrough: ['/usr/bin/setpriv', '--bounding-set=-setuid,-setgid', '--inh-caps=-setuid,-setgid', '--'] },
    );
    const exit = await main.exited;
    assert.equal(exit.code, 2);
    assert.match(
      main.stderr(),
      /^configuration error: SSE_SANDBOX_USER=nobody: the plugin may not switch users \(uid 0 without CAP_SETUID and CAP_SETGID\)/m,
    );
  });
});
