/** The connection limit is derived from the descriptor limit so that connections never take what sandbox spawns need. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { DEFAULT_MAX_CONNECTIONS, descriptorBudget, softDescriptorLimit } from '../../src/grpc/admission';
import { ConfigError } from '../../src/ops/config';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            400                  4096                 files
Max locked memory         8388608              8388608              bytes
`;

describe('descriptor budget', () => {
  it('reads the soft "Max open files" of /proc/self/limits', () => {
    assert.equal(softDescriptorLimit(LIMITS), 400);
    assert.equal(softDescriptorLimit(LIMITS.replace('400                  4096', 'unlimited            unlimited')), undefined);
    assert.equal(softDescriptorLimit(''), undefined);
  });

  it('keeps descriptors for the front, each sandbox process and the metrics endpoint; connections get the rest, up to the default', () => {
    const one = descriptorBudget(300, { sandboxProcesses: 1, metrics: false, maxConnections: undefined });
    const four = descriptorBudget(300, { sandboxProcesses: 4, metrics: true, maxConnections: undefined });
    assert.ok(four.reserved > one.reserved);
    assert.ok(one.maxConnections < DEFAULT_MAX_CONNECTIONS);
    assert.deepEqual(one, {
      descriptorLimit: 300,
      reserved: one.reserved,
      maxConnections: 300 - one.reserved,
      maxConnectionsPerHost: Math.ceil((300 - one.reserved) / 2),
    });
    assert.equal(four.maxConnections, 300 - four.reserved);
    assert.equal(
      descriptorBudget(1_048_576, { sandboxProcesses: 4, metrics: true, maxConnections: undefined }).maxConnections,
      DEFAULT_MAX_CONNECTIONS,
    );
    assert.equal(
      descriptorBudget(undefined, { sandboxProcesses: 1, metrics: false, maxConnections: undefined }).maxConnections,
      DEFAULT_MAX_CONNECTIONS,
    );
  });

  it('takes SSE_MAX_CONNECTIONS when it fits, and refuses it, naming both limits, when it does not', () => {
    const fits = descriptorBudget(400, { sandboxProcesses: 1, metrics: false, maxConnections: 100 });
    assert.equal(fits.maxConnections, 100);
    assert.throws(
      () => descriptorBudget(400, { sandboxProcesses: 1, metrics: false, maxConnections: 400 }),
      (error: unknown) =>
        error instanceof ConfigError &&
        /^SSE_MAX_CONNECTIONS=400 does not fit the descriptor limit: this process may open 400 files and keeps \d+ for itself and its sandbox processes, which leaves \d+ for connections; lower SSE_MAX_CONNECTIONS or raise the limit/.test(
          error.message,
        ),
    );
  });

  it('gives one host half the connections unless SSE_MAX_CONNECTIONS_PER_HOST says otherwise, never more than all', () => {
    const needs = { sandboxProcesses: 1, metrics: false, maxConnections: 100 };
    assert.equal(descriptorBudget(undefined, needs).maxConnectionsPerHost, 50);
    assert.equal(descriptorBudget(undefined, { ...needs, maxConnections: 5 }).maxConnectionsPerHost, 3);
    assert.equal(descriptorBudget(undefined, { ...needs, maxConnectionsPerHost: 10 }).maxConnectionsPerHost, 10);
    assert.equal(descriptorBudget(undefined, { ...needs, maxConnectionsPerHost: 1_000 }).maxConnectionsPerHost, 100);
  });

  it('refuses a descriptor limit that leaves almost nothing for connections', () => {
    assert.throws(
      () => descriptorBudget(80, { sandboxProcesses: 2, metrics: false, maxConnections: undefined }),
      (error: unknown) =>
        error instanceof ConfigError && /^the descriptor limit is too low: this process may open 80 files/.test(error.message),
    );
  });
});
