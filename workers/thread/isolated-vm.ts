/**
 * isolated-vm, from the build that fits this Node (docs/operations.md "Node versions"). 5.0.4 builds for Node 20
 * and 22, 6.2.0 for Node 22 and 24; both are optional dependencies (6.2.0 under the name
 * isolated-vm-6), and npm leaves out the one that does not build here. Node 20 and 22 take 5.0.4, the
 * line the suite has run longest; Node 24 takes 6.2.0. Both have the same API (the same type file).
 */
import { createRequire } from 'node:module';
import { setFlagsFromString } from 'node:v8';

import type IsolatedVM from 'isolated-vm';

import { isolatedVmPackagesFor, NODE_MAJOR } from '../../src/contract/isolated-vm-package';

function load(): typeof IsolatedVM {
  const requireHere = createRequire(__filename);
  const failures: string[] = [];
  for (const name of isolatedVmPackagesFor(NODE_MAJOR)) {
    try {
      return requireHere(name) as typeof IsolatedVM;
    } catch (error) {
      failures.push(`${name}: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`);
    }
  }
  throw new Error(
    `no isolated-vm build loads on Node ${process.versions.node} (${failures.join('; ')}): see docs/operations.md "Node versions"`,
  );
}

/**
 * Resizable ArrayBuffers reserve address space outside every limit (workers/thread/isolate-runtime.ts
 * also takes the option away). V8 11 (Node 20) still has the flag that turns them off for isolates made
 * after it; where a later V8 dropped the flag, setting it does nothing.
 */
setFlagsFromString('--no-harmony-rab-gsab');

export const isolatedVm = load();
