/**
 * Bundles the libraries scripts may `require` (and the console's object formatter) into single
 * CommonJS scripts the sandbox can evaluate, at build time (`npm run build` runs it after tsc): d3-array
 * and @noble/hashes are ES modules upstream, and the sandbox has no module loader. Each output is the
 * body of a `function (module, exports, require)`; esbuild resolves every import, so nothing is left
 * to load at run time. dist/libraries/manifest.json lists them with their version, licence and
 * SHA-256, which the front reads at start (src/libraries/bundled.ts) and logs.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { buildSync } from 'esbuild';

/** The repository's root, from dist/workers/libraries/. */
const ROOT = path.resolve(__dirname, '..', '..', '..');
const OUT_DIR = path.join(ROOT, 'dist', 'libraries');

interface Bundle {
  /** What a script passes to require(); 'object-inspect' is internal (the console's formatter). */
  readonly name: string;
  readonly entry: string;
  /** The npm package whose version and licence the manifest names. */
  readonly packageDir: string;
}

const BUNDLES: readonly Bundle[] = [
  npmBundle('simple-statistics'),
  npmBundle('date-fns'),
  npmBundle('d3-array'),
  { name: 'qlik', entry: path.join(ROOT, 'workers', 'libraries', 'qlik.ts'), packageDir: ROOT },
  npmBundle('object-inspect'),
];

export interface ManifestEntry {
  readonly name: string;
  readonly version: string;
  readonly license: string;
  readonly file: string;
  readonly sha256: string;
  readonly bytes: number;
}

function npmBundle(name: string): Bundle {
  const packageDir = path.join(ROOT, 'node_modules', name);
  return { name, entry: packageDir, packageDir };
}

function bundle({ name, entry, packageDir }: Bundle): ManifestEntry {
  const result = buildSync({
    entryPoints: [entry],
    bundle: true,
    write: false,
    format: 'cjs',
    // Browser: packages pick their build without Node APIs (object-inspect leaves out util.inspect).
    platform: 'browser',
    target: 'es2022',
    minify: true,
    legalComments: 'none',
    logLevel: 'error',
  });
  const code = result.outputFiles[0]?.text ?? '';
  const pkg = JSON.parse(readFileSync(path.join(packageDir, 'package.json'), 'utf8')) as { version: string; license: string };
  const file = `${name}.js`;
  writeFileSync(path.join(OUT_DIR, file), code);
  return {
    name,
    version: pkg.version,
    license: pkg.license,
    file,
    sha256: createHash('sha256').update(code).digest('hex'),
    bytes: Buffer.byteLength(code),
  };
}

function main(): void {
  mkdirSync(OUT_DIR, { recursive: true });
  const manifest = BUNDLES.map(bundle);
  writeFileSync(path.join(OUT_DIR, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
}

main();
