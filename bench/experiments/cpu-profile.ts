/**
 * Reads the .cpuprofile files `node --cpu-prof` writes (one per process and thread) and
 * summarises where each one's busy time went: top functions by self time, and by total time for
 * the project's own functions. Time inside an isolated-vm isolate is not sampled by the host's
 * profiler; it shows as self time of the call into the isolate (applySync / runSync).
 * bench/experiments/profile.ts uses it; on its own it summarises a folder of profiles:
 *
 *   node dist/bench/experiments/cpu-profile.js <folder of .cpuprofile files> [pid of the front]
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export interface FunctionTime {
  readonly name: string;
  readonly selfMs: number;
  readonly totalMs: number;
}

export interface ThreadSummary {
  readonly file: string;
  readonly thread: string;
  readonly busyMs: number;
  readonly idleMs: number;
  readonly functions: FunctionTime[];
}

function label(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const file = url === '' ? '' : ` ${url.replace(/^file:\/\//, '').replace(/^.*\/(node_modules|dist)\//, '$1/')}:${lineNumber + 1}`;
  return `${functionName === '' ? '(anonymous)' : functionName}${file}`;
}

/** CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile */
function threadName(file: string, pluginPid: number): string {
  const [, pid, tid] = /\.(\d+)\.(\d+)\.\d+\.cpuprofile$/.exec(file) ?? [];
  const owner = Number(pid) === pluginPid ? 'plugin front process' : `process ${pid ?? '?'}`;
  return tid === '0' ? owner : `${owner}, worker thread ${tid ?? '?'}`;
}

export function summariseProfile(file: string, pluginPid: number): ThreadSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let idleMs = 0;
  let busyMs = 0;
  profile.samples.forEach((id, i) => {
    const deltaMs = (profile.timeDeltas[i] ?? 0) / 1000;
    const node = byId.get(id);
    if (!node) return;
    if (node.callFrame.functionName === '(idle)') {
      idleMs += deltaMs;
      return;
    }
    busyMs += deltaMs;
    const name = label(node);
    self.set(name, (self.get(name) ?? 0) + deltaMs);
    // Total time: once per distinct function on the sampled stack.
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at);
      if (!frame) break;
      const frameName = label(frame);
      if (seen.has(frameName)) continue;
      seen.add(frameName);
      total.set(frameName, (total.get(frameName) ?? 0) + deltaMs);
    }
  });
  const functions = [...total.keys()].map((name) => ({ name, selfMs: self.get(name) ?? 0, totalMs: total.get(name) ?? 0 }));
  return { file, thread: threadName(file, pluginPid), busyMs, idleMs, functions };
}

export function summariseDir(dir: string, pluginPid: number): ThreadSummary[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .sort()
    .map((f) => summariseProfile(path.join(dir, f), pluginPid));
}

const OWN_CODE = /^.* (dist\/(src|workers)\/)/;

export function printSummary(summary: ThreadSummary, top = 12): void {
  const out = (line: string): void => {
    process.stdout.write(`${line}\n`);
  };
  out(`-- ${summary.thread}: busy ${summary.busyMs.toFixed(0)} ms, idle ${summary.idleMs.toFixed(0)} ms (${path.basename(summary.file)})`);
  out('   self ms   self %  function');
  for (const f of [...summary.functions].sort((a, b) => b.selfMs - a.selfMs).slice(0, top)) {
    out(`   ${f.selfMs.toFixed(0).padStart(7)}  ${((f.selfMs / summary.busyMs) * 100).toFixed(1).padStart(6)}%  ${f.name}`);
  }
  out('   total ms  total %  project function (inclusive)');
  for (const f of summary.functions
    .filter((fn) => OWN_CODE.test(fn.name))
    .sort((a, b) => b.totalMs - a.totalMs)
    .slice(0, top)) {
    out(`   ${f.totalMs.toFixed(0).padStart(8)}  ${((f.totalMs / summary.busyMs) * 100).toFixed(1).padStart(6)}%  ${f.name}`);
  }
}

if (require.main === module) {
  const [dir, pid] = process.argv.slice(2);
  if (dir === undefined) {
    process.stderr.write('usage: node dist/bench/experiments/cpu-profile.js <folder of .cpuprofile files> [pid of the front]\n');
    process.exitCode = 2;
  } else {
    for (const summary of summariseDir(dir, Number(pid ?? -1))) printSummary(summary);
  }
}
