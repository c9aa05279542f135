/**
 * What a script that escaped V8 would find around it: the sandbox process's user, privileges and
 * kernel-level layers, decided once at start and applied to every sandbox process spawn.
 *
 * - A user of its own (SSE_SANDBOX_USER / SSE_SANDBOX_GROUP), with no supplementary groups: it cannot
 *   read the front's TLS key, functions folder or anything else only the front's user may read. Node's
 *   spawn switches uid and gid (libuv calls setgroups(0) first). The front must hold CAP_SETUID and
 *   CAP_SETGID for that (root has them); without them the start is refused, naming the variable.
 * - Layers, each kept only when a probe at start shows it in force (the start-up log says which):
 *   no-new-privileges and no inherited or ambient capabilities (setpriv: a front that switches users
 *   holds CAP_SETUID as an ambient capability, which would otherwise pass to the sandbox process and
 *   let it become any user, root included), a network namespace of its own with no interface but a
 *   loopback that is down (unshare --user --net: unprivileged where the kernel allows user
 *   namespaces), and no core dumps (prlimit --core=0: a dump would write call data to disk).
 *
 * Each layer is a util-linux command that sets its property and then execs the next: the process the
 * front spawned becomes the sandbox's node in place, so its pid, its pipes, the signals the front sends
 * it and its exit status are the sandbox's own, exactly as without the layers.
 */
import { type ChildProcess, type SpawnOptions, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { isolatedVmPackagesFor, NODE_MAJOR } from '../contract/isolated-vm-package';
import { type Config, ConfigError } from '../ops/config';
import type { Logger } from '../ops/log';

/** Capability bits (linux/capability.h). */
const CAP_SETGID = 6;
const CAP_SETUID = 7;
const TOOL_DIRS = ['/usr/bin', '/bin', '/usr/sbin', '/sbin'];
const PROBE_TIMEOUT_MS = 10_000;
const WORKERS_DIR = path.join(__dirname, '..', '..', 'workers');
/** What a sandbox process loads first: the sandbox user must be able to read them (and the folders above). */
const SANDBOX_ENTRY = path.join(WORKERS_DIR, 'sandbox-main.js');
const SANDBOX_MODULES = ['piscina', installedIsolatedVm()];

/** The isolated-vm package a sandbox process will load here (resolved, never loaded: the front runs no isolate). */
function installedIsolatedVm(): string {
  const candidates = isolatedVmPackagesFor(NODE_MAJOR);
  for (const name of candidates) {
    try {
      require.resolve(name, { paths: [WORKERS_DIR] });
      return name;
    } catch {
      // Not installed for this Node: the next one.
    }
  }
  return candidates[0] as string;
}

export interface SandboxIdentity {
  readonly user: string;
  readonly uid: number;
  readonly gid: number;
}

export type LayerName = 'user' | 'noNewPrivileges' | 'network' | 'coreDumps';

export interface Confinement {
  readonly identity: SandboxIdentity | undefined;
  /** Commands that each set one property and exec the rest: [setpriv …, --, unshare …, --, …]. */
  readonly prefix: readonly string[];
  /** Each layer: what holds, or why it does not. */
  readonly layers: Readonly<Record<LayerName, string>>;
}

export const NO_CONFINEMENT: Confinement = {
  identity: undefined,
  prefix: [],
  layers: { user: 'off', noNewPrivileges: 'off', network: 'off', coreDumps: 'off' },
};

/** Spawns `command` as a sandbox process: under the identity, through the layers, same pid. */
export function spawnConfined(confinement: Confinement, command: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  const identity = confinement.identity === undefined ? {} : { uid: confinement.identity.uid, gid: confinement.identity.gid };
  const [first, ...rest] = [...confinement.prefix, command, ...args];
  return spawn(first as string, rest, { ...options, ...identity });
}

/** Effective capability set of this process, from /proc (Linux); undefined elsewhere. */
function effectiveCapabilities(): bigint | undefined {
  try {
    const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'latin1'))?.[1];
    return hex === undefined ? undefined : BigInt(`0x${hex}`);
  } catch {
    return undefined;
  }
}

/** True when this process may set other uids and gids: CAP_SETUID and CAP_SETGID are effective. */
export function maySwitchUsers(capEff: bigint | undefined): boolean {
  if (capEff === undefined) return false;
  return ((capEff >> BigInt(CAP_SETUID)) & 1n) === 1n && ((capEff >> BigInt(CAP_SETGID)) & 1n) === 1n;
}

