/**
 * Puts a call's task results back in request order. A call's tasks run on several threads and
 * processes at once and finish in any order, but Qlik matches result rows to request rows by
 * position, so a result is released only when every earlier one has been: results in, by their
 * task's index (0, 1, 2, …); results out, strictly in that order. What waits here is counted by the
 * caller (src/calls/pipeline.ts holds its bytes in the call's account), not by this buffer.
 */
export class ReorderBuffer<T> {
  /** Results that arrived before an earlier one, by index. */
  private readonly waiting = new Map<number, T>();
  private nextIndex = 0;

  /** Results waiting for an earlier one. */
  get size(): number {
    return this.waiting.size;
  }

  /** The index of the next result to release. */
  get next(): number {
    return this.nextIndex;
  }

  put(index: number, result: T): void {
    if (index < this.nextIndex || this.waiting.has(index)) throw new Error(`result ${index} arrived twice`);
    this.waiting.set(index, result);
  }

  /** The next result in order, if it has arrived; undefined while an earlier one is missing. */
  shift(): T | undefined {
    const result = this.waiting.get(this.nextIndex);
    if (result === undefined) return undefined;
    this.waiting.delete(this.nextIndex++);
    return result;
  }

  /** The call failed: whatever waits is dropped, and returned so the caller gives its bytes back. */
  clear(): T[] {
    const dropped = [...this.waiting.values()];
    this.waiting.clear();
    return dropped;
  }
}
