/**
 * Prometheus metrics (prom-client), served on SSE_METRICS_PORT at /metrics when that is set. Each fact
 * is counted once: a metric that follows from another is derived from it when scraped.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { TASK_ROUTES, type TaskRoute } from '../contract/task';
import { YIELD_MAX_MS, YIELD_MIN_MS } from '../sandboxes/task-queue';
import { logLoss } from './log';

export class Metrics {
  readonly registry = new Registry();
  readonly calls = new Counter({
    name: 'sse_calls_total',
    help: 'EvaluateScript and ExecuteFunction calls by script function or plugin function name, and gRPC status',
    labelNames: ['function', 'status'] as const,
    registers: [this.registry],
  });
  readonly rowsIn = new Counter({ name: 'sse_rows_in_total', help: 'Rows received', registers: [this.registry] });
  readonly rowsOut = new Counter({ name: 'sse_rows_out_total', help: 'Rows answered', registers: [this.registry] });
  readonly duration = new Histogram({
    name: 'sse_call_duration_seconds',
    help: 'Wall-clock duration of EvaluateScript and ExecuteFunction calls',
    labelNames: ['function'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly timeouts = new Counter({
    name: 'sse_script_timeouts_total',
    help: 'Calls that ran past SSE_SCRIPT_TIMEOUT_MS',
    registers: [this.registry],
  });
  readonly memoryDisposals = new Counter({
    name: 'sse_memory_limit_disposals_total',
    help: 'Sandboxes disposed for passing SSE_MEMORY_LIMIT_MB',
    registers: [this.registry],
  });
  readonly busyRefusals = new Counter({
    name: 'sse_busy_refusals_total',
    help: 'Calls and chunks refused as busy: a full queue (SSE_MAX_QUEUE), held bytes past SSE_MAX_HELD_MB or a host share, open calls past the bound or a host share',
    registers: [this.registry],
  });
  readonly sandboxRestarts = new Counter({
    name: 'sse_sandbox_restarts_total',
    help: 'Sandbox processes replaced, by reason (crash, exit, memory-fence, stuck, fatal, unanswered, protocol, start-failure)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly forcedCollections = new Counter({
    name: 'sse_front_forced_collections_total',
    help: 'Full garbage collections the front forced because native memory owned by JavaScript objects (HTTP/2 header strings, Buffers) grew by a step',
    registers: [this.registry],
  });
  /** EvaluateScript calls begun and not yet ended; shutdown waits for this to reach 0. */
  private inFlight = 0;

  constructor(
    pool: {
      queueSize: number;
      busyWorkers: number;
      threads: number;
      residentBytes(): { index: number; bytes: number }[];
      retirements: number;
      stoppedTasks?: number;
      yieldedTasks?: number;
      tasksByRoute?: Readonly<Record<TaskRoute, number>>;
      processes(): { state: string }[];
      spareProcesses(): { state: string }[];
    },
    held?: { bytes: number },
  ) {
    const registers = [this.registry];
    // The front learns of a disposal and its rebuild from one fact, a result's isolateRebuilt: counted
    // once (memoryDisposals), and this read from it when scraped, so the two cannot disagree.
    derivedCounter(this.memoryDisposals, { name: 'sse_isolate_rebuilds_total', help: 'Sandboxes rebuilt after a disposal', registers });
    new Gauge({
      name: 'sse_held_bytes',
      help: 'Bytes the front holds for calls: rows, results, tables, replies not yet taken (bounded by SSE_MAX_HELD_MB)',
      registers,
      collect() {
        this.set(held?.bytes ?? 0);
      },
    });
    new Counter({
      name: 'sse_log_lines_dropped_total',
      help: 'Log lines dropped because stdout did not take them (a reader that stopped, a full disk) while 16 MiB waited',
      registers,
      collect() {
        this.reset();
        this.inc(logLoss.droppedLines);
      },
    });
    new Counter({
      name: 'sse_sandbox_retirements_total',
      help: 'Sandbox processes retired near their memory fence: a ready spare took the slot, the process ended when idle',
      registers,
      collect() {
        this.reset();
        this.inc(pool.retirements);
      },
    });
    new Counter({
      name: 'sse_tasks_stopped_total',
      help: 'Running chunks a sandbox stopped because their call had ended (cancelled, past its deadline, failed)',
      registers,
      collect() {
        this.reset();
        this.inc(pool.stoppedTasks ?? 0);
      },
    });
    new Counter({
      name: 'sse_tasks_yielded_total',
      help: `Running chunks asked back from their thread after ${YIELD_MIN_MS}-${YIELD_MAX_MS} ms because another client host waited (or, within a host, a short task of another user), and run again later`,
      registers,
      collect() {
        this.reset();
        this.inc(pool.yieldedTasks ?? 0);
      },
    });
    new Counter({
      name: 'sse_sandbox_tasks_total',
      help: "Chunks a sandbox thread answered, by route: main (the sandbox process's main thread, SSE_FAST_PATH_MS), pool (a pool thread), moved (a pool thread after the main thread stopped it at its budget)",
      labelNames: ['route'],
      registers,
      collect() {
        this.reset();
        for (const route of TASK_ROUTES) this.inc({ route }, pool.tasksByRoute?.[route] ?? 0);
      },
    });
    new Gauge({
      name: 'sse_queue_depth',
      help: 'Chunks of rows waiting for a sandbox thread',
      registers,
      collect() {
        this.set(pool.queueSize);
      },
    });
    new Gauge({
      name: 'sse_busy_workers',
      help: 'Sandbox threads running a task',
      registers,
      collect() {
        this.set(pool.busyWorkers);
      },
    });
    new Gauge({
      name: 'sse_workers',
      help: 'Sandbox threads in sandbox processes that are ready',
      registers,
      collect() {
        this.set(pool.threads);
      },
    });
    new Gauge({
      name: 'sse_sandbox_resident_bytes',
      help: 'Resident memory of each sandbox process (Linux)',
      labelNames: ['sandbox'] as const,
      registers,
      collect() {
        this.reset();
        for (const { index, bytes } of pool.residentBytes()) this.set({ sandbox: String(index) }, bytes);
      },
    });
    new Gauge({
      name: 'sse_sandbox_processes',
      help: 'Live sandbox processes by role (slot: takes tasks; spare: started ahead to take over a dead one) and state',
      labelNames: ['role', 'state'] as const,
      registers,
      collect() {
        this.reset();
        for (const [role, views] of [
          ['slot', pool.processes()],
          ['spare', pool.spareProcesses()],
        ] as const) {
          for (const { state } of views) this.inc({ role, state });
        }
      },
    });
    const calls = (): number => this.inFlight;
    new Gauge({
      name: 'sse_calls_in_flight',
      help: 'EvaluateScript and ExecuteFunction calls running now',
      registers,
      collect() {
        this.set(calls());
      },
    });
    // The event-loop lag histogram samples every 100 ms, not prom-client's 10: a hundred wake-ups a
    // second were most of an idle front's CPU (bench/RESULTS.md); lag is still measured to the nanosecond.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 100 });
  }

  private rendering: Promise<string> | undefined;

  callStarted(): void {
    this.inFlight++;
  }

  callEnded(): void {
    this.inFlight = Math.max(0, this.inFlight - 1);
  }

  get callsInFlight(): number {
    return this.inFlight;
  }

  /**
   * The metrics text; requests that arrive while it is being made share it. Making it takes the
   * front's thread ~1 ms, and 64 connections pipelining requests they never read had it made for
   * each (16 a connection), stalling calls 0.9-1.6 s back to back. A request after it is made gets
   * a fresh one: a scrape right after a call sees that call.
   */
  private render(): Promise<string> {
    this.rendering ??= this.registry.metrics().finally(() => {
      this.rendering = undefined;
    });
    return this.rendering;
  }

  /** Serves /metrics on host:port, or on a listening socket systemd passed (fd); resolves with the bound port. */
  async listen(host: string, port: number, fd?: number): Promise<{ server: http.Server; port: number }> {
    const server = http.createServer((req, res) => {
      if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
        res.writeHead(404).end('not found\n');
        return;
      }
      this.render().then(
        (text) => res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(text),
        () => res.writeHead(500).end('metrics unavailable\n'),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(fd === undefined ? { port, host } : { fd }, () => resolve());
    });
    return { server, port: (server.address() as AddressInfo).port };
  }
}

/** A counter with no inc() of its own: when scraped it reads `source`'s value (both unlabelled). */
function derivedCounter(source: Counter, config: { name: string; help: string; registers: Registry[] }): Counter {
  return new Counter({
    ...config,
    async collect() {
      const { values } = await source.get();
      this.reset();
      this.inc(values[0]?.value ?? 0);
    },
  });
}
