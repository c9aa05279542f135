/**
 * The glue of one EvaluateScript call: incoming BundledRows are cut at row boundaries into tasks of
 * about CHUNK_BYTES, sent to the pool with a bounded number in flight (reads pause when saturated),
 * and their encoded replies written back strictly in request order. The call's time budget is
 * shared by all its tasks. Table-shaped results are held until the last row is known.
 */
import { Metadata, type ServerDuplexStream } from '@grpc/grpc-js';

import { PluginError } from './errors';
import { toStatus } from './grpc-status';
import { tableTooLargeError } from './limit-errors';
import type { WorkerPool } from './pool';
import { splitRows, type RowChunk } from './rows';
import { assembleTable } from './table';
import type { EvaluateTask, ScriptSpec, TaskSuccess } from './task';

export const CACHE_HEADER = 'qlik-cache';

export interface PipelineOptions {
  /** Target size of the rows of one task. */
  readonly chunkBytes: number;
  /** Tasks of one call in the pool at once. */
  readonly maxInFlight: number;
  /** Script time of the whole call, all tasks together. */
  readonly timeoutMs: number;
  readonly maxReplyBytes: number;
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

export class CallPipeline {
  private readonly pending: RowChunk[] = [];
  private pendingBytes = 0;
  private pendingRows = 0;
  private rowsIn = 0;
  private rowsOut = 0;
  private nextTask = 0;
  private nextToWrite = 0;
  private inFlight = 0;
  private readonly done = new Map<number, TaskSuccess>();
  private inputEnded = false;
  private readPaused = false;
  private writeBlocked = false;
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
  private settle!: (outcome: { error: PluginError | null; summary: CallSummary }) => void;

  constructor(
    private readonly call: Stream,
    private readonly spec: ScriptSpec,
    private readonly pool: WorkerPool,
    private readonly options: PipelineOptions,
  ) {
    if (!spec.tableAllowed) this.tableState = 'streaming';
  }

  /** Runs the call to its end; resolves with the error that ended it, if any (never rejects). */
  run(): Promise<{ error: PluginError | null; summary: CallSummary }> {
    const outcome = new Promise<{ error: PluginError | null; summary: CallSummary }>((resolve) => (this.settle = resolve));
    this.call.on('data', (message: Buffer) => this.onMessage(message));
    this.call.on('end', () => {
      this.inputEnded = true;
      this.dispatchPending();
      this.maybeFinish();
    });
    this.call.on('cancelled', () => this.fail(new PluginError('CANCELLED', 'the client cancelled the call')));
    this.call.on('error', (error: unknown) => this.fail(PluginError.from(error)));
    this.call.on('drain', () => {
      this.writeBlocked = false;
      this.updateReading();
    });
    return outcome;
  }

  private onMessage(message: Buffer): void {
    if (this.finished) return;
    try {
      // Aggregations and parameterless calls run once over everything; keep whole messages.
      const chunks = splitRows(message, this.spec.mode === 'rows' ? this.options.chunkBytes : Number.POSITIVE_INFINITY);
      for (const chunk of chunks) {
        if (this.spec.mode === 'once') continue;
        this.pending.push(chunk);
        this.pendingBytes += chunk.bytes.length;
        this.pendingRows += chunk.rows;
        this.rowsIn += chunk.rows;
        if (this.spec.mode === 'rows' && this.pendingBytes >= this.options.chunkBytes) this.dispatchPending();
      }
    } catch (error) {
      this.fail(PluginError.from(error));
    }
  }

  private dispatchPending(): void {
    if (this.finished) return;
    const needsTask = this.pendingRows > 0 || (this.spec.mode !== 'rows' && this.inputEnded && this.nextTask === 0);
    if (!needsTask) return;
    const remainingMs = this.options.timeoutMs - this.scriptMs;
    if (remainingMs <= 0) return this.failTimeout();
    const task: EvaluateTask = {
      spec: this.spec,
      bundles: this.pending.map((c) => c.bytes),
      rows: this.pendingRows,
      firstRow: this.rowsIn - this.pendingRows,
      timeoutMs: Math.ceil(remainingMs),
      maxReplyBytes: this.options.maxReplyBytes,
    };
    this.pending.length = 0;
    this.pendingBytes = 0;
    this.pendingRows = 0;
    const index = this.nextTask++;
    this.inFlight++;
    this.updateReading();
    // The budget is read again when the task starts: queued tasks must not run on a stale one.
    this.pool.run(task, { signal: this.ended.signal, remainingMs: () => this.options.timeoutMs - this.scriptMs }).then(
      (result) => {
        this.inFlight--;
        this.scriptMs += result.scriptMs;
        if (result.ok) {
          this.done.set(index, result);
          this.writeReady();
        } else {
          if (result.isolateRebuilt) this.isolateRebuilds++;
          if (result.timedOut) this.timedOut = true;
          this.fail(PluginError.fromData(result.error));
        }
        this.updateReading();
        this.maybeFinish();
      },
      (error: unknown) => {
        this.inFlight--;
        this.fail(PluginError.from(error));
      },
    );
  }

  private failTimeout(): void {
    this.timedOut = true;
    this.fail(
      new PluginError('DEADLINE_EXCEEDED', `the script ran past its time limit of ${this.options.timeoutMs} ms (SSE_SCRIPT_TIMEOUT_MS)`),
    );
  }

  /** Reads pause while the call has its share of the pool or Qlik is not taking replies. */
  private updateReading(): void {
    const shouldPause = !this.finished && (this.inFlight >= this.options.maxInFlight || this.writeBlocked);
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
        this.heldBytes += result.replies.reduce((n, reply) => n + reply.byteLength, 0);
        if (this.heldBytes > this.pool.config.memoryLimitMb * 1024 * 1024) return this.fail(tableTooLargeError(this.pool.config.memoryLimitMb));
        continue;
      }
      this.tableState = 'streaming';
      for (const earlier of this.held.splice(0)) this.write(earlier);
      this.write(result);
    }
  }

  private write(result: TaskSuccess): void {
    this.rowsOut += result.rowsOut;
    for (const reply of result.replies) {
      if (!this.call.write(reply)) this.writeBlocked = true;
    }
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
    const trailers = new Metadata();
    if (this.nondeterministic) trailers.set(CACHE_HEADER, 'no-store');
    this.call.end(trailers);
    this.settle({ error: null, summary: this.summary() });
  }

  private writeHeld(): void {
    const chunks = this.held.map((r) => r.table).filter((t) => t !== null);
    const table = chunks.length === this.held.length ? assembleTable(chunks, this.options.maxReplyBytes) : null;
    if (table === null) {
      for (const result of this.held.splice(0)) this.write(result);
      return;
    }
    this.held.length = 0;
    if (this.nondeterministic) table.metadata.set(CACHE_HEADER, 'no-store');
    this.call.sendMetadata(table.metadata);
    this.wroteTable = true;
    this.rowsOut += table.rows;
    for (const reply of table.replies) this.call.write(reply);
  }

  private fail(error: PluginError): void {
    if (this.finished) return;
    this.finished = true;
    this.ended.abort();
    this.pending.length = 0;
    this.held.length = 0;
    this.done.clear();
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
