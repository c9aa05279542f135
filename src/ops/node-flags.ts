/**
 * The Node flags the front is started with, in every start command: `npm start` (package.json), the
 * Dockerfile, the systemd unit and the Windows service (test/unit/start-commands.test.ts keeps them
 * the same). The front starts its sandbox processes with flags of its own (src/sandboxes/sandbox-process.ts).
 *
 * - `--no-node-snapshot`: isolated-vm needs it; the sandbox processes get it from the front, which
 *   never loads isolated-vm, but the one command then starts everything the same way.
 * - `--no-concurrent-recompilation`: removes a JIT stall that left some sandboxes 5-7x slower.
 * - `--initial-old-space-size=128`: without it V8 lets the front's old generation grow to only about
 *   twice its ~15 MB of live objects; once what is left below that limit is no more than the young
 *   generation (16 MB), V8 starts a full collection as each one ends. In a bulk call the front
 *   collected every 50-100 ms, six times per 1 M-row call, about a third of its CPU; with the flag its
 *   CPU per 1 M-row numeric call went 410-490 -> 140-160 ms (bench/RESULTS.md). What it costs: up to
 *   128 MB of garbage before a full collection, which is memory, never held rows (SSE_MAX_HELD_MB).
 */
export const FRONT_NODE_FLAGS: readonly string[] = ['--no-node-snapshot', '--no-concurrent-recompilation', '--initial-old-space-size=128'];
