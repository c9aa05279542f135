/**
 * What a call's pipeline (src/calls/pipeline.ts) asks of whatever runs its tasks: run one task, forget a
 * call that ended, and the sandbox heap limit its checks name. The sandbox pool (src/sandboxes/pool.ts)
 * is the one real runner; the pipeline depends on this interface only, so its unit tests give it a
 * fake that holds tasks and finishes them in any order they like, without sandboxes or timing.
 */
import type { CallSpec } from '../contract/channel';
import type { TaskResult } from '../contract/task';

/** A call's script time, shared by its tasks: the front adds each result's, and sends the sum with each task. */
export interface CallBudget {
  spentMs: number;
}

/** Whose call it is, from its request header: the queue shares threads fairly between apps, then their users. */
/** Whose task it is, for the queue's fair shares: the client's host, then the app and user it names. */
export interface TaskOwner {
  /** The client's address without its port: app and user ids are what a client says, its host is not. */
  readonly host: string;
  readonly appId: string;
  readonly userId: string;
}

export interface TaskRequest {
  readonly callId: number;
  readonly owner: TaskOwner;
  readonly call: CallSpec;
  /** The rows, as the views of gRPC's messages they were cut from: written to the sandbox as they are. */
  readonly chunks: readonly Uint8Array[];
  readonly rows: number;
  readonly firstRow: number;
  readonly budget: CallBudget;
  /** Aborted when the call ends early: its tasks still queued are dropped. */
  readonly signal?: CallSignal;
}

export interface TaskRunner {
  /** Resolves with the task's result (a script error included); rejects when it could not run. */
  run(request: TaskRequest): Promise<TaskResult>;
  /** The call ended: whatever kept state for it may forget it. */
  closeCall(callId: number): void;
  readonly settings: { readonly memoryLimitMb: number };
}

/**
 * A call's early end, as its queued tasks need to know it: a flag and the listeners to tell. An
 * AbortController (an EventTarget) per call cost the front ~15 µs of each one-row call (profile).
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
