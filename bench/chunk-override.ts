/**
 * Experiment only, never in production: preloaded into the plugin (`node -r`) by
 * bench/experiment.ts to replace CHUNK_BYTES from BENCH_CHUNK_BYTES without editing src/. The
 * handler reads `exports.CHUNK_BYTES` at each call, so setting the export is enough.
 */
import path from 'node:path';
import { isMainThread } from 'node:worker_threads';

const chunkBytes = Number(process.env['BENCH_CHUNK_BYTES'] ?? '');
const isPluginMain = isMainThread && path.basename(process.argv[1] ?? '') === 'main.js';

if (isPluginMain && chunkBytes > 0) {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- must patch the loaded module object
  const handler = require('../src/evaluate-script') as { CHUNK_BYTES?: number };
  if (typeof handler.CHUNK_BYTES !== 'number') throw new Error('src/evaluate-script no longer exports CHUNK_BYTES; the experiment cannot set it');
  handler.CHUNK_BYTES = chunkBytes;
}
