/**
 * The glue of one EvaluateScript or ExecuteFunction call: incoming BundledRows are cut at row
 * boundaries into tasks of about SSE_CHUNK_KB, sent to the pool with a bounded number in flight
 * (reads pause when saturated), and their replies written back strictly in request order. A call is
 * in one phase at a time (reading, draining, failing, finished), written in one place: what it does with a message,
 * a result or the end of its input follows from the phase (src/calls/call-phase.ts), not from flags.
 *
 * Everything the call keeps in this process is counted in its one account of the front-wide budget
 * (src/calls/held-bytes.ts, SSE_MAX_HELD_MB), opened by its handler with its headers and state in it:
 * rows from arrival until their task's result, results until written, written replies until gRPC has
 * handed them on. Nothing more is produced while the client is not taking replies.
 *
 * Its parts live beside it: rows waiting for a task in src/calls/pending-rows.ts, the output side
 * (request order, held tables, replies) in src/calls/call-output.ts, the time budget its tasks share in
 * src/calls/call-budget.ts, its early-end flag in src/calls/call-signal.ts. It asks only a TaskRunner
 * (src/sandboxes/task-runner.ts) to run tasks, so test/unit/pipeline.test.ts drives it with a fake.
 */
import type { Metadata, StatusObject } from '@grpc/grpc-js';
import type { CallSpec } from '../contract/channel';
import type { ConsoleOutput } from '../contract/console';
import { PluginError } from '../contract/errors';
import { memoryLimitError } from '../contract/limit-errors';
import { splitRows } from '../contract/rows';
import type { ScriptSpec, TaskFailure, TaskResult } from '../contract/task';
import { toStatus } from '../grpc/status';
import type { TaskOwner, TaskRequest, TaskRunner } from '../sandboxes/task-runner';
import { CallBudget } from './call-budget';
import { CallOutput, type OutputStream } from './call-output';
import { CallPhase, type PhaseName } from './call-phase';
import { CallSignal } from './call-signal';
import type { HeldAccount } from './held-bytes';
import { PendingRows } from './pending-rows';

export { CACHE_HEADER } from './call-output';

export interface PipelineOptions {
  /** Target size of the rows of one task. */
  readonly chunkBytes: number;
  /** Tasks of one call in the pool at once. */
  readonly maxInFlight: number;
  /** Script time of the whole call, all tasks together. */
  readonly timeoutMs: number;
  readonly maxReplyBytes: number;
  /** Calls with the same key may reuse a sandbox context in turn (src/calls/context-key.ts). */
  readonly contextKey: string;
  /** The app and user of the call (its request header), for the queue's fairness. */
  readonly owner: TaskOwner;
  /** The call's account of the front-wide held bytes (openCallAccount in src/calls/held-bytes.ts). */
  readonly account: HeldAccount;
  /** Told of what each task's script wrote to its console, as results arrive (src/calls/call-console.ts). */
  readonly onConsole?: (output: ConsoleOutput) => void;
  /** At the client's half-close: whether its last message was cut short (src/grpc/incoming.ts). */
  readonly endedInsideMessage?: () => boolean;
}

export interface CallSummary {
  readonly rowsIn: number;
  readonly rowsOut: number;
  readonly scriptMs: number;
  readonly nondeterministic: boolean;
  readonly table: boolean;
  readonly timedOut: boolean;
  readonly isolateRebuilds: number;
}

/** What the pipeline uses of grpc-js's ServerDuplexStream (test/unit/pipeline.test.ts gives it a fake). */
export interface CallStream extends OutputStream {
  on(event: 'data', listener: (message: Buffer) => void): unknown;
  on(event: 'end' | 'cancelled' | 'drain', listener: () => void): unknown;
  on(event: 'error', listener: (error: unknown) => void): unknown;
  pause(): unknown;
  resume(): unknown;
  isPaused(): boolean;
  end(trailers: Metadata): unknown;
  emit(event: 'error', status: StatusObject): boolean;
}

export interface CallOutcome {
  readonly error: PluginError | null;
  readonly summary: CallSummary;
}

let nextCallId = 1;

export class CallPipeline {
  private readonly state = new CallPhase();
  /** Rows not yet sent to the runner. */
  private readonly pending: PendingRows;
  /** Indexes of the tasks sent and not settled: the call's tasks in flight. */
  private readonly running = new Set<number>();
  private readonly output: CallOutput;
  private readonly budget: CallBudget;
  /** Aborted when the call ends early, so the pool drops its queued tasks. */
  private readonly ended = new CallSignal();
  /** Tasks started so far: the next task's index. */
  private tasksStarted = 0;
  private rowsIn = 0;
  private isolateRebuilds = 0;
  private readonly callId = nextCallId++;
  private readonly callSpec: CallSpec;
  private settle!: (outcome: CallOutcome) => void;

