/**
 * The glue of one EvaluateScript call: incoming BundledRows are cut at row boundaries into tasks of
 * about SSE_CHUNK_KB, sent to the pool with a bounded number in flight (reads pause when saturated),
 * and their encoded replies written back strictly in request order. The call's time budget is
 * shared by all its tasks. Table-shaped results are held until the last row is known.
 *
 * Everything the call keeps in this process is counted in its account of the front-wide budget
 * (src/held-bytes.ts, SSE_MAX_HELD_MB) from the moment it is kept to the moment it is gone: rows from
 * arrival until their task's result, results until written, written replies until gRPC has handed
 * them on. Nothing more is produced while the client is not taking replies (writeBlocked).
 */
import { Metadata, type ServerDuplexStream } from '@grpc/grpc-js';

import { PluginError } from './shared/errors';
import { toStatus } from './grpc-status';
import { memoryLimitError, tableTooLargeError, timeLimitError } from './shared/limit-errors';
import type { HeldAccount, HeldBytes } from './held-bytes';
import type { CallBudget, SandboxPool } from './sandbox-pool';
import type { CallSpec } from './shared/channel';
import { packChunks, splitRows, type RowChunk } from './shared/rows';
import { assembleTable } from './table';
import type { ScriptSpec, TaskResult, TaskSuccess } from './shared/task';

export const CACHE_HEADER = 'qlik-cache';

export interface PipelineOptions {
  /** Target size of the rows of one task. */
  readonly chunkBytes: number;
  /** Tasks of one call in the pool at once. */
  readonly maxInFlight: number;
  /** Script time of the whole call, all tasks together. */
  readonly timeoutMs: number;
  readonly maxReplyBytes: number;
  /** Calls with the same key may reuse a sandbox context in turn (src/context-key.ts). */
  readonly contextKey: string;
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

type Stream = ServerDuplexStream<Buffer, Uint8Array>;

let nextCallId = 1;
const TARGET_TASK_MS = 20;
const MIN_TASK_BYTES = 16 * 1024;

export class CallPipeline {
  /** Row chunks not yet sent, from pendingHead on (an index, not shift(): a call may bring 100,000s of messages). */
  private pending: RowChunk[] = [];
  private pendingHead = 0;
  private pendingBytes = 0;
  private pendingRows = 0;
  private rowsIn = 0;
  private rowsDispatched = 0;
  private rowsOut = 0;
  private nextTask = 0;
  private nextToWrite = 0;
  private inFlight = 0;
  private readonly done = new Map<number, TaskSuccess>();
  private inputEnded = false;
  private readPaused = false;
  /** Bytes of replies handed to call.write() whose write has not completed: the client has not taken them. */
  private writingBytes = 0;
  /** Bytes of results kept here (done, held): counted in the account until written or dropped. */
  private resultBytes = 0;
  private readonly account: HeldAccount;
  private scriptMs = 0;
  private nondeterministic = false;
  private timedOut = false;
  private isolateRebuilds = 0;
  /** undecided until the first chunk's result: held while every chunk so far is table-shaped. */
  private tableState: 'undecided' | 'holding' | 'streaming' = 'undecided';
  private readonly held: TaskSuccess[] = [];
  private heldBytes = 0;
  private wroteTable = false;
  private finished = false;
  /** Aborted when the call ends early, so the pool drops its queued tasks. */
  private readonly ended = new AbortController();
  /** Script time the call's tasks have used, as their results come back. */
  private readonly budget: CallBudget = { spentMs: 0 };
  private readonly callId = nextCallId++;
  private readonly callSpec: CallSpec;
  /** Rows of one task, in bytes: chunkBytes, less for slow scripts (adaptTaskBytes). */
  private taskBytes: number;
  private settle!: (outcome: { error: PluginError | null; summary: CallSummary }) => void;

  constructor(
    private readonly call: Stream,
    private readonly spec: ScriptSpec,
    private readonly pool: SandboxPool,
    private readonly options: PipelineOptions,
  ) {
    if (!spec.tableAllowed) this.tableState = 'streaming';
    this.callSpec = { spec, contextKey: options.contextKey, callTimeoutMs: options.timeoutMs, maxReplyBytes: options.maxReplyBytes };
    this.taskBytes = options.chunkBytes;
    this.account = options.held.open();
  }

  /**
   * While the client is not taking replies (gRPC's buffer is full, or a reply message's worth is still
   * on its way), nothing more is produced: replies in memory per call stay about one message ahead.
   */
  private get writeBlocked(): boolean {
    return this.writingBytes > this.options.maxReplyBytes || this.call.writableNeedDrain;
  }

