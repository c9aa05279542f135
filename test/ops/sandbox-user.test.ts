/**
 * SSE_SANDBOX_USER: the real sandbox processes of the real plugin process run as that user with no
 * supplementary groups, no capabilities (also when the front holds CAP_SETUID/CAP_SETGID as ambient
 * capabilities, as the systemd unit gives them), and the layers the start-up log says are in force; a
 * key file of the front's with mode 0600 is out of their reach; a front that may not switch users
 * refuses to start, naming the variable. Needs root (to switch users), as CI has.
 *
 * The sandbox user must read the code. A checkout inside a private folder (mode 0700: a fresh temp
 * folder, a home folder) is out of its reach, so then the plugin is started in a mount namespace of
 * its own where the checkout is bind-mounted at a path everyone can reach: the same files, unchanged.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { num, numbers, QlikClient } from '../helpers/qlik-client';
import { MAIN_JS, metricsText, type PluginProcess, sampleValue, spawnMain, startMain, until } from './process';

const SANDBOX_USER = 'nobody';
const SANDBOX_UID = 65_534;
/** The front in the systemd shape: not root, not the sandbox user, with supplementary groups of its own. */
const FRONT_UID = 65_533;
const FRONT_GROUPS = [4, 65_532];
const CHECKOUT = path.join(__dirname, '..', '..', '..');
const NO_CAPABILITIES = '0000000000000000';

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

interface CheckoutView {
  readonly mainJs: string;
  /** Commands that make the view and exec the rest (empty when the checkout is reachable as it is). */
  readonly through: readonly string[];
  remove(): void;
}

/** The checkout where the sandbox user can read it. */
function reachableCheckout(): CheckoutView {
  const readable = spawnSync(process.execPath, ['-e', 'require("node:fs").readFileSync(process.argv[1])', MAIN_JS], {
    uid: SANDBOX_UID,
    gid: SANDBOX_UID,
  });
  if (readable.status === 0) return { mainJs: MAIN_JS, through: [], remove: () => undefined };
  const view = mkdtempSync(path.join(tmpdir(), 'sse-checkout-'));
  chmodSync(view, 0o755);
  return {
    mainJs: path.join(view, path.relative(CHECKOUT, MAIN_JS)),
    through: [
      '/usr/bin/unshare',
      '--mount',
      '--propagation',
      'private',
      '--',
      '/bin/sh',
      '-c',
      'mount --bind "$0" "$1" && shift && exec "$@"',
      CHECKOUT,
      view,
    ],
    remove: () => rmSync(view, { recursive: true, force: true }),
  };
}