  constructor(
    private readonly call: CallStream,
    private readonly spec: ScriptSpec,
    private readonly pool: TaskRunner,
    private readonly options: PipelineOptions,
  ) {
    this.callSpec = { spec, contextKey: options.contextKey, callTimeoutMs: options.timeoutMs, maxReplyBytes: options.maxReplyBytes };
    this.pending = new PendingRows(spec.mode, options.chunkBytes);
    this.budget = new CallBudget(options.timeoutMs);
    const limits = { maxReplyBytes: options.maxReplyBytes, memoryLimitMb: pool.settings.memoryLimitMb, tableAllowed: spec.tableAllowed };
    this.output = new CallOutput(call, options.account, limits, () => {
      if (this.state.name !== 'finished' && !this.output.blocked) this.pump();
    });
  }

  get phase(): PhaseName {
    return this.state.name;
  }

  /** Runs the call to its end; resolves with the error that ended it, if any (never rejects). */
  run(): Promise<CallOutcome> {
    const outcome = new Promise<CallOutcome>((resolve) => (this.settle = resolve));
    this.call.on('data', (message: Buffer) => this.onMessage(message));
    this.call.on('end', () => this.onInputEnd());
    // grpc-js says 'cancelled' when any call's stream closes, finished or not: a finished call makes no
    // error (an Error's stack costs ~14 µs, on every call).
    this.call.on('cancelled', () => {
      if (this.state.name !== 'finished') this.fail(new PluginError('CANCELLED', 'the client cancelled the call'));
    });
    this.call.on('error', (error: unknown) => this.fail(PluginError.from(error)));
    this.call.on('drain', () => this.pump());
    return outcome;
  }

  private get account(): HeldAccount {
    return this.options.account;
  }

  private onMessage(message: Buffer): void {
    // Parameterless calls run once, whatever arrives; aggregations keep every row until the end.
    if (this.state.name === 'finished' || this.spec.mode === 'once') return;
    try {
      const chunks = splitRows(message, this.pending.pieceBytes);
      const added = this.pending.push(chunks);
      try {
        this.account.hold(added);
      } catch (error) {
        // Nothing of this message was counted: the rest of what waits goes back, then the call fails.
        this.account.release(this.pending.clear() - added);
        throw error;
      }
      for (const chunk of chunks) this.rowsIn += chunk.rows;
      // An aggregation's rows all go into one sandbox: more than its heap can hold cannot succeed.
      if (this.spec.mode === 'aggregate' && this.pending.bytes > this.pool.settings.memoryLimitMb * 1024 * 1024) {
        const detail = `the aggregation's rows (${this.pending.bytes} bytes) do not fit`;
        return this.fail(memoryLimitError(this.pool.settings.memoryLimitMb, detail));
      }
      this.pump();
    } catch (error) {
      this.fail(PluginError.from(error));
    }
  }

  private onInputEnd(): void {
    if (this.options.endedInsideMessage?.() === true)
      return this.fail(
        new PluginError(
          'INVALID_ARGUMENT',
          'the request ended inside a message: its length prefix promised more bytes than arrived before the client half-closed',
        ),
      );
    if (this.state.name === 'reading') this.state.moveTo({ name: 'draining' });
    this.pump();
    this.maybeFinish();
  }

  /** Starts tasks while the call may, and one is ready; then pauses or resumes reads to match. */
  private pump(): void {
    while (this.mayStartTask() && this.taskReady()) this.dispatch();
    this.updateReading();
  }

  /** Reading or draining, room in the pool for the call, and Qlik takes the replies. */
  private mayStartTask(): boolean {
    return this.state.running && !this.output.blocked && this.running.size < this.options.maxInFlight;
  }

  /**
   * A full chunk waits, or the last rows (an aggregation's or a parameterless call's one task
   * included). The first rows go at once, whatever their size: a script that does not compile, or
   * fails on its first row, is reported while the client is still sending, not after its last message.
   */
  private taskReady(): boolean {
    const rowsMode = this.spec.mode === 'rows';
    const last = this.state.name === 'draining' && (this.pending.rows > 0 || (!rowsMode && this.tasksStarted === 0));
    const first = rowsMode && this.tasksStarted === 0 && this.pending.rows > 0;
    return this.pending.full || last || first;
  }

