/**
 * Which calls may use a sandbox context one after another: calls of the same app, by the same user,
 * of the same script (with the same parameter names bound). That is exactly the row-by-row SCALAR
 * calls of one LOAD (one user's reload of one app), and a chart's repeated calls for one user; charts
 * of different users, other apps and other scripts never share a context. Between two calls the
 * sandbox resets the global object (workers/thread/isolate-runtime.ts), so only changes a script makes to
 * built-ins (Array.prototype, Math…) can reach its own next call: see security.md.
 */
import { createHash } from 'node:crypto';

import type { ScriptSpec } from '../contract/task';

export function contextKey(common: { readonly appId: string; readonly userId: string }, spec: ScriptSpec): string {
  const hash = createHash('sha256');
  // Each part with its length first: ids are the client's text and may hold any character, so no
  // separator could keep ('a\0b', 'c') and ('a', 'b\0c') apart.
  for (const part of [
    common.appId,
    common.userId,
    spec.factory === true ? `factory ${spec.entry ?? ''}` : 'script',
    JSON.stringify(spec.boundNames),
    spec.script,
  ]) {
    const bytes = Buffer.from(part, 'utf8');
    hash.update(`${bytes.length}:`).update(bytes);
  }
  return hash.digest('base64url');
}
