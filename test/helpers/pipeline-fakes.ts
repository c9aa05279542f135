/**
 * Fakes for the unit tests of the call pipeline (src/calls/pipeline.ts), so that reordering, held tables
 * and backpressure are tested by what happens, in an order the test chooses, never by timing: a
 * stream that records what the pipeline does to it and whose writes complete (or need a drain) on
 * command, and a task runner that holds every task until the test finishes it, in any order.
 */
import { EventEmitter } from 'node:events';

import type { Metadata, StatusObject } from '@grpc/grpc-js';

import { HeldBytes, openCallAccount } from '../../src/calls/held-bytes';
import { type CallOutcome, CallPipeline, type CallStream } from '../../src/calls/pipeline';
import type { PluginError } from '../../src/contract/errors';
import { encodeDualCell } from '../../src/contract/replies';
import { CELL_NUMBER, DataType, type EvaluationMode, type TableChunk, type TaskResult, type TaskSuccess } from '../../src/contract/task';
import type { TaskRequest, TaskRunner } from '../../src/sandboxes/task-runner';
import { encodeBundle, num } from './qlik-client';

/** What the pipeline uses of grpc-js's ServerDuplexStream, with everything it does recorded. */
export class FakeCallStream extends EventEmitter implements CallStream {
  paused = false;
  pauses = 0;
  resumes = 0;
  writableNeedDrain = false;
  /** While true, write callbacks wait for completeWrites(): the client is not taking replies. */
  holdWrites = false;
  readonly written: Uint8Array[] = [];
  readonly sentMetadata: Metadata[] = [];
  readonly errors: StatusObject[] = [];
  trailers: Metadata | undefined;
  private readonly waitingWrites: (() => void)[] = [];
  private ended = false;
  private finished = false;

  pause(): this {
    this.paused = true;
    this.pauses++;
    return this;
  }

  resume(): this {
    this.paused = false;
    this.resumes++;
    return this;
  }

  isPaused(): boolean {
    return this.paused;
  }

  write(reply: Uint8Array, callback: () => void): boolean {
    this.written.push(reply);
    if (this.holdWrites) this.waitingWrites.push(callback);
    else callback();
    return !this.writableNeedDrain;
  }

  /** Completes the writes held so far, as gRPC does once the client took them. */
  completeWrites(): void {
    for (const callback of this.waitingWrites.splice(0)) callback();
    this.finishIfDone();
  }

  /** gRPC's buffer emptied. */
  drain(): void {
    this.writableNeedDrain = false;
    this.emit('drain');
  }

  sendMetadata(metadata: Metadata): void {
    this.sentMetadata.push(metadata);
  }

  end(trailers: Metadata): this {
    this.trailers = trailers;
    this.ended = true;
    this.finishIfDone();
    return this;
  }

  /** Like a Node writable: 'finish' once ended and every write has completed. */
  private finishIfDone(): void {
    if (!this.ended || this.waitingWrites.length > 0 || this.finished) return;
    this.finished = true;
    this.emit('finish');
  }

  /** An error status ends the stream, as grpc-js's does: 'finish' follows once the writes so far complete. */
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event !== 'error') return super.emit(event, ...args);
    this.errors.push(args[0] as StatusObject);
    const listened = super.emit(event, ...args);
    this.ended = true;
    this.finishIfDone();
    return listened;
  }

  /** The first byte of each reply written: the fake runner's replies carry their task's number. */
  get writtenTasks(): number[] {
    return this.written.map((reply) => reply[0] as number);
  }
}

export interface HeldTask {
  readonly request: TaskRequest;
  readonly resolve: (result: TaskResult) => void;
  readonly reject: (error: PluginError) => void;
}

/** Holds every task it is given, in dispatch order, until the test finishes it. */
export class FakeRunner implements TaskRunner {
  readonly settings = { memoryLimitMb: 8 };
  readonly tasks: HeldTask[] = [];
  readonly closedCalls: number[] = [];

