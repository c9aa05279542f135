/**
 * A call's rows between arrival and their task: the pieces gRPC messages were cut into (at row
 * boundaries, undecoded), and how many bytes of them make one task. A call may bring 100,000s of
 * messages, so pieces are taken from a head index rather than shift()ed. Task size starts at the
 * configured chunk size and shrinks for slow scripts, so the call's last round of tasks does not
 * leave threads idle while one long task finishes (a task should take about TARGET_TASK_MS).
 */
import type { RowChunk } from './shared/rows';
import type { EvaluationMode } from './shared/task';

const TARGET_TASK_MS = 20;
export const MIN_TASK_BYTES = 16 * 1024;

export interface TakenRows {
  readonly chunks: RowChunk[];
  readonly bytes: number;
  readonly rows: number;
}

export class PendingRows {
  private pending: RowChunk[] = [];
  private head = 0;
  private pendingBytes = 0;
  private pendingRows = 0;
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

  push(chunks: readonly RowChunk[]): void {
    for (const chunk of chunks) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.bytes.length;
      this.pendingRows += chunk.rows;
    }
  }

  /** The waiting pieces of one task: about taskBytes of them, or all for an aggregation. */
  take(): TakenRows {
    let end = this.head;
    let bytes = 0;
    while (end < this.pending.length && (bytes < this.size || this.mode !== 'rows'))
      bytes += (this.pending[end++] as RowChunk).bytes.length;
    const chunks = this.pending.slice(this.head, end);
    this.head = end;
    if (this.head === this.pending.length) {
      this.pending = [];
      this.head = 0;
    }
    let rows = 0;
    for (const chunk of chunks) rows += chunk.rows;
    this.pendingBytes -= bytes;
    this.pendingRows -= rows;
    return { chunks, bytes, rows };
  }

  /** Fast scripts keep chunkBytes (measured best: bench/RESULTS.md); slow ones get smaller tasks. */
  adapt(bytes: number, scriptMs: number): void {
    if (this.mode !== 'rows' || scriptMs <= TARGET_TASK_MS) return;
    const fitting = Math.floor((bytes * TARGET_TASK_MS) / scriptMs);
    this.size = Math.max(MIN_TASK_BYTES, Math.min(this.size, fitting));
  }

  /** Drops every waiting piece; returns their bytes, for the call's account. */
  clear(): number {
    const bytes = this.pendingBytes;
    this.pending = [];
    this.head = 0;
    this.pendingBytes = 0;
    this.pendingRows = 0;
    return bytes;
  }
}
