/**
 * Metrics that follow from another are derived, not counted twice (src/ops/metrics.ts): an isolate
 * is rebuilt after each memory-limit disposal, so sse_isolate_rebuilds_total reads
 * sse_memory_limit_disposals_total when scraped and the two cannot disagree. Pure: the registry is
 * read in memory, no HTTP server.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Metrics } from '../../src/ops/metrics';

const pool = {
  queueSize: 0,
  busyWorkers: 0,
  threads: 0,
  residentBytes: () => [],
  retirements: 0,
  processes: () => [{ state: 'ready' }],
  spareProcesses: () => [{ state: 'starting' }],
};

async function value(metrics: Metrics, name: string): Promise<number | undefined> {
  const metric = metrics.registry.getSingleMetric(name);
  return (await metric?.get())?.values[0]?.value;
}

describe('Metrics', () => {
  it('reads sse_isolate_rebuilds_total from the disposals counted once', async () => {
    const metrics = new Metrics(pool);
    assert.equal(await value(metrics, 'sse_isolate_rebuilds_total'), 0);
    metrics.memoryDisposals.inc(2);
    metrics.memoryDisposals.inc();
    assert.equal(await value(metrics, 'sse_memory_limit_disposals_total'), 3);
    assert.equal(await value(metrics, 'sse_isolate_rebuilds_total'), 3);
    const text = await metrics.registry.metrics();
    assert.match(text, /^# TYPE sse_isolate_rebuilds_total counter$/m);
    assert.match(text, /^sse_isolate_rebuilds_total 3$/m);
    assert.equal('isolateRebuilds' in metrics, false, 'nothing to increment a second time');
  });

  it('counts the chunks sandbox threads answered by route', async () => {
    const text = await new Metrics({ ...pool, tasksByRoute: { main: 5, pool: 3, moved: 1 } }).registry.metrics();
    assert.match(text, /^sse_sandbox_tasks_total\{route="main"\} 5$/m);
    assert.match(text, /^sse_sandbox_tasks_total\{route="pool"\} 3$/m);
    assert.match(text, /^sse_sandbox_tasks_total\{route="moved"\} 1$/m);
  });

  it('counts the sandbox processes by role and state, the spare apart from the slots', async () => {
    const text = await new Metrics(pool).registry.metrics();
    assert.match(text, /^sse_sandbox_processes\{role="slot",state="ready"\} 1$/m);
    assert.match(text, /^sse_sandbox_processes\{role="spare",state="starting"\} 1$/m);
  });
});
