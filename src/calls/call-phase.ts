/**
 * Where one call is in its life, as the pipeline (src/calls/pipeline.ts) needs to know it: one field,
 * written only through moveTo, which refuses a transition the table below does not list. What the
 * pipeline does with a message, a result or the end of its input follows from the phase, not from a
 * set of flags:
 *
 * reading   the client is still sending: a task starts whenever a full chunk of rows waits.
 * draining  the last row is in: what waits goes out, results come back and are written; the call
 *           ends when nothing waits, runs or is out of order (held tables are joined and written then).
 * failing   a chunk's script failed: nothing more starts, and the call fails with the error of the
 *           earliest failed chunk once every chunk before it has finished (the row an author is told
 *           is the first row that fails, whatever order chunks finish in).
 * finished  the call ended, answered or failed: later results and events change nothing.
 *
 *   reading ──end of input──► draining ──all written──► finished
 *      └──────script error──────┴──► failing ──earlier chunks done──► finished
 *   and from any phase but finished: cancelled, a stream error, a limit, a task that could not run
 *   ──► finished
 */
import type { PluginError } from '../contract/errors';

export type Phase =
  | { readonly name: 'reading' }
  | { readonly name: 'draining' }
  | { readonly name: 'failing'; readonly chunk: number; readonly error: PluginError }
  | { readonly name: 'finished' };

export type PhaseName = Phase['name'];

const NEXT: Readonly<Record<PhaseName, readonly PhaseName[]>> = {
  reading: ['draining', 'failing', 'finished'],
  draining: ['failing', 'finished'],
  // An earlier chunk's script error replaces a later one's.
  failing: ['failing', 'finished'],
  finished: [],
};

export class CallPhase {
  private phase: Phase = { name: 'reading' };

  get current(): Phase {
    return this.phase;
  }

  get name(): PhaseName {
    return this.phase.name;
  }

  /** Still taking rows and starting tasks (reading or draining). */
  get running(): boolean {
    return this.phase.name === 'reading' || this.phase.name === 'draining';
  }

  /** Throws on a transition NEXT does not list: a bug in the pipeline, never a client's doing. */
  moveTo(next: Phase): void {
    if (!NEXT[this.phase.name].includes(next.name)) throw new Error(`a call cannot go from ${this.phase.name} to ${next.name}`);
    this.phase = next;
  }
}
