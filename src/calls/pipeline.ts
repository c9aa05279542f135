/**
 * The glue of one EvaluateScript call: incoming BundledRows are cut at row boundaries into tasks of
 * about SSE_CHUNK_KB, sent to the pool with a bounded number in flight (reads pause when saturated),
 * and their encoded replies written back strictly in request order. The call's time budget is
 * shared by all its tasks. Table-shaped results are held until the last row is known.
 *
 * Everything the call keeps in this process is counted in its account of the front-wide budget
 * (src/calls/held-bytes.ts, SSE_MAX_HELD_MB) from the moment it is kept to the moment it is gone: rows from
 * arrival until their task's result, results until written, written replies until gRPC has handed
 * them on. Nothing more is produced while the client is not taking replies (writeBlocked).
 *
 * Its parts live beside it: rows waiting for a task in src/calls/pending-rows.ts, the put-back-in-order
 * buffer in src/calls/reorder.ts, table results held until the last row in src/calls/table.ts. It asks only a
 * TaskRunner (src/sandboxes/task-runner.ts) to run tasks, so test/unit/pipeline.test.ts drives it with a fake.
 */
import { Metadata, type StatusObject } from '@grpc/grpc-js';
import type { CallSpec } from '../contract/channel';
import { PluginError } from '../contract/errors';
import { memoryLimitError, timeLimitError } from '../contract/limit-errors';
import { splitRows } from '../contract/rows';
import type { ScriptSpec, TaskResult, TaskSuccess } from '../contract/task';
import { toStatus } from '../grpc/status';
import { type CallBudget, CallSignal, type TaskOwner, type TaskRunner } from '../sandboxes/task-runner';
import type { HeldAccount, HeldBytes } from './held-bytes';
import { PendingRows } from './pending-rows';
import { ReorderBuffer } from './reorder';
import { type ReplyStream, ReplyWriter } from './reply-writer';
import { TableHold, tableChunkBytes } from './table';

export const CACHE_HEADER = 'qlik-cache';

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
  /** The front-wide budget of bytes held for calls (SSE_MAX_HELD_MB). */
  readonly held: HeldBytes;
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
export interface CallStream extends ReplyStream {
  on(event: 'data', listener: (message: Buffer) => void): unknown;
  on(event: 'end' | 'cancelled' | 'drain', listener: () => void): unknown;
  on(event: 'error', listener: (error: unknown) => void): unknown;
  once(event: string, listener: () => void): unknown;
  pause(): unknown;
  resume(): unknown;
  sendMetadata(metadata: Metadata): void;
  end(trailers: Metadata): unknown;
  emit(event: 'error', status: StatusObject): boolean;
}

export interface CallOutcome {
  readonly error: PluginError | null;
  readonly summary: CallSummary;
}

let nextCallId = 1;

