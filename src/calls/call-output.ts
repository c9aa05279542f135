/**
 * The output side of one call: task results come back in any order, are put back in request order
 * (src/calls/reorder.ts), held while every one so far is table-shaped (src/calls/table.ts), and their
 * replies written (src/calls/reply-writer.ts), which blocks production while the client is not taking
 * them. The pipeline (src/calls/pipeline.ts) owns the input side and the call's phase; this owns what
 * the call answers, and the tallies of it the call's log line reports.
 *
 * A result's bytes are in the call's account (src/calls/held-bytes.ts) from its arrival until it is
 * written or dropped: its table part and objects go back when it is written, its replies once gRPC has
 * passed them on. What is still kept is always what the collections hold, so dropping it gives back
 * exactly that, with no running total to drift.
 */
import { Metadata } from '@grpc/grpc-js';

import type { TaskSuccess } from '../contract/task';
import type { HeldAccount } from './held-bytes';
import { ReorderBuffer } from './reorder';
import { type ReplyStream, ReplyWriter } from './reply-writer';
import { TableHold, tableChunkBytes } from './table';

export const CACHE_HEADER = 'qlik-cache';

/** What the output uses of grpc-js's ServerDuplexStream. */
export interface OutputStream extends ReplyStream {
  sendMetadata(metadata: Metadata): void;
}

export interface OutputLimits {
  readonly maxReplyBytes: number;
  /** The sandbox heap limit (SSE_MEMORY_LIMIT_MB): held and joined tables are capped by it too. */
  readonly memoryLimitMb: number;
  readonly tableAllowed: boolean;
}

export class CallOutput {
  /** Results that came back before an earlier task's. */
  private readonly done = new ReorderBuffer<TaskSuccess>();
  /** Results held while every one so far is table-shaped. */
  private readonly tables: TableHold;
  private readonly writer: ReplyWriter;
  rowsOut = 0;
  nondeterministic = false;
  /** The call answered with one joined table (and its header). */
  table = false;

  constructor(
    private readonly stream: OutputStream,
    private readonly account: HeldAccount,
    private readonly limits: OutputLimits,
    /** A write completed: the caller may produce again if no longer blocked. */
    taken: () => void,
  ) {
    this.tables = new TableHold(limits.tableAllowed, this.maxTableBytes, limits.memoryLimitMb);
    this.writer = new ReplyWriter(stream, limits.maxReplyBytes, account, taken);
  }

  /** Nothing more may be produced while the client is not taking replies. */
  get blocked(): boolean {
    return this.writer.blocked;
  }

  /** Results waiting for an earlier one. */
  get waiting(): number {
    return this.done.size;
  }

  private get maxTableBytes(): number {
    return this.limits.memoryLimitMb * 1024 * 1024;
  }

  /**
   * Task `index`'s result: counted, then written in its turn (or held as a table). Throws the busy
   * error when its bytes do not fit, or a table limit's error.
   */
  put(index: number, result: TaskSuccess): void {
    this.account.hold(resultBytes(result));
    this.done.put(index, result);
    for (let next = this.done.shift(); next !== undefined; next = this.done.shift()) {
      if (next.nondeterministic) this.nondeterministic = true;
      for (const ready of this.take(next)) this.write(ready);
    }
  }

  /** What to write now of the next result in order; one the table hold refuses is not kept: its bytes go back. */
  private take(result: TaskSuccess): TaskSuccess[] {
    try {
      return this.tables.take(result, resultBytes(result));
    } catch (error) {
      this.account.release(resultBytes(result));
      throw error;
    }
  }

  /** Writes a kept result: its table part is dropped, its replies stay counted until written. */
  private write(result: TaskSuccess): void {
    this.rowsOut += result.rowsOut;
    this.account.release(resultBytes(result) - repliesBytes(result));
    for (const reply of result.replies) this.writer.write(reply);
  }

  /**
   * Every result is in: held tables are joined and written with their header, or written as they
   * are (mixed shapes). Returns the call's trailers. Throws a table limit's error.
   */
  finish(): Metadata {
    if (this.tables.size > 0) this.writeHeld();
    const trailers = new Metadata();
    if (this.nondeterministic) trailers.set(CACHE_HEADER, 'no-store');
    return trailers;
  }

  private writeHeld(): void {
    let joinedBytes = 0;
    const heldBytes = this.tables.bytes;
    const table = this.tables.join({
      maxReplyBytes: this.limits.maxReplyBytes,
      maxBytes: this.maxTableBytes,
      memoryLimitMb: this.limits.memoryLimitMb,
      // The joined table is counted before it is built, beside the chunks it is built from.
      reserve: (bytes: number) => {
        joinedBytes = bytes;
        this.account.hold(bytes);
      },
    });
    if (table === null) {
      for (const result of this.tables.drain()) this.write(result);
      return;
    }
    this.account.release(heldBytes);
    if (this.nondeterministic) table.metadata.set(CACHE_HEADER, 'no-store');
    this.stream.sendMetadata(table.metadata);
    this.table = true;
    this.rowsOut += table.rows;
    const replyBytes = table.replies.reduce((n, reply) => n + reply.byteLength, 0);
    this.account.release(joinedBytes - replyBytes);
    for (const reply of table.replies) this.writer.write(reply);
  }

  /** The call failed: every result kept here goes, and its bytes back (replies being written stay counted). */
  drop(): void {
    let bytes = 0;
    for (const result of [...this.done.clear(), ...this.tables.drain()]) bytes += resultBytes(result);
    this.account.release(bytes);
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
