/**
 * How the library set reaches the sandbox threads: the process's main thread copies each LIBRARIES
 * frame (src/contract/libraries.ts) once into a SharedArrayBuffer of its own, and every task carries
 * that buffer (workers/thread-task.ts), which crosses to a thread without a copy. A thread reads the
 * code only when the version in the cell is not the one it has: once per set, not once per task.
 *
 * cell = u32 version | u32 payload bytes | payload (the frame's JSON)
 */
import { type LibraryBundle, readLibraryBundle } from '../src/contract/libraries';

const VERSION_AT = 0;
const LENGTH_AT = 4;
const PAYLOAD_AT = 8;

/** A new, never-changed cell for one set. */
export function libraryCell(payload: Uint8Array, version: number): SharedArrayBuffer {
  const cell = new SharedArrayBuffer(PAYLOAD_AT + payload.byteLength);
  const view = new DataView(cell);
  view.setUint32(VERSION_AT, version, true);
  view.setUint32(LENGTH_AT, payload.byteLength, true);
  new Uint8Array(cell, PAYLOAD_AT).set(payload);
  return cell;
}

/** The set in the cell when its version is not `knownVersion`; null when it is, or when there is no cell. */
export function readLibraryCell(cell: SharedArrayBuffer | null, knownVersion: number): { version: number; bundle: LibraryBundle } | null {
  if (cell === null) return null;
  const view = new DataView(cell);
  const version = view.getUint32(VERSION_AT, true);
  if (version === knownVersion) return null;
  // TextDecoder refuses shared memory: the payload is copied once.
  const payload = new Uint8Array(view.getUint32(LENGTH_AT, true));
  payload.set(new Uint8Array(cell, PAYLOAD_AT, payload.byteLength));
  return { version, bundle: readLibraryBundle(payload) };
}