  /** Runs the call to its end; resolves with the error that ended it, if any (never rejects). */
  run(): Promise<{ error: PluginError | null; summary: CallSummary }> {
    const outcome = new Promise<{ error: PluginError | null; summary: CallSummary }>((resolve) => (this.settle = resolve));
    this.call.on('data', (message: Buffer) => this.onMessage(message));
    this.call.on('end', () => {
      this.inputEnded = true;
      this.pump();
      this.maybeFinish();
    });
    this.call.on('cancelled', () => this.fail(new PluginError('CANCELLED', 'the client cancelled the call')));
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
      // Pieces small enough to make tasks of any size from (see adaptTaskBytes).
      const target = this.spec.mode === 'rows' ? Math.min(this.options.chunkBytes, 4 * MIN_TASK_BYTES) : Number.POSITIVE_INFINITY;
      const chunks = splitRows(message, target);
      this.account.hold(chunks.reduce((n, chunk) => n + chunk.bytes.length, 0));
      for (const chunk of chunks) {
        this.pending.push(chunk);
        this.pendingBytes += chunk.bytes.length;
        this.pendingRows += chunk.rows;
        this.rowsIn += chunk.rows;
      }
      // An aggregation's rows all go into one sandbox: more than its heap can hold cannot succeed.
      if (this.spec.mode === 'aggregate' && this.pendingBytes > this.memoryLimitBytes) {
        return this.fail(memoryLimitError(this.pool.settings.memoryLimitMb, `the aggregation's rows (${this.pendingBytes} bytes) do not fit`));
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
    while (!this.finished && !this.writeBlocked && this.inFlight < this.options.maxInFlight) {
      const full = this.spec.mode === 'rows' && this.pendingBytes >= this.taskBytes;
      const last = this.inputEnded && (this.pendingRows > 0 || (this.spec.mode !== 'rows' && this.nextTask === 0));
      if (!full && !last) break;
      this.dispatch();
    }
    this.updateReading();
  }

  /** Sends the waiting chunks, up to about taskBytes, to the pool as one task. */
  private dispatch(): void {
    if (this.options.timeoutMs - this.budget.spentMs <= 0) return this.failTimeout();
    const chunks = this.takePending();
    let bytes = 0;
    let rows = 0;
    for (const chunk of chunks) {
      bytes += chunk.bytes.length;
      rows += chunk.rows;
    }
    this.pendingBytes -= bytes;
    this.pendingRows -= rows;
    const firstRow = this.rowsDispatched;
    this.rowsDispatched += rows;
    const index = this.nextTask++;
    this.inFlight++;
    // One packed copy: the chunks are views of gRPC's message buffers, which need not stay alive.
    const request = { callId: this.callId, call: this.callSpec, bytes: packChunks(chunks), rows, firstRow, budget: this.budget, signal: this.ended.signal };
    this.pool.run(request).then(
      (result) => {
        this.inFlight--;
        this.account.release(bytes);
        this.onResult(index, bytes, result);
      },
      (error: unknown) => {
        this.inFlight--;
        this.account.release(bytes);
        this.fail(PluginError.from(error));
      },
    );
  }

  private onResult(index: number, bytes: number, result: TaskResult): void {
    this.scriptMs += result.scriptMs;
    this.budget.spentMs += result.scriptMs;
    if (this.finished) return;
    this.adaptTaskBytes(bytes, result.scriptMs);
    try {
      if (!result.ok) {
        if (result.isolateRebuilt) this.isolateRebuilds++;
        if (result.timedOut) this.timedOut = true;
        throw PluginError.fromData(result.error);
      }
      this.account.hold(resultBytes(result));
      this.resultBytes += resultBytes(result);
      this.done.set(index, result);
      this.writeReady();
    } catch (error) {
      return this.fail(PluginError.from(error));
    }
    this.pump();
    this.maybeFinish();
  }

  /** The waiting chunks of one task: about taskBytes of them, or all for an aggregation. */
  private takePending(): RowChunk[] {
    let end = this.pendingHead;
    let bytes = 0;
    while (end < this.pending.length && (bytes < this.taskBytes || this.spec.mode !== 'rows')) bytes += (this.pending[end++] as RowChunk).bytes.length;
    const chunks = this.pending.slice(this.pendingHead, end);
    this.pendingHead = end;
    if (this.pendingHead === this.pending.length) {
      this.pending = [];
      this.pendingHead = 0;
    }
    return chunks;
  }

  /**
   * Slow scripts get smaller tasks, so the call's last round does not leave workers idle: a task
   * should take about TARGET_TASK_MS. Fast scripts keep chunkBytes (measured best: bench/RESULTS.md).
   */
  private adaptTaskBytes(bytes: number, scriptMs: number): void {
    if (this.spec.mode !== 'rows' || scriptMs <= TARGET_TASK_MS) return;
    const fitting = Math.floor((bytes * TARGET_TASK_MS) / scriptMs);
    this.taskBytes = Math.max(MIN_TASK_BYTES, Math.min(this.taskBytes, fitting));
  }

  private failTimeout(): void {
    this.timedOut = true;
    this.fail(timeLimitError(this.options.timeoutMs));
  }

  /**
   * Reads pause while a full chunk already waits for room in the pool (the call has its share of
   * the workers) or Qlik is not taking replies; aggregations read everything.
   */
  private updateReading(): void {
    const saturated = this.spec.mode === 'rows' && this.pendingBytes >= this.taskBytes;
    const shouldPause = !this.finished && (saturated || this.writeBlocked);
    if (shouldPause && !this.readPaused) this.call.pause();
    else if (!shouldPause && this.readPaused) this.call.resume();
    this.readPaused = shouldPause;
  }

  private writeReady(): void {
    for (let result = this.done.get(this.nextToWrite); result !== undefined && !this.finished; result = this.done.get(this.nextToWrite)) {
      this.done.delete(this.nextToWrite++);
      if (result.nondeterministic) this.nondeterministic = true;
      if (this.tableState !== 'streaming' && result.table !== null) {
        this.tableState = 'holding';
        this.held.push(result);
        // Held tables wait in this process until the last row: cap them like any result.
        this.heldBytes += resultBytes(result);
        if (this.heldBytes > this.memoryLimitBytes) return this.fail(tableTooLargeError(this.pool.settings.memoryLimitMb));
        continue;
      }
      this.tableState = 'streaming';
      for (const earlier of this.held.splice(0)) this.write(earlier);
      this.write(result);
    }
  }

  /** Writes a kept result: its table cells are dropped, its replies stay counted until written. */
  private write(result: TaskSuccess): void {
    this.rowsOut += result.rowsOut;
    const cellBytes = result.table?.cells.byteLength ?? 0;
    this.resultBytes -= resultBytes(result);
    this.account.release(cellBytes);
    for (const reply of result.replies) this.writeReply(reply);
  }

  /** Writes a reply whose bytes the account already holds; they go back once gRPC has passed it on. */
  private writeReply(reply: Uint8Array): void {
    const bytes = reply.byteLength;
    this.writingBytes += bytes;
    this.call.write(reply, () => {
      this.writingBytes -= bytes;
      this.account.release(bytes);
      if (!this.finished && !this.writeBlocked) this.pump();
    });
  }

  private maybeFinish(): void {
    if (this.finished || !this.inputEnded || this.inFlight > 0 || this.pendingRows > 0 || this.done.size > 0) return;
    if (this.spec.mode !== 'rows' && this.nextTask === 0) return;
    try {
      if (this.held.length > 0) this.writeHeld();
    } catch (error) {
      this.fail(PluginError.from(error));
      return;
    }
    this.finished = true;
    this.pool.closeCall(this.callId);
    const trailers = new Metadata();
    if (this.nondeterministic) trailers.set(CACHE_HEADER, 'no-store');
    this.call.end(trailers);
    this.settle({ error: null, summary: this.summary() });
  }

  private writeHeld(): void {
    const chunks = this.held.map((r) => r.table).filter((t) => t !== null);
    let joinedBytes = 0;
    const limits = {
      maxReplyBytes: this.options.maxReplyBytes,
      maxBytes: this.memoryLimitBytes,
      memoryLimitMb: this.pool.settings.memoryLimitMb,
      // The joined table is counted before it is built, beside the chunks it is built from.
      reserve: (bytes: number) => this.account.hold((joinedBytes = bytes)),
    };
    const table = chunks.length === this.held.length ? assembleTable(chunks, limits) : null;
    if (table === null) {
      for (const result of this.held.splice(0)) this.write(result);
      return;
    }
    this.held.length = 0;
    this.account.release(this.resultBytes);
    this.resultBytes = 0;
    if (this.nondeterministic) table.metadata.set(CACHE_HEADER, 'no-store');
    this.call.sendMetadata(table.metadata);
    this.wroteTable = true;
    this.rowsOut += table.rows;
    const replyBytes = table.replies.reduce((n, reply) => n + reply.byteLength, 0);
    this.account.release(joinedBytes - replyBytes);
    for (const reply of table.replies) this.writeReply(reply);
  }

  private fail(error: PluginError): void {
    if (this.finished) return;
    this.finished = true;
    this.ended.abort();
    this.pool.closeCall(this.callId);
    this.pending = [];
    this.pendingHead = 0;
    this.held.length = 0;
    this.done.clear();
    // Dropped here; rows of tasks in flight go back as they settle, replies being written as they are.
    this.account.release(this.pendingBytes + this.resultBytes);
    this.pendingBytes = 0;
    this.resultBytes = 0;
    if (this.readPaused) this.call.resume();
    if (error.code !== 'CANCELLED') this.call.emit('error', toStatus(error));
    this.settle({ error, summary: this.summary() });
  }

  private summary(): CallSummary {
    return {
      rowsIn: this.rowsIn,
      rowsOut: this.rowsOut,
      scriptMs: this.scriptMs,
      nondeterministic: this.nondeterministic,
      table: this.wroteTable,
      timedOut: this.timedOut,
      isolateRebuilds: this.isolateRebuilds,
    };
  }
}

/** What a result takes while kept here: its replies and its encoded table cells. */
function resultBytes(result: TaskSuccess): number {
  return result.replies.reduce((n, reply) => n + reply.byteLength, 0) + (result.table?.cells.byteLength ?? 0);
}