/** One passwd or group entry by name or number (NSS: files, LDAP, systemd users alike), or undefined. */
function getent(database: 'passwd' | 'group', key: string): string[] | undefined {
  const getentPath = findTool('getent');
  if (getentPath === undefined) return undefined;
  const result = spawnSync(getentPath, [database, key], { encoding: 'utf8', timeout: PROBE_TIMEOUT_MS });
  if (result.status !== 0) return undefined;
  return result.stdout.split('\n')[0]?.split(':');
}

/** The sandbox user and group as numbers; throws ConfigError naming the variable. */
export function resolveIdentity(user: string, group: string | undefined): SandboxIdentity {
  const entry = getent('passwd', user);
  const uid = entry === undefined ? (/^\d+$/.test(user) ? Number(user) : undefined) : Number(entry[2]);
  if (uid === undefined) throw new ConfigError(`SSE_SANDBOX_USER=${user}: no such user (getent passwd ${user} finds nothing)`);
  let gid: number | undefined;
  if (group === undefined) {
    if (entry === undefined)
      throw new ConfigError(`SSE_SANDBOX_USER=${user} has no passwd entry to take a group from: set SSE_SANDBOX_GROUP too`);
    gid = Number(entry[3]);
  } else {
    const groupEntry = getent('group', group);
    gid = groupEntry === undefined ? (/^\d+$/.test(group) ? Number(group) : undefined) : Number(groupEntry[2]);
    if (gid === undefined) throw new ConfigError(`SSE_SANDBOX_GROUP=${group}: no such group (getent group ${group} finds nothing)`);
  }
  if (uid === 0 || gid === 0)
    throw new ConfigError(`SSE_SANDBOX_USER=${user}: the sandbox processes must not run as root (uid ${uid}, gid ${gid})`);
  if (uid === process.getuid?.())
    throw new ConfigError(
      `SSE_SANDBOX_USER=${user} is the user the plugin runs as: name a separate user that cannot read the plugin's key and files`,
    );
  if (isFrontGroup(gid, [process.getgid?.() ?? -1, ...(process.getgroups?.() ?? [])]))
    throw new ConfigError(
      `SSE_SANDBOX_GROUP=${group ?? gid}: gid ${gid} is a group of the plugin's user, so the sandbox processes could read what the plugin reads by group (a key file at 0640); name a group of their own`,
    );
  return { user: entry?.[0] ?? user, uid, gid };
}

/** True when the sandbox's group is one the front holds (primary or supplementary). */
export function isFrontGroup(gid: number, frontGids: readonly number[]): boolean {
  return frontGids.includes(gid);
}

function findTool(name: string): string | undefined {
  return TOOL_DIRS.map((dir) => path.join(dir, name)).find((file) => existsSync(file));
}

/** Read by the probe: what the spawned process really has. */
interface ProbeReport {
  readonly uid: number;
  readonly groups: string;
  readonly noNewPrivs: string;
  readonly capEff: string;
  readonly capAmb: string;
  readonly coreLimit: string;
  readonly interfaces: string[];
  /** The first file of the sandbox's code it could not read, with the error code; undefined: all read. */
  readonly unreadable: string | undefined;
}

/**
 * Runs in the probe process, under the identity and layers. The modules are resolved and read, not
 * loaded: the sandbox's own start would load isolated-vm, which needs the sandbox's flags.
 */
const PROBE_SOURCE = `
const fs = require('node:fs');
const status = fs.readFileSync('/proc/self/status', 'latin1');
const field = (name) => (new RegExp('^' + name + ':[ \\t]*(.*)$', 'm').exec(status) || [])[1] || '';
const core = (/^Max core file size\\s+(\\S+)/m.exec(fs.readFileSync('/proc/self/limits', 'latin1')) || [])[1] || '';
const [entry, workers, modules] = JSON.parse(process.argv[1]);
// From procfs, not a netlink socket (which RestrictAddressFamilies may refuse): the namespace's devices.
function interfaces() {
  return fs.readFileSync('/proc/self/net/dev', 'latin1').split('\\n').slice(2).map((l) => l.trim().split(':')[0]).filter((n) => n && n !== 'lo');
}
let unreadable;
try {
  fs.readFileSync(entry);
  for (const name of modules) fs.readFileSync(require.resolve(name, { paths: [workers] }));
} catch (error) {
  unreadable = (error.path || error.message) + ' (' + (error.code || 'error') + ')';
}
process.stdout.write(JSON.stringify({
  uid: process.getuid(), groups: field('Groups').trim(), noNewPrivs: field('NoNewPrivs').trim(),
  capEff: field('CapEff').trim(), capAmb: field('CapAmb').trim(), coreLimit: core,
  interfaces: interfaces(),
  unreadable,
}));
`;