  run(request: TaskRequest): Promise<TaskResult> {
    return new Promise<TaskResult>((resolve, reject) => this.tasks.push({ request, resolve, reject }));
  }

  closeCall(callId: number): void {
    this.closedCalls.push(callId);
  }

  /** Tasks given and not yet finished. */
  get open(): number {
    return this.tasks.length - this.finished.size;
  }

  private readonly finished = new Set<number>();

  /** Finishes task `n` (in dispatch order) with `result`, or with a success whose one reply is [n]. */
  finish(n: number, result: TaskResult = success(n, this.task(n).request.rows)): void {
    this.finished.add(n);
    this.task(n).resolve(result);
  }

  fail(n: number, error: PluginError): void {
    this.finished.add(n);
    this.task(n).reject(error);
  }

  task(n: number): HeldTask {
    const task = this.tasks[n];
    if (!task) throw new Error(`no task ${n}: ${this.tasks.length} dispatched`);
    return task;
  }
}

export function success(n: number, rows = 1, extra: Partial<TaskSuccess> = {}): TaskSuccess {
  return { ok: true, replies: [Uint8Array.of(n, 0, 0, 0)], rowsOut: rows, nondeterministic: false, table: null, scriptMs: 1, ...extra };
}

/** A one-row table-shaped result: one object { value: n } (shape 'object') or array [n]. */
export function tableResult(n: number, shape: TableChunk['shape'] = 'object', key = 'value'): TaskSuccess {
  const cells = Buffer.alloc(32);
  const end = encodeDualCell(cells, 0, n, String(n));
  const table: TableChunk = {
    shape,
    keys: [shape === 'array' ? 'Field1' : key],
    rows: 1,
    cells: cells.subarray(0, end),
    cellEnds: Uint32Array.of(end),
    kinds: Uint8Array.of(CELL_NUMBER),
  };
  return success(n, 1, { table });
}

export function failure(code: PluginError['code'], message: string): TaskResult {
  return { ok: false, error: { code, message }, scriptMs: 1, isolateRebuilt: false, timedOut: code === 'DEADLINE_EXCEEDED' };
}

/** One BundledRows message of `rows` rows of one number. */
export function bundle(rows: number): Buffer {
  return encodeBundle(Array.from({ length: rows }, (_, i) => [num(i)]));
}

export interface PipelineUnderTest {
  readonly pipeline: CallPipeline;
  readonly stream: FakeCallStream;
  readonly runner: FakeRunner;
  readonly held: HeldBytes;
  readonly outcome: Promise<CallOutcome>;
}

/**
 * A pipeline over the fakes. chunkBytes 1 makes every row a task of its own (a row is a full task),
 * so task n holds row n.
 */
export function startPipeline(
  options: {
    mode?: EvaluationMode;
    tableAllowed?: boolean;
    maxInFlight?: number;
    maxReplyBytes?: number;
    timeoutMs?: number;
    /** false: the account is not closed by the stream's end, so a test sees exactly what the pipeline gives back. */
    accountClosedByStream?: boolean;
  } = {},
): PipelineUnderTest {
  const stream = new FakeCallStream();
  const runner = new FakeRunner();
  const held = new HeldBytes(64);
  const spec = {
    script: 'args[0]',
    paramTypes: [DataType.NUMERIC],
    boundNames: [''],
    returnType: DataType.NUMERIC,
    mode: options.mode ?? 'rows',
    tableAllowed: options.tableAllowed ?? false,
  };
  const pipeline = new CallPipeline(stream, spec, runner, {
    chunkBytes: 1,
    maxInFlight: options.maxInFlight ?? 4,
    timeoutMs: options.timeoutMs ?? 5_000,
    maxReplyBytes: options.maxReplyBytes ?? 1024,
    contextKey: 'test',
    owner: { host: '127.0.0.1', appId: 'app', userId: 'user' },
    account: options.accountClosedByStream === false ? held.open() : openCallAccount(held, stream),
  });
  return { pipeline, stream, runner, held, outcome: pipeline.run() };
}

/** Lets the promise callbacks of finished tasks run (microtasks only: no timers). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}
