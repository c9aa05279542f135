/**
 * What a sandbox thread spends on bulk tasks, without processes or threads around it: one
 * TaskEvaluator (as a pool thread owns) runs the bench's string or numeric workload in tasks of one
 * request message each, in this process, and prints CPU time per round. With BENCH_BASELINE, the same
 * tasks run on another built checkout's evaluator in turn, so the two are compared in one run.
 *
 *   npm run build
 *   node --no-node-snapshot dist/bench/experiments/task-cpu.js [string|numeric|scalar] [rounds]
 *   BENCH_BASELINE=/path/to/checkout node --no-node-snapshot dist/bench/experiments/task-cpu.js string 12
 */
import path from 'node:path';

import { DataType, type ScriptSpec } from '../../src/contract/task';
import { encodeBundle } from '../../test/helpers/qlik-client';
import type { TaskInput } from '../../workers/thread/task-evaluator';
import { benchSizes } from '../sizes';

interface Evaluator {
  warmUp(): void;
  run(task: TaskInput, timeoutMs: number): { ok: boolean };
}

function evaluatorFrom(root: string): Evaluator {
  const { TaskEvaluator } = require(path.join(root, 'dist/workers/thread/task-evaluator.js')) as {
    TaskEvaluator: new (limits: object, onFatal: (m: string) => void, activity: object) => Evaluator;
  };
  const evaluator = new TaskEvaluator({ memoryLimitMb: 128, scriptTimeoutMs: 5_000 }, () => undefined, {
    enter: () => undefined,
    leave: () => undefined,
  });
  evaluator.warmUp();
  return evaluator;
}

function main(): void {
  const kind = process.argv[2] ?? 'string';
  const rounds = Number(process.argv[3] ?? '8');
  const sizes = benchSizes();
  // scalar: the LOAD pattern, one row a task (and a call), 5,000 of them.
  const rows = kind === 'string' ? sizes.stringRows : kind === 'scalar' ? 5_000 : sizes.numericRows;
  const perTask = kind === 'scalar' ? 1 : sizes.rowsPerBundle;
  const spec: ScriptSpec =
    kind === 'string'
      ? {
          script: 'args[0].toUpperCase()',
          paramTypes: [DataType.STRING],
          boundNames: [''],
          returnType: DataType.STRING,
          mode: 'rows',
          tableAllowed: true,
        }
      : {
          script: 'args[0] * 2 + args[1]',
          paramTypes: [DataType.NUMERIC, DataType.NUMERIC],
          boundNames: ['', ''],
          returnType: DataType.NUMERIC,
          mode: 'rows',
          tableAllowed: true,
        };
  const bundles: Uint8Array[] = [];
  for (let first = 0; first < rows; first += perTask) {
    const batch = [];
    for (let i = first; i < Math.min(rows, first + perTask); i++)
      batch.push(kind === 'string' ? [{ strData: `qlik row ${i} abc` }] : [{ numData: i }, { numData: 1 }]);
    bundles.push(encodeBundle(batch));
  }
  const evaluators: [string, Evaluator][] = [['this checkout', evaluatorFrom(path.resolve(__dirname, '../../..'))]];
  const baseline = process.env['BENCH_BASELINE'];
  if (baseline) evaluators.push([path.basename(baseline), evaluatorFrom(baseline)]);
  const cpu = new Map<string, number[]>(evaluators.map(([name]) => [name, []]));
  for (let round = 0; round < rounds; round++) {
    for (const [name, evaluator] of evaluators) {
      const before = process.cpuUsage();
      bundles.forEach((bundle, i) => {
        const task = {
          // A LOAD's rows are each a call of their own: a new call id each task, so each resets its context.
          callId: kind === 'scalar' ? round * bundles.length + i + 1 : round + 1,
          contextKey: 'k',
          spec,
          bundles: [bundle],
          rows: Math.min(perTask, rows - i * perTask),
          firstRow: i * perTask,
          maxReplyBytes: 4 << 20,
          libraries: null,
        };
        if (!evaluator.run(task, 5_000).ok) throw new Error(`${name}: a task failed`);
      });
      const used = process.cpuUsage(before);
      cpu.get(name)?.push((used.user + used.system) / 1000);
    }
  }
  for (const [name, values] of cpu) {
    const sorted = [...values].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)] ?? 0;
    const perTaskUs = (cpuMs: number): string => ((cpuMs * 1000) / bundles.length).toFixed(1);
    process.stdout.write(
      `${name}: ${kind} ${rows} rows in tasks of ${perTask}: CPU min ${sorted[0]?.toFixed(0)} ms, median ${median.toFixed(0)} ms (${rounds} rounds); a task: min ${perTaskUs(sorted[0] ?? 0)} µs, median ${perTaskUs(median)} µs\n`,
    );
  }
}

main();