function probe(identity: SandboxIdentity | undefined, prefix: readonly string[]): ProbeReport | string {
  const [first, ...rest] = [...prefix, process.execPath, '-e', PROBE_SOURCE, JSON.stringify([SANDBOX_ENTRY, WORKERS_DIR, SANDBOX_MODULES])];
  const result = spawnSync(first as string, rest, {
    encoding: 'utf8',
    env: {},
    timeout: PROBE_TIMEOUT_MS,
    ...(identity === undefined ? {} : { uid: identity.uid, gid: identity.gid }),
  });
  if (result.error) return result.error.message;
  if (result.status !== 0) return (result.stderr || `exit code ${result.status}`).trim().split('\n').slice(-1)[0] ?? '';
  try {
    return JSON.parse(result.stdout) as ProbeReport;
  } catch {
    return `unreadable probe output ${JSON.stringify(result.stdout.slice(0, 200))}`;
  }
}

interface Layer {
  readonly name: Exclude<LayerName, 'user'>;
  readonly command: readonly string[];
  /** What the probe must see for the layer to count as in force. */
  holds(report: ProbeReport): boolean;
  readonly inForce: string;
  /** What it is called when the service already has it without the command. */
  readonly inherited: string;
}

function candidateLayers(): Layer[] {
  const layers: Layer[] = [];
  const setpriv = findTool('setpriv');
  if (setpriv)
    layers.push({
      name: 'noNewPrivileges',
      command: [setpriv, '--no-new-privs', '--inh-caps=-all', '--ambient-caps=-all', '--'],
      holds: (r) => r.noNewPrivs === '1' && /^0+$/.test(r.capAmb) && (r.uid === 0 || /^0+$/.test(r.capEff)),
      inForce: 'no-new-privileges; no inherited or ambient capabilities (setpriv)',
      inherited: 'no-new-privileges; no capabilities',
    });
  const unshare = findTool('unshare');
  if (unshare)
    layers.push({
      name: 'network',
      command: [unshare, '--user', '--net', '--'],
      holds: (r) => r.interfaces.length === 0,
      inForce: 'a network namespace of its own: no interface to reach any host (unshare --user --net)',
      inherited: 'no interface to reach any host',
    });
  const prlimit = findTool('prlimit');
  if (prlimit)
    layers.push({
      name: 'coreDumps',
      command: [prlimit, '--core=0', '--'],
      holds: (r) => r.coreLimit === '0',
      inForce: 'no core dumps (RLIMIT_CORE 0, prlimit)',
      inherited: 'no core dumps (RLIMIT_CORE 0)',
    });
  return layers;
}

const MISSING: Readonly<Record<Exclude<LayerName, 'user'>, string>> = {
  noNewPrivileges: 'off: setpriv (util-linux) not found',
  network: 'off: unshare (util-linux) not found',
  coreDumps: 'off: prlimit (util-linux) not found',
};

/**
 * Decides the confinement at start: checks that the front may switch to the sandbox user, then keeps
 * each layer that a probe process, spawned exactly as the sandbox processes will be, shows in force.
 * Throws ConfigError when SSE_SANDBOX_USER cannot be honoured.
 */
export function prepareConfinement(config: Pick<Config, 'sandboxUser' | 'sandboxGroup'>): Confinement {
  if (process.platform !== 'linux') {
    if (config.sandboxUser !== undefined) throw new ConfigError(`SSE_SANDBOX_USER=${config.sandboxUser}: supported on Linux only`);
    return NO_CONFINEMENT;
  }
  let identity: SandboxIdentity | undefined;
  if (config.sandboxUser !== undefined) {
    if (!maySwitchUsers(effectiveCapabilities()))
      throw new ConfigError(
        `SSE_SANDBOX_USER=${config.sandboxUser}: the plugin may not switch users (uid ${process.getuid?.()} without CAP_SETUID and CAP_SETGID); start it as root or with those two capabilities (systemd: AmbientCapabilities=CAP_SETUID CAP_SETGID), or unset SSE_SANDBOX_USER`,
      );
    identity = resolveIdentity(config.sandboxUser, config.sandboxGroup);
  }
  const key = `${identity?.uid}:${identity?.gid}`;
  const known = decided.get(key);
  if (known !== undefined) return known;
  const confinement = decide(identity);
  decided.set(key, confinement);
  return confinement;
}

