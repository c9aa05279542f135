/**
 * What a call's pipeline (src/calls/pipeline.ts) asks of whatever runs its tasks: run one task, forget a
 * call that ended, and the sandbox heap limit its checks name. The sandbox pool (src/sandboxes/pool.ts)
 * is the one real runner; the pipeline depends on this interface only, so its unit tests give it a
 * fake that holds tasks and finishes them in any order they like, without sandboxes or timing.
 */
import type { CallBudget } from '../calls/call-budget';
import type { CallSignal } from '../calls/call-signal';
import type { CallSpec } from '../contract/channel';
import type { TaskResult } from '../contract/task';

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
  /** The call's time budget (src/calls/call-budget.ts): read with each task sent. */
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
