/**
 * The write side of a call's backpressure: replies go to gRPC as they are ready, but while the
 * client is not taking them (gRPC's buffer is full, or more than a reply message's worth is still on
 * its way) the pipeline produces nothing more, so replies in memory per call stay about one message
 * ahead of the client. A reply's bytes are already in the call's account (src/calls/held-bytes.ts) when it
 * is written, and go back when gRPC has passed it on.
 */
import type { HeldAccount } from './held-bytes';

/** What it uses of grpc-js's ServerDuplexStream. */
export interface ReplyStream {
  /** gRPC calls back once it has passed the reply on. */
  write(reply: Uint8Array, callback: () => void): boolean;
  readonly writableNeedDrain: boolean;
}

export class ReplyWriter {
  /** Bytes of replies handed to write() whose write has not completed: the client has not taken them. */
  private writingBytes = 0;

  constructor(
    private readonly call: ReplyStream,
    private readonly maxReplyBytes: number,
    private readonly account: HeldAccount,
    /** A write completed: the caller may produce again if no longer blocked. */
    private readonly taken: () => void,
  ) {}

  get blocked(): boolean {
    return this.writingBytes > this.maxReplyBytes || this.call.writableNeedDrain;
  }

  write(reply: Uint8Array): void {
    const bytes = reply.byteLength;
    this.writingBytes += bytes;
    this.call.write(reply, () => {
      this.writingBytes -= bytes;
      this.account.release(bytes);
      this.taken();
    });
  }
}
