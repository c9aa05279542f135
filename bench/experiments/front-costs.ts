/**
 * What the front spends per call on its own bookkeeping: header decode, the
 * request id, the context key and script hash, the per-call log line and the metrics. Each is run
 * in a loop on this thread and reported in microseconds a call.
 * `node dist/bench/experiments/front-costs.js`
 */
import { createHash, randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';

import { contextKey } from '../../src/calls/context-key';
import { readScriptCall } from '../../src/calls/request-header';
import { createLogger } from '../../src/ops/log';
import { Metrics } from '../../src/ops/metrics';
import { DataType, FunctionType, scriptMetadata } from '../../test/helpers/qlik-client';

const ROUNDS = 20_000;

function micros(name: string, body: () => unknown): void {
  for (let i = 0; i < 2_000; i++) body();
  const started = performance.now();
  for (let i = 0; i < ROUNDS; i++) body();
  process.stdout.write(`${name.padEnd(42)} ${(((performance.now() - started) * 1000) / ROUNDS).toFixed(2)} µs\n`);
}

const metadata = scriptMetadata({
  script: 'args[0] * 2',
  functionType: FunctionType.SCALAR,
  returnType: DataType.NUMERIC,
  params: [{ dataType: DataType.NUMERIC, name: 'Sales' }],
  common: { appId: 'a1b2c3d4-app', userId: 'UserDirectory=CORP; UserId=someone', cardinality: 1 },
});
const call = readScriptCall(metadata, 32_768);
// A sink that takes every line, as a fast log destination would (the write itself is the OS's business).
const sink = new Writable({ write: (_chunk, _encoding, done) => done() });
const logger = createLogger('info', sink);
const metrics = new Metrics({
  queueSize: 0,
  busyWorkers: 0,
  threads: 2,
  residentBytes: () => [],
  retirements: 0,
  processes: () => [],
  spareProcesses: () => [],
});

micros('read script + common headers', () => readScriptCall(metadata, 32_768));
micros('request id (randomUUID)', () => randomUUID());
micros('context key (sha256 of app, user, script)', () => contextKey(call.common, call.spec));
micros('script hash for the log (sha256)', () => createHash('sha256').update(call.spec.script).digest('hex').slice(0, 16));
micros('call log line (pino, JSON)', () =>
  logger.info(
    {
      requestId: 'x',
      appId: call.common.appId,
      userId: call.common.userId,
      function: call.functionName,
      rowsIn: 1,
      rowsOut: 1,
      durationMs: 1.234,
      status: 'OK',
    },
    'EvaluateScript',
  ),
);
micros('metrics (counter, histogram, rows)', () => {
  metrics.calls.inc({ function: call.functionName, status: 'OK' });
  metrics.duration.observe({ function: call.functionName }, 0.001);
  metrics.rowsIn.inc(1);
  metrics.rowsOut.inc(1);
});