export class CallPipeline {
  /** Rows not yet sent to the runner. */
  private readonly pending: PendingRows;
  /** What the call's log line and metrics report (summary()). */
  private readonly counts: { -readonly [K in keyof CallSummary]: CallSummary[K] } = {
    rowsIn: 0,
    rowsOut: 0,
    scriptMs: 0,
    nondeterministic: false,
    table: false,
    timedOut: false,
    isolateRebuilds: 0,
  };
  private rowsDispatched = 0;
  private nextTask = 0;
  private inFlight = 0;
  /** Indexes of the tasks sent and not finished. */
  private readonly running = new Set<number>();
  /** The earliest chunk's script error, held until every chunk before it has finished. */
  private scriptError: { readonly index: number; readonly error: PluginError } | undefined;
  /** Results that came back before an earlier task's. */
  private readonly done = new ReorderBuffer<TaskSuccess>();
  private inputEnded = false;
  private readPaused = false;
  /** Writes replies; blocked while the client is not taking them. */
  private readonly writer: ReplyWriter;
  /** Bytes of results kept here (done, tables): counted in the account until written or dropped. */
  private resultBytes = 0;
  private readonly account: HeldAccount;
  /** Results held while every one so far is table-shaped. */
  private readonly tables: TableHold;
  private finished = false;
  /** Aborted when the call ends early, so the pool drops its queued tasks. */
  private readonly ended = new CallSignal();
  /** Script time the call's tasks have used, as their results come back. */
  private readonly budget: CallBudget = { spentMs: 0 };
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
    this.tables = new TableHold(spec.tableAllowed, this.memoryLimitBytes, pool.settings.memoryLimitMb);
    this.account = options.held.open();
    this.writer = new ReplyWriter(call, options.maxReplyBytes, this.account, () => {
      if (!this.finished && !this.writeBlocked) this.pump();
    });
  }

  /** Nothing more is produced while the client is not taking replies (src/calls/reply-writer.ts). */
  private get writeBlocked(): boolean {
    return this.writer.blocked;
  }

  /** Runs the call to its end; resolves with the error that ended it, if any (never rejects). */
  run(): Promise<CallOutcome> {
    const outcome = new Promise<CallOutcome>((resolve) => (this.settle = resolve));
    this.call.on('data', (message: Buffer) => this.onMessage(message));
    this.call.on('end', () => {
      this.inputEnded = true;
      this.pump();
      this.maybeFinish();
    });
    // grpc-js says 'cancelled' when any call's stream closes, finished or not: an error is made only for an unfinished one.
    this.call.on('cancelled', () => {
      if (!this.finished) this.fail(new PluginError('CANCELLED', 'the client cancelled the call'));
    });
    this.call.on('error', (error: unknown) => this.fail(PluginError.from(error)));
    this.call.on('drain', () => this.pump());
    // However the call ends, what its account still holds (replies the client never took) goes back.
    for (const event of ['finish', 'close', 'cancelled']) this.call.once(event, () => this.account.close());
    return outcome;
  }

  private onMessage(message: Buffer): void {
    if (this.finished) return;
    try {
      // Parameterless calls run once, whatever arrives; aggregations keep every row until the end.
      if (this.spec.mode === 'once') return;
      const chunks = splitRows(message, this.pending.pieceBytes);
      const added = this.pending.push(chunks);
      try {
        this.account.hold(added);
      } catch (error) {
        // Nothing of this message was counted: the rest of what waits goes back, then the call fails.
        this.account.release(this.pending.clear() - added);
        throw error;
      }
      for (const chunk of chunks) this.counts.rowsIn += chunk.rows;
      // An aggregation's rows all go into one sandbox: more than its heap can hold cannot succeed.
      if (this.spec.mode === 'aggregate' && this.pending.bytes > this.memoryLimitBytes) {
        return this.fail(
          memoryLimitError(this.pool.settings.memoryLimitMb, `the aggregation's rows (${this.pending.bytes} bytes) do not fit`),
        );
      }
      this.pump();
    } catch (error) {
      this.fail(PluginError.from(error));
    }
  }

  private get memoryLimitBytes(): number {
    return this.pool.settings.memoryLimitMb * 1024 * 1024;
  }

  /**
   * Starts tasks while the call has room in the pool and a full chunk (or the last rows) waits, and
   * Qlik takes the replies: while writes are blocked nothing more is produced.
   */
  private pump(): void {
    while (!this.finished && !this.writeBlocked && this.scriptError === undefined && this.inFlight < this.options.maxInFlight) {
      const last = this.inputEnded && (this.pending.rows > 0 || (this.spec.mode !== 'rows' && this.nextTask === 0));
      // The first rows go at once, whatever their size: a script that does not compile, or fails on
      // its first row, is reported while the client is still sending, not after its last message.
      const first = this.spec.mode === 'rows' && this.nextTask === 0 && this.pending.rows > 0;
      if (!this.pending.full && !last && !first) break;
      this.dispatch();
    }
    this.updateReading();
  }

  /** Sends the waiting chunks, up to about taskBytes, to the pool as one task. */
  private dispatch(): void {
    if (this.options.timeoutMs - this.budget.spentMs <= 0) return this.failTimeout();
    const { chunks, bytes, rows, heldBytes } = this.pending.take();
    const firstRow = this.rowsDispatched;
    this.rowsDispatched += rows;
    const index = this.nextTask++;
    this.inFlight++;
    this.running.add(index);
    // No copy: the views keep gRPC's message buffers alive until the task's result (held bytes count them).
    const request = {
      callId: this.callId,
      owner: this.options.owner,
      call: this.callSpec,
      chunks: chunks.map((chunk) => chunk.bytes),
      rows,
      firstRow,
      budget: this.budget,
      signal: this.ended,
    };
    this.pool.run(request).then(
      (result) => {
        this.inFlight--;
        this.running.delete(index);
        this.account.release(heldBytes);
        this.onResult(index, bytes, result);
      },
      (error: unknown) => {
        this.inFlight--;
        this.running.delete(index);
        this.account.release(heldBytes);
        this.fail(PluginError.from(error));
      },
    );
  }

  private onResult(index: number, bytes: number, result: TaskResult): void {
    this.counts.scriptMs += result.scriptMs;
    this.budget.spentMs += result.scriptMs;
    if (this.finished) return;
    this.pending.adapt(bytes, result.scriptMs);
    try {
      if (!result.ok) {
        if (result.isolateRebuilt) this.counts.isolateRebuilds++;
        if (result.timedOut) this.counts.timedOut = true;
        if (result.error.code !== 'INVALID_ARGUMENT') throw PluginError.fromData(result.error);
        return this.holdScriptError(index, PluginError.fromData(result.error));
      }
      this.account.hold(resultBytes(result));
      this.resultBytes += resultBytes(result);
      this.done.put(index, result);
      this.writeReady();
    } catch (error) {
      return this.fail(PluginError.from(error));
    }
    this.failOnEarliestScriptError();
    this.pump();
    this.maybeFinish();
  }

  /**
   * A script error names the row it failed on; chunks finish in any order, so the call fails with the
   * error of the earliest chunk that failed, once every chunk before it has finished: the row an app
   * author is told is the first row that fails. Nothing more is sent meanwhile.
   */
  private holdScriptError(index: number, error: PluginError): void {
    if (this.scriptError === undefined || index < this.scriptError.index) this.scriptError = { index, error };
    this.failOnEarliestScriptError();
  }

  private failOnEarliestScriptError(): void {
    const held = this.scriptError;
    if (held === undefined) return;
    for (const index of this.running) if (index < held.index) return;
    this.fail(held.error);
  }

  private failTimeout(): void {
    this.counts.timedOut = true;
    this.fail(timeLimitError(this.options.timeoutMs));
  }

  /**
   * Reads pause while a full chunk already waits for room in the pool (the call has its share of
   * the workers) or Qlik is not taking replies; aggregations read everything.
   */
  private updateReading(): void {
    const shouldPause = !this.finished && (this.pending.full || this.writeBlocked);
    if (shouldPause && !this.readPaused) this.call.pause();
    else if (!shouldPause && this.readPaused) this.call.resume();
    this.readPaused = shouldPause;
  }

  /** Writes the results now in request order; table-shaped ones are held (src/calls/table.ts). */
  private writeReady(): void {
    for (let result = this.done.shift(); result !== undefined; result = this.finished ? undefined : this.done.shift()) {
      if (result.nondeterministic) this.counts.nondeterministic = true;
      let ready: TaskSuccess[];
      try {
        ready = this.tables.take(result, resultBytes(result));
      } catch (error) {
        this.fail(PluginError.from(error));
        return;
      }
      for (const next of ready) this.write(next);
    }
  }

  /** Writes a kept result: its table part is dropped, its replies stay counted until written. */
  private write(result: TaskSuccess): void {
    this.counts.rowsOut += result.rowsOut;
    this.resultBytes -= resultBytes(result);
    this.account.release(resultBytes(result) - repliesBytes(result));
    for (const reply of result.replies) this.writer.write(reply);
  }

  private maybeFinish(): void {
    if (this.finished || !this.inputEnded || this.inFlight > 0 || this.pending.rows > 0 || this.done.size > 0) return;
    if (this.spec.mode !== 'rows' && this.nextTask === 0) return;
    try {
      if (this.tables.size > 0) this.writeHeld();
    } catch (error) {
      this.fail(PluginError.from(error));
      return;
    }
    this.finished = true;
    this.pool.closeCall(this.callId);
    const trailers = new Metadata();
    if (this.counts.nondeterministic) trailers.set(CACHE_HEADER, 'no-store');
    this.call.end(trailers);
    this.settle({ error: null, summary: this.summary() });
  }

  /** The call's last row is in: its held tables are joined and written, or written as they are. */
  private writeHeld(): void {
    let joinedBytes = 0;
    const limits = {
      maxReplyBytes: this.options.maxReplyBytes,
      maxBytes: this.memoryLimitBytes,
      memoryLimitMb: this.pool.settings.memoryLimitMb,
      // The joined table is counted before it is built, beside the chunks it is built from.
      reserve: (bytes: number) => {
        joinedBytes = bytes;
        this.account.hold(bytes);
      },
    };
    const table = this.tables.join(limits);
    if (table === null) {
      for (const result of this.tables.drain()) this.write(result);
      return;
    }
    this.account.release(this.resultBytes);
    this.resultBytes = 0;
    if (this.counts.nondeterministic) table.metadata.set(CACHE_HEADER, 'no-store');
    this.call.sendMetadata(table.metadata);
    this.counts.table = true;
    this.counts.rowsOut += table.rows;
    const replyBytes = table.replies.reduce((n, reply) => n + reply.byteLength, 0);
    this.account.release(joinedBytes - replyBytes);
    for (const reply of table.replies) this.writer.write(reply);
  }

  private fail(error: PluginError): void {
    if (this.finished) return;
    this.finished = true;
    this.ended.abort();
    this.pool.closeCall(this.callId);
    this.tables.drain();
    this.done.clear();
    // Dropped here; rows of tasks in flight go back as they settle, replies being written as they are.
    this.account.release(this.pending.clear() + this.resultBytes);
    this.resultBytes = 0;
    if (this.readPaused) this.call.resume();
    if (error.code !== 'CANCELLED') this.call.emit('error', toStatus(error));
    this.settle({ error, summary: this.summary() });
  }

  private summary(): CallSummary {
    return { ...this.counts };
  }
}

/**
 * What a decoded result takes beyond its bytes: the result and table objects, the typed-array views
 * of its frame, the frame's own fields (about 1 KB a result measured with process.memoryUsage over
 * 200,000 of them): a call held as many tiny table chunks is counted at what it holds, not its cells.
 */
const RESULT_OBJECT_BYTES = 1_024;

/** What a result takes while kept here: its replies, its table chunk (names included) and its objects. */
function resultBytes(result: TaskSuccess): number {
  return RESULT_OBJECT_BYTES + repliesBytes(result) + (result.table === null ? 0 : tableChunkBytes(result.table));
}

function repliesBytes(result: TaskSuccess): number {
  return result.replies.reduce((n, reply) => n + reply.byteLength, 0);
}
