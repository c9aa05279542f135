/**
 * The libraries bundled at build time (workers/libraries/build.ts writes dist/libraries/ and its
 * manifest). Read once at start; a file whose SHA-256 is not the manifest's, or a manifest that is
 * missing, stops the start: the build is incomplete or was changed by hand.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { ConfigError } from '../ops/config';

/** dist/libraries/, from dist/src/libraries/. */
const BUNDLED_DIR = path.resolve(__dirname, '..', '..', 'libraries');
/** Bundled with the libraries, never offered to require: console.log's formatter. */
export const INSPECTOR_NAME = 'object-inspect';

export interface BundledLibrary {
  readonly name: string;
  readonly version: string;
  readonly license: string;
  readonly sha256: string;
  readonly code: string;
}

interface ManifestEntry {
  readonly name: string;
  readonly version: string;
  readonly license: string;
  readonly file: string;
  readonly sha256: string;
}

export function readBundled(dir = BUNDLED_DIR): { libraries: BundledLibrary[]; inspector: string } {
  let manifest: ManifestEntry[];
  try {
    manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as ManifestEntry[];
  } catch (error) {
    throw new ConfigError(`the bundled libraries cannot be read from ${dir} (run npm run build): ${(error as Error).message}`);
  }
  const all = manifest.map((entry) => {
    const code = readFileSync(path.join(dir, path.basename(entry.file)), 'utf8');
    const sha256 = createHash('sha256').update(code).digest('hex');
    if (sha256 !== entry.sha256)
      throw new ConfigError(`the bundled library ${entry.file} is not the one built (SHA-256 differs): run npm run build`);
    return { name: entry.name, version: entry.version, license: entry.license, sha256, code };
  });
  const inspector = all.find((library) => library.name === INSPECTOR_NAME);
  if (!inspector) throw new ConfigError(`the bundled libraries lack ${INSPECTOR_NAME} (run npm run build)`);
  return { libraries: all.filter((library) => library !== inspector), inspector: inspector.code };
}