  /** Sends the waiting chunks, up to about taskBytes, to the pool as one task. */
  private dispatch(): void {
    const timeUp = this.budget.checkBeforeTask();
    if (timeUp !== null) return this.fail(timeUp);
    const firstRow = this.rowsIn - this.pending.rows;
    const { chunks, bytes, rows, heldBytes } = this.pending.take();
    const index = this.tasksStarted++;
    this.running.add(index);
    // No copy: the views keep gRPC's message buffers alive until the task's result (held bytes count them).
    const request: TaskRequest = {
      callId: this.callId,
      owner: this.options.owner,
      call: this.callSpec,
      chunks: chunks.map((chunk) => chunk.bytes),
      rows,
      firstRow,
      budget: this.budget,
      signal: this.ended,
    };
    const settled = (): void => {
      this.running.delete(index);
      this.account.release(heldBytes);
    };
    this.pool.run(request).then(
      (result) => {
        settled();
        this.onResult(index, bytes, result);
      },
      (error: unknown) => {
        settled();
        this.fail(PluginError.from(error));
      },
    );
  }

  private onResult(index: number, bytes: number, received: TaskResult): void {
    // Even after the call ended: the lines of a failed chunk are what explains the failure. Logged
    // at once and not kept: a result waiting its turn holds only what its held bytes count.
    let result = received;
    if (received.console) {
      this.options.onConsole?.(received.console);
      const { console: _logged, ...rest } = received;
      result = rest;
    }
    this.budget.addResult(result.scriptMs, !result.ok && result.timedOut);
    if (this.state.name === 'finished') return;
    this.pending.adapt(bytes, result.scriptMs);
    if (!result.ok) return this.onChunkFailed(index, result);
    try {
      this.output.put(index, result);
    } catch (error) {
      return this.fail(PluginError.from(error));
    }
    this.failOnEarliestScriptError();
    this.pump();
    this.maybeFinish();
  }

  /** A script error waits for the chunks before it (see failing); any other failure ends the call now. */
  private onChunkFailed(index: number, result: TaskFailure): void {
    if (result.isolateRebuilt) this.isolateRebuilds++;
    const error = PluginError.fromData(result.error);
    if (error.code !== 'INVALID_ARGUMENT') return this.fail(error);
    const held = this.state.current;
    if (held.name !== 'failing' || index < held.chunk) this.state.moveTo({ name: 'failing', chunk: index, error });
    this.failOnEarliestScriptError();
  }

  private failOnEarliestScriptError(): void {
    const held = this.state.current;
    if (held.name !== 'failing') return;
    for (const index of this.running) if (index < held.chunk) return;
    this.fail(held.error);
  }

  /**
   * Reads pause while a full chunk already waits for room in the pool (the call has its share of
   * the workers) or Qlik is not taking replies; aggregations read everything.
   */
  private updateReading(): void {
    const pause = this.state.name !== 'finished' && (this.pending.full || this.output.blocked);
    if (pause === this.call.isPaused()) return;
    if (pause) this.call.pause();
    else this.call.resume();
  }

  /** Draining, and nothing waits, runs or is out of order: held tables are written, then the trailers. */
  private maybeFinish(): void {
    if (this.state.name !== 'draining' || this.running.size > 0 || this.pending.rows > 0 || this.output.waiting > 0) return;
    if (this.spec.mode !== 'rows' && this.tasksStarted === 0) return;
    let trailers: Metadata;
    try {
      trailers = this.output.finish();
    } catch (error) {
      return this.fail(PluginError.from(error));
    }
    this.state.moveTo({ name: 'finished' });
    this.pool.closeCall(this.callId);
    this.call.end(trailers);
    this.settle({ error: null, summary: this.summary() });
  }

  private fail(error: PluginError): void {
    if (this.state.name === 'finished') return;
    this.state.moveTo({ name: 'finished' });
    this.ended.abort();
    this.pool.closeCall(this.callId);
    // Dropped here; rows of tasks in flight go back as they settle, replies being written as they are.
    this.output.drop();
    this.account.release(this.pending.clear());
    this.updateReading();
    if (error.code !== 'CANCELLED') this.call.emit('error', toStatus(error));
    this.settle({ error, summary: this.summary() });
  }

  private summary(): CallSummary {
    const { output, budget } = this;
    return {
      rowsIn: this.rowsIn,
      rowsOut: output.rowsOut,
      scriptMs: budget.scriptMs,
      nondeterministic: output.nondeterministic,
      table: output.table,
      timedOut: budget.timedOut,
      isolateRebuilds: this.isolateRebuilds,
    };
  }
}
