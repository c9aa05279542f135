/**
 * A call's early end, as its queued tasks need to know it: a flag and the listeners to tell. The
 * pipeline (src/calls/pipeline.ts) raises it when the call fails or is cancelled; the pool
 * (src/sandboxes/pool.ts) listens so it drops the call's tasks still queued, those waiting to run
 * again included. An AbortController (an EventTarget) per call cost the front ~15 µs of each one-row
 * call (profile, bench/RESULTS.md).
 */
export class CallSignal {
  aborted = false;
  private readonly listeners = new Set<() => void>();

  add(listener: () => void): void {
    if (!this.aborted) this.listeners.add(listener);
  }

  remove(listener: () => void): void {
    this.listeners.delete(listener);
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    const listeners = [...this.listeners];
    this.listeners.clear();
    for (const listener of listeners) listener();
  }
}