/** Reads each file as a process with the credentials a sandbox process has (uid and gid from /proc); "ok" or the error code. */
function readAs(status: ProcessStatus, files: readonly string[]): Promise<string[]> {
  const [uid, gid] = [Number(status.uid.split('\t')[0]), Number(status.gid.split('\t')[0])];
  const source = `process.stdout.write(JSON.stringify(JSON.parse(process.argv[1]).map((f) => { try { require('node:fs').readFileSync(f); return 'ok'; } catch (e) { return e.code; } })))`;
  const child = spawn(process.execPath, ['-e', source, JSON.stringify(files)], { uid, gid, env: {}, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  return new Promise((resolve, reject) =>
    child.once('close', () => (out ? resolve(JSON.parse(out) as string[]) : reject(new Error('no output')))),
  );
}

const skip = process.platform !== 'linux' || process.getuid?.() !== 0 ? 'switching users needs root on Linux (CI runs as root)' : false;

describe('sandbox processes under their own user', { skip }, () => {
  let view: CheckoutView;
  let main: PluginProcess;
  let dir: string;

  before(async () => {
    view = reachableCheckout();
    main = await startMain(
      { SSE_SANDBOX_USER: SANDBOX_USER, SSE_WORKERS: '2', SSE_SANDBOX_PROCESSES: '2', SSE_METRICS_PORT: '0', SSE_LOG_FORMAT: 'json' },
      { execThrough: view.through, mainJs: view.mainJs },
    );
    dir = mkdtempSync(path.join(tmpdir(), 'sse-front-files-'));
    chmodSync(dir, 0o755);
  });

  after(async () => {
    await main?.kill();
    view?.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  const sandboxes = (): Promise<number[]> =>
    until(
      () => childrenOf(main.child.pid as number),
      (pids) => pids.length === 2,
    );

  test('every sandbox process runs as the sandbox user, no groups, no capabilities, the layers in force, and runs scripts', async () => {
    const client = new QlikClient(`127.0.0.1:${main.port}`);
    try {
      const result = await client.evaluate({
        script: 'args[0] * 2',
        params: [{ dataType: 1 }],
        bundles: [[[num(21)]]],
        deadlineMs: 30_000,
      });
      assert.deepEqual(numbers(result), [42]);
    } finally {
      client.close();
    }
    const layers = main.lines.find((line) => line['sandboxConfinement'] !== undefined)?.['sandboxConfinement'] as Record<string, string>;
    assert.match(layers['user'] ?? '', /^nobody \(uid 65534, gid 65534, no supplementary groups\)$/);
    for (const pid of await sandboxes()) {
      const status = statusOf(pid);
      assert.deepEqual(
        { uid: status.uid, gid: status.gid, groups: status.groups, capEff: status.capEff, capAmb: status.capAmb, exe: status.exe },
        {
          uid: '65534\t65534\t65534\t65534',
          gid: '65534\t65534\t65534\t65534',
          groups: '',
          capEff: NO_CAPABILITIES,
          capAmb: NO_CAPABILITIES,
          // The layers exec one another: the pid the front holds (and signals) is the sandbox's node.
          exe: process.execPath,
        },
      );
      if (!layers['noNewPrivileges']?.startsWith('off')) assert.equal(status.noNewPrivs, '1');
      if (!layers['coreDumps']?.startsWith('off')) assert.equal(status.coreLimit, '0');
    }
    // The memory fence reads /proc/<pid>/statm of processes that belong to another user.
    const text = await metricsText(main.metricsPort as number);
    for (const sandbox of ['0', '1']) assert.ok(sampleValue(text, 'sse_sandbox_resident_bytes', { sandbox }) > 0, `sandbox ${sandbox}`);
  });

  test("a key file of the front's with mode 0600 cannot be read with a sandbox process's credentials", async () => {
    const key = path.join(dir, 'sse_server_key.pem');
    const open = path.join(dir, 'root_cert.pem');
    writeFileSync(key, 'private', { mode: 0o600 });
    writeFileSync(open, 'public', { mode: 0o644 });
    const [pid] = await sandboxes();
    // The readable file shows the folder is reachable: only the key's mode keeps the sandbox out.
    assert.deepEqual(await readAs(statusOf(pid as number), [key, open]), ['EACCES', 'ok']);
  });

  test('a sandbox process that is ended is replaced under the same user', async () => {
    const [first] = await sandboxes();
    process.kill(first as number, 'SIGKILL');
    const replaced = await until(
      () => childrenOf(main.child.pid as number).filter((pid) => pid !== first),
      (pids) => pids.length === 2,
    );
    for (const pid of replaced) assert.equal(statusOf(pid).uid, '65534\t65534\t65534\t65534');
  });
});

describe('a front that switches users', { skip }, () => {
  test('as a non-root user with ambient CAP_SETUID/CAP_SETGID (the systemd unit): sandbox processes keep no capability and no group', async () => {
    const view = reachableCheckout();
    const main = await startMain(
      { SSE_SANDBOX_USER: SANDBOX_USER, SSE_LOG_FORMAT: 'json' },
      {
        mainJs: view.mainJs,
        execThrough: [
          ...view.through,
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
          { uid: '65534\t65534\t65534\t65534', groups: '', capEff: NO_CAPABILITIES, capAmb: NO_CAPABILITIES },
        );
      }
    } finally {
      await main.kill();
      view.remove();
    }
  });

  test('without CAP_SETUID and CAP_SETGID the start is refused, naming the variable', async () => {
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
