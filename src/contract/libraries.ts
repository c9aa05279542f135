/**
 * The libraries scripts may `require`, as they travel from the front to a sandbox process: a
 * LIBRARIES frame on the channel (src/contract/channel.ts) at the process's start and after every
 * reload of SSE_LIBRARIES_DIR, never with a task. The front reads and checks the files
 * (src/libraries/); the sandbox compiles them once per isolate and evaluates one only when a script
 * first asks for it (workers/thread/libraries.ts). The console's object formatter travels with them.
 */
import { Frame, jsonFrame, parseJson } from './channel';
import { isRecord } from './control-frames';

export interface LibraryCode {
  /** What a script passes to require(). */
  readonly name: string;
  /** The body of a `function (module, exports, require)`: a CommonJS file or UMD bundle. */
  readonly code: string;
}

export interface LibraryBundle {
  /** In the order the start-up log lists them; empty with SSE_LIBRARIES=none and no folder. */
  readonly libraries: readonly LibraryCode[];
  /** object-inspect, bundled like a library but never offered to require: console.log's formatter. */
  readonly inspector: string;
}

/** A library name a script can write in require(): no path, no scope, nothing a prototype could mean. */
export const LIBRARY_NAME = /^[a-z0-9][a-z0-9._-]{0,127}$/i;

export function librariesFrame(bundle: LibraryBundle): Buffer {
  return jsonFrame(Frame.LIBRARIES, 0, bundle);
}

/** The sandbox's reading of a LIBRARIES frame; the front wrote it, but a malformed one is refused, not guessed at. */
export function readLibraryBundle(payload: Uint8Array): LibraryBundle {
  const value = parseJson(payload);
  if (!isRecord(value) || !Array.isArray(value['libraries']) || typeof value['inspector'] !== 'string')
    throw new Error('LIBRARIES frame without its libraries and inspector');
  const libraries = (value['libraries'] as unknown[]).map((entry) => {
    if (!isRecord(entry) || typeof entry['name'] !== 'string' || !LIBRARY_NAME.test(entry['name']) || typeof entry['code'] !== 'string')
      throw new Error('LIBRARIES frame with a malformed library');
    return { name: entry['name'], code: entry['code'] };
  });
  return { libraries, inspector: value['inspector'] };
}
