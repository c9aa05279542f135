/**
 * What the front derives from a ScriptEval call's headers, kept for headers seen again. In a LOAD,
 * Qlik calls once per row with the same two headers every time, and decoding them (protobuf), checking
 * them and hashing them (the context key, the script's hash for the log) was about a tenth of the
 * front's time per one-row call (bench/RESULTS.md). Here the second and later calls with the same
 * header bytes get the same frozen result at once.
 *
 * The key is the exact bytes of both headers (each with its length first), so a hit can only ever
 * return what decoding those bytes returns: no call sees another app's, user's or script's result.
 * Headers that do not decode are not kept (each such call gets its own INVALID_ARGUMENT). Bounded:
 * at most MAX_ENTRIES results, least recently used first out, and only for headers up to
 * MAX_KEPT_HEADER_BYTES together (a larger script is decoded per call, as before).
 */
import { createHash } from 'node:crypto';

import type { Metadata } from '@grpc/grpc-js';

import { contextKey } from './context-key';
import { lacksReturn } from './missing-return';
import { COMMON_HEADER, readScriptCall, SCRIPT_HEADER, type ScriptCall } from './request-header';

export interface PreparedScript {
  readonly call: ScriptCall;
  /** Which calls may share a sandbox context (src/calls/context-key.ts). */
  readonly contextKey: string;
  /** The first 16 hex digits of the script's SHA-256, for the call's log line. */
  readonly scriptHash: string;
  /** A function body without `return` (src/calls/missing-return.ts); checked only when asked, for the debug log. */
  readonly lacksReturn: boolean;
}

const MAX_ENTRIES = 256;
const MAX_KEPT_HEADER_BYTES = 16 * 1024;

export function scriptHash(script: string): string {
  return createHash('sha256').update(script).digest('hex').slice(0, 16);
}

export class PreparedScripts {
  private readonly entries = new Map<string, PreparedScript>();

  constructor(
    private readonly maxScriptBytes: number,
    /** Parse each new script with acorn to tell a body without return (only when the debug log is on). */
    private readonly checkReturn = false,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  /** The call's script, spec and keys; throws the PluginError readScriptCall throws. */
  prepare(metadata: Metadata): PreparedScript {
    const key = headersKey(metadata);
    const kept = key === undefined ? undefined : this.entries.get(key);
    if (kept !== undefined && key !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, kept);
      return kept;
    }
    const call = readScriptCall(metadata, this.maxScriptBytes);
    const prepared: PreparedScript = deepFreeze({
      call,
      contextKey: contextKey(call.common, call.spec),
      scriptHash: scriptHash(call.spec.script),
      lacksReturn: this.checkReturn && lacksReturn(call.spec.script),
    });
    if (key !== undefined) {
      this.entries.set(key, prepared);
      if (this.entries.size > MAX_ENTRIES) this.entries.delete(this.entries.keys().next().value as string);
    }
    return prepared;
  }
}

/** Both headers' bytes, each length-prefixed (-1 when absent); undefined when they are too large to keep. */
function headersKey(metadata: Metadata): string | undefined {
  let key = '';
  let bytes = 0;
  for (const name of [SCRIPT_HEADER, COMMON_HEADER]) {
    const values = metadata.get(name);
    const value = values[0];
    if (values.length > 1 || (value !== undefined && !Buffer.isBuffer(value))) return undefined;
    if (value === undefined) {
      key += '-1:';
      continue;
    }
    bytes += value.length;
    if (bytes > MAX_KEPT_HEADER_BYTES) return undefined;
    key += `${value.length}:${value.toString('latin1')}`;
  }
  return key;
}

/** A kept result is shared by every call with those headers: nothing may change it. */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
