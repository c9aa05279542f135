/**
 * `npm run try`: builds `dist` only when a source is newer than the last build, then runs the try
 * command with the Node flags the sandbox needs.
 *
 * Why not `pretry: npm run build`: that deleted and rebuilt `dist` on every run (about 5 s), and two
 * runs at once broke each other (`Cannot find module …/dist/src/cli/main.js`: one run deleted the
 * files the other was loading). Here a build takes a lock (a directory, created atomically), so one
 * run builds while the others wait and then find `dist` current; it compiles into a staging folder and
 * moves each file into `dist` with rename(2), which replaces a file whole: a process already running
 * from `dist` never sees a missing or half-written file, and `dist` is never deleted.
 *
 * Plain JavaScript, not TypeScript: it has to run before anything is built.
 */
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const DIST = path.join(ROOT, 'dist');
/** Written after every build (here and by `npm run build`): its time is the build's. */
const STAMP = path.join(DIST, '.build-stamp');
const LOCK = path.join(ROOT, '.dist-build.lock');
/** What the try command runs from; test/ and bench/ changes do not make it stale. */
const SOURCES = ['src', 'workers', 'proto', 'tsconfig.json', 'package.json', 'package-lock.json'];
const MAIN = path.join(DIST, 'src', 'cli', 'main.js');
const NODE_FLAGS = ['--no-node-snapshot', '--no-concurrent-recompilation'];
const LOCK_POLL_MS = 100;
/** A build takes ~15 s on a busy 2-core machine; a lock older than this lost its builder. */
const LOCK_STALE_MS = 5 * 60_000;

function newestSourceMs(entry) {
  let info;
  try {
    info = fs.statSync(entry);
  } catch {
    return 0;
  }
  if (!info.isDirectory()) return info.mtimeMs;
  let newest = info.mtimeMs;
  for (const name of fs.readdirSync(entry)) newest = Math.max(newest, newestSourceMs(path.join(entry, name)));
  return newest;
}

function isCurrent() {
  let builtMs;
  try {
    builtMs = fs.statSync(STAMP).mtimeMs;
  } catch {
    return false;
  }
  if (!fs.existsSync(MAIN)) return false;
  return SOURCES.every((entry) => newestSourceMs(path.join(ROOT, entry)) <= builtMs);
}

function sleep(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Waits for the lock; false when another run holds it and has finished building meanwhile. */
function takeLock() {
  for (;;) {
    try {
      fs.mkdirSync(LOCK);
      fs.writeFileSync(path.join(LOCK, 'pid'), String(process.pid));
      return true;
    } catch (error) {
      if (error.code !== 'EEXIST') throw error;
    }
    if (lockIsAbandoned()) fs.rmSync(LOCK, { recursive: true, force: true });
    sleep(LOCK_POLL_MS);
    if (isCurrent()) return false;
  }
}

/** Its builder ended without removing it (Ctrl-C, a crash), or it is older than any build takes. */
function lockIsAbandoned() {
  try {
    if (Date.now() - fs.statSync(LOCK).mtimeMs > LOCK_STALE_MS) return true;
    const pid = Number(fs.readFileSync(path.join(LOCK, 'pid'), 'utf8'));
    process.kill(pid, 0);
    return false;
  } catch (error) {
    // No pid file yet (its builder is between mkdir and write) is not abandoned; a dead pid is.
    return error.code === 'ESRCH';
  }
}

function moveInto(from, to) {
  for (const name of fs.readdirSync(from)) {
    const source = path.join(from, name);
    const target = path.join(to, name);
    if (fs.statSync(source).isDirectory()) {
      fs.mkdirSync(target, { recursive: true });
      moveInto(source, target);
    } else {
      fs.renameSync(source, target);
    }
  }
}

function build() {
  const startedMs = Date.now();
  const staging = path.join(DIST, `.staging-${process.pid}`);
  process.stderr.write('try: sources changed since the last build; building dist …\n');
  fs.mkdirSync(staging, { recursive: true });
  try {
    const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json', '--outDir', staging], {
      cwd: ROOT,
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    if (tsc.status !== 0) throw new Error('the build failed (see above); fix it and run again');
    fs.chmodSync(path.join(staging, 'src', 'cli', 'bin.js'), 0o755);
    moveInto(staging, DIST);
    runStepsAfterTsc();
    fs.writeFileSync(STAMP, '');
    // The build's time is when it read the sources: an edit made while it ran makes it stale again.
    fs.utimesSync(STAMP, startedMs / 1000, startedMs / 1000);
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}

/**
 * What `npm run build` does after tsc (`tsc -p tsconfig.json && step && …`), such as bundling the
 * scripts' libraries into dist, runs here too, on dist, under the lock: one build script to keep.
 */
function runStepsAfterTsc() {
  const build = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).scripts.build;
  const [compile, ...steps] = build.split('&&').map((step) => step.trim());
  if (compile !== 'tsc -p tsconfig.json') throw new Error(`package.json's build script should start with tsc -p tsconfig.json: ${build}`);
  for (const step of steps) {
    const ran = spawnSync(step, { cwd: ROOT, shell: true, stdio: ['ignore', 'inherit', 'inherit'] });
    if (ran.status !== 0) throw new Error(`the build step ${step} failed (see above)`);
  }
}

function buildIfStale() {
  if (isCurrent()) return;
  if (!takeLock()) return;
  try {
    if (!isCurrent()) build();
  } finally {
    fs.rmSync(LOCK, { recursive: true, force: true });
  }
}

try {
  buildIfStale();
} catch (error) {
  process.stderr.write(`try: ${error.message}\n`);
  process.exit(1);
}
const child = spawnSync(process.execPath, [...NODE_FLAGS, MAIN, ...process.argv.slice(2)], { stdio: 'inherit' });
if (child.error) throw child.error;
process.exitCode = child.status ?? 1;
