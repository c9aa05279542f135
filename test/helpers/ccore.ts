/**
 * Runs test/fixtures/ccore_client.py: a gRPC C-core client (Debian's python3-grpcio), the core Qlik's
 * engine uses, whose limits differ from grpc-js's (header sizes, metadata size). Without
 * python3-grpcio the C-core cases are skipped, loudly (.ci/run installs it).
 */
import { execFile, spawnSync } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

const PYTHON = '/usr/bin/python3';
const CCORE_CLIENT = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'ccore_client.py');

export const hasCcore = spawnSync(PYTHON, ['-c', 'import grpc']).status === 0;
export const NO_CCORE = !hasCcore && 'python3-grpcio is not installed';

export interface CcoreOutcome {
  readonly code: string;
  readonly details: string;
  readonly ms: number;
  readonly rows: number;
  readonly table_header_bytes: number;
}

/**
 * One ScriptEval call with one row X=1: a script of `scriptBytes` bytes, or `script` when given.
 * tlsDir: mutual TLS with the engine's files of Qlik's guide in that folder.
 */
export async function ccoreCall(
  port: number,
  scriptBytes: number,
  deadlineS: number,
  script?: string,
  tlsDir?: string,
): Promise<CcoreOutcome> {
  const args = [CCORE_CLIENT, String(port), String(scriptBytes), String(deadlineS), ...(script === undefined ? [] : [script])];
  const env = tlsDir === undefined ? process.env : { ...process.env, CCORE_TLS_DIR: tlsDir };
  const { stdout } = await promisify(execFile)(PYTHON, args, { timeout: 30_000, env });
  return JSON.parse(stdout) as CcoreOutcome;
}
