/**
 * A call's rows between arrival and their task: the pieces gRPC messages were cut into (at row
 * boundaries, undecoded), and how many bytes of them make one task. A call may bring 100,000s of
 * messages, so pieces are taken from a head index rather than shift()ed. Task size starts at the
 * configured chunk size and shrinks for slow scripts, so the call's last round of tasks does not
 * leave threads idle while one long task finishes (a task should take about TARGET_TASK_MS).
 *
 * What the rows hold in the front is more than their bytes: each piece is a view and a record, and
 * each gRPC message its own Buffer, about 200 bytes a message whatever its size (1,000,000 one-row
 * messages of 13 bytes took the front 199 MB while 12 MB were counted). So pieces smaller than
 * SMALL_PIECE_BYTES are copied together into one buffer of up to COALESCE_MAX_BYTES (the message
 * is then free), and heldBytes, what the call's account counts, is every piece's bytes and
 * PIECE_OBJECT_BYTES, a shared buffer at its capacity.
 */
import type { RowChunk } from '../contract/rows';
import type { EvaluationMode } from '../contract/task';

const TARGET_TASK_MS = 20;
export const MIN_TASK_BYTES = 16 * 1024;
/** Pieces smaller than this are copied together (see the top of this file). */
const SMALL_PIECE_BYTES = 1024;
/** A shared buffer starts this large and doubles up to COALESCE_MAX_BYTES. */
const COALESCE_START_BYTES = 1024;
const COALESCE_MAX_BYTES = 64 * 1024;
/** A piece's view, its record and its message's Buffer object (measured: ~200 bytes a one-row message). */
export const PIECE_OBJECT_BYTES = 256;

export interface TakenRows {
  readonly chunks: RowChunk[];
  readonly bytes: number;
  readonly rows: number;
  /** What the pieces held in the call's account (see PendingRows.push). */
  readonly heldBytes: number;
}

interface Piece extends RowChunk {
  readonly heldBytes: number;
}

/** The last piece, when it is a buffer small pieces are copied into. */
interface SharedTail {
  buffer: Buffer;
  used: number;
  rows: number;
}

export class PendingRows {
  private pending: Piece[] = [];
  private head = 0;
  private pendingBytes = 0;
  private pendingRows = 0;
  private heldTotal = 0;
  private tail: SharedTail | undefined;
  /** Rows of one task, in bytes: chunkBytes, less for slow scripts (adapt). */
  private size: number;

  constructor(
    private readonly mode: EvaluationMode,
    private readonly chunkBytes: number,
  ) {
    this.size = chunkBytes;
  }

  get bytes(): number {
    return this.pendingBytes;
  }

  get rows(): number {
    return this.pendingRows;
  }

  get taskBytes(): number {
    return this.size;
  }

  /** Per-row calls: a full task's worth waits. */
  get full(): boolean {
    return this.mode === 'rows' && this.pendingBytes >= this.size;
  }

  /** How finely to cut incoming messages: small enough to make tasks of any size from (see adapt). */
  get pieceBytes(): number {
    return this.mode === 'rows' ? Math.min(this.chunkBytes, 4 * MIN_TASK_BYTES) : Number.POSITIVE_INFINITY;
  }

  /** Keeps the pieces; returns the bytes they add to heldBytes (for the call's account). */
  push(chunks: readonly RowChunk[]): number {
    const before = this.heldTotal;
    for (const chunk of chunks) {
      if (chunk.bytes.length < SMALL_PIECE_BYTES) this.copyToTail(chunk);
      else {
        this.tail = undefined;
        this.pending.push({ ...chunk, heldBytes: chunk.bytes.length + PIECE_OBJECT_BYTES });
        this.heldTotal += chunk.bytes.length + PIECE_OBJECT_BYTES;
      }
      this.pendingBytes += chunk.bytes.length;
      this.pendingRows += chunk.rows;
    }
    return this.heldTotal - before;
  }

  /** Appends a small piece to the last piece's shared buffer, grown or started as needed. */
  private copyToTail(chunk: RowChunk): void {
    const bytes = chunk.bytes.length;
    let tail = this.tail;
    // Never past one task's rows: a shared buffer is taken whole, so it must not blur the task size.
    const maxBytes = this.mode === 'rows' ? Math.min(COALESCE_MAX_BYTES, this.size) : COALESCE_MAX_BYTES;
    if (tail === undefined || tail.used + bytes > maxBytes) {
      tail = { buffer: Buffer.allocUnsafeSlow(COALESCE_START_BYTES), used: 0, rows: 0 };
      this.tail = tail;
      this.pending.push({ bytes: tail.buffer.subarray(0, 0), rows: 0, heldBytes: 0 });
    } else if (tail.used + bytes > tail.buffer.length) {
      const grown = Buffer.allocUnsafeSlow(Math.min(COALESCE_MAX_BYTES, Math.max(2 * tail.buffer.length, tail.used + bytes)));
      tail.buffer.copy(grown, 0, 0, tail.used);
      tail.buffer = grown;
    }
    tail.buffer.set(chunk.bytes, tail.used);
    tail.used += bytes;
    tail.rows += chunk.rows;
    const heldBytes = tail.buffer.length + PIECE_OBJECT_BYTES;
    const last = this.pending.length - 1;
    this.heldTotal += heldBytes - (this.pending[last] as Piece).heldBytes;
    this.pending[last] = { bytes: tail.buffer.subarray(0, tail.used), rows: tail.rows, heldBytes };
  }

  /** The waiting pieces of one task: about taskBytes of them, or all for an aggregation. */
  take(): TakenRows {
    let end = this.head;
    let bytes = 0;
    while (end < this.pending.length && (bytes < this.size || this.mode !== 'rows')) bytes += (this.pending[end++] as Piece).bytes.length;
    const pieces = this.pending.slice(this.head, end);
    // A shared buffer that leaves takes no more pieces.
    if (end === this.pending.length) this.tail = undefined;
    this.head = end;
    if (this.head === this.pending.length) {
      this.pending = [];
      this.head = 0;
    }
    let rows = 0;
    let heldBytes = 0;
    for (const piece of pieces) {
      rows += piece.rows;
      heldBytes += piece.heldBytes;
    }
    this.pendingBytes -= bytes;
    this.pendingRows -= rows;
    this.heldTotal -= heldBytes;
    return { chunks: pieces.map(({ bytes: view, rows: count }) => ({ bytes: view, rows: count })), bytes, rows, heldBytes };
  }

  /** Fast scripts keep chunkBytes (measured best: bench/RESULTS.md); slow ones get smaller tasks. */
  adapt(bytes: number, scriptMs: number): void {
    if (this.mode !== 'rows' || scriptMs <= TARGET_TASK_MS) return;
    const fitting = Math.floor((bytes * TARGET_TASK_MS) / scriptMs);
    this.size = Math.max(MIN_TASK_BYTES, Math.min(this.size, fitting));
  }

  /** Drops every waiting piece; returns what they held, for the call's account. */
  clear(): number {
    const heldBytes = this.heldTotal;
    this.pending = [];
    this.head = 0;
    this.tail = undefined;
    this.pendingBytes = 0;
    this.pendingRows = 0;
    this.heldTotal = 0;
    return heldBytes;
  }
}