/** What the probes found, per identity: a property of the machine, probed once per process. */
const decided = new Map<string, Confinement>();

function decide(identity: SandboxIdentity | undefined): Confinement {
  const candidates = candidateLayers();
  const all = candidates.flatMap((layer) => layer.command);
  // Usually every layer works: one probe. Otherwise one per layer, to keep those that do.
  const full = probe(identity, all);
  if (typeof full !== 'string' && candidates.every((layer) => layer.holds(full))) {
    checkIdentity(identity, full);
    checkNoCapabilities(identity, full);
    return confinement(identity, all, Object.fromEntries(candidates.map((layer) => [layer.name, layer.inForce])));
  }
  const base = probe(identity, []);
  if (typeof base === 'string') {
    if (identity === undefined) return NO_CONFINEMENT; // as before: the sandbox's own start says what is wrong
    throw new ConfigError(`SSE_SANDBOX_USER=${identity.user}: a process as uid ${identity.uid} failed to start: ${base}`);
  }
  checkIdentity(identity, base);
  let prefix: string[] = [];
  let last = base;
  const states: Partial<Record<LayerName, string>> = {};
  for (const layer of candidates) {
    const report = probe(identity, [...prefix, ...layer.command]);
    if (typeof report !== 'string' && layer.holds(report)) {
      prefix = [...prefix, ...layer.command];
      last = report;
      states[layer.name] = layer.inForce;
    } else if (layer.holds(last)) {
      // Already so for the whole service (systemd PrivateNetwork=, LimitCORE=; a container's settings).
      states[layer.name] = `${layer.inherited} (inherited from the service)`;
    } else {
      states[layer.name] = `off: not available here (${typeof report === 'string' ? report : 'the probe saw it not in force'})`;
    }
  }
  checkNoCapabilities(identity, last);
  return confinement(identity, prefix, states);
}

/**
 * A front that is not root switches users with ambient CAP_SETUID and CAP_SETGID, and the kernel keeps
 * ambient capabilities across a switch between two non-root users: without setpriv clearing them, the
 * sandbox process could make itself root. Refused rather than run that way.
 */
function checkNoCapabilities(identity: SandboxIdentity | undefined, report: ProbeReport): void {
  if (identity === undefined || (/^0+$/.test(report.capEff) && /^0+$/.test(report.capAmb))) return;
  throw new ConfigError(
    `SSE_SANDBOX_USER=${identity.user}: a sandbox process would keep the capabilities ${report.capEff} (ambient ${report.capAmb}) of the plugin's user; install setpriv (util-linux), which clears them, or start the plugin as root`,
  );
}

function checkIdentity(identity: SandboxIdentity | undefined, report: ProbeReport): void {
  if (identity === undefined) return;
  if (report.unreadable !== undefined)
    throw new ConfigError(
      `SSE_SANDBOX_USER=${identity.user} (uid ${identity.uid}) cannot read ${report.unreadable}: the sandbox user needs read access to dist/ and node_modules/ and search (x) access to every folder above them (docs/operations.md, "A user for the sandbox processes")`,
    );
  // libuv calls setgroups(0) before setgid and setuid: nothing of the front's groups may remain.
  if (report.groups !== '')
    throw new ConfigError(
      `SSE_SANDBOX_USER=${identity.user}: a process spawned as this user kept the supplementary groups ${report.groups}`,
    );
}

function confinement(
  identity: SandboxIdentity | undefined,
  prefix: readonly string[],
  states: Partial<Record<LayerName, string>>,
): Confinement {
  return {
    identity,
    prefix,
    layers: {
      ...MISSING,
      ...states,
      user:
        identity === undefined
          ? "off: SSE_SANDBOX_USER not set (the front's user)"
          : `${identity.user} (uid ${identity.uid}, gid ${identity.gid}, no supplementary groups)`,
    },
  };
}

/** The start-up log line: what an escape from V8 would find in force. */
export function logConfinement(logger: Logger, confinement: Confinement): void {
  const off = Object.entries(confinement.layers)
    .filter(([, state]) => state.startsWith('off'))
    .map(([name]) => name);
  logger.info(
    { sandboxConfinement: confinement.layers },
    `sandbox processes: ${Object.entries(confinement.layers)
      .map(([name, state]) => `${name}: ${state}`)
      .join('; ')}${off.length === 0 ? '' : ' (security.md, "Running it safely", says what each layer adds)'}`,
  );
}
