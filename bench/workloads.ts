/**
 * The bench's calls, encoded once before any clock starts. Request bundles are encoded with
 * protobufjs (test/helpers), independently of the plugin's own codec, and carry the real Qlik
 * headers. Each workload knows the value every reply row must hold, to check a timed run.
 */
import type * as grpc from '@grpc/grpc-js';

import { decodeMessage, messages } from '../src/grpc/proto';
import { DataType, type Dual, encodeBundle, FunctionType, scriptMetadata } from '../test/helpers/qlik-client';
import { countRows } from './wire';

export interface Workload {
  readonly name: string;
  readonly metadata: grpc.Metadata;
  readonly messages: readonly Buffer[];
  readonly rowsIn: number;
  readonly rowsOut: number;
  readonly requestBytes: number;
  /** The value reply row `row` must hold. */
  readonly expected: (row: number) => number | string;
}

interface Shape {
  readonly name: string;
  readonly script: string;
  readonly functionType: FunctionType;
  readonly returnType: DataType;
  readonly params: readonly DataType[];
  readonly rows: number;
  readonly rowsPerBundle: number;
  readonly row: (index: number) => Dual[];
  readonly rowsOut: number;
  readonly expected: (row: number) => number | string;
}

function build(shape: Shape): Workload {
  const bundles: Buffer[] = [];
  for (let first = 0; first < shape.rows; first += shape.rowsPerBundle) {
    const rows: Dual[][] = [];
    for (let i = first; i < Math.min(shape.rows, first + shape.rowsPerBundle); i++) rows.push(shape.row(i));
    bundles.push(encodeBundle(rows));
  }
  const metadata = scriptMetadata({
    script: shape.script,
    functionType: shape.functionType,
    returnType: shape.returnType,
    params: shape.params.map((dataType) => ({ dataType })),
    common: { appId: 'bench-app', userId: 'UserDirectory=BENCH; UserId=bench', cardinality: shape.rows },
  });
  return {
    name: shape.name,
    metadata,
    messages: bundles,
    rowsIn: shape.rows,
    rowsOut: shape.rowsOut,
    requestBytes: bundles.reduce((sum, b) => sum + b.length, 0),
    expected: shape.expected,
  };
}

const second = (i: number): number => (i % 1000) * 0.5;

/** `args[0] * 2 + args[1]` over two NUMERIC columns (ScriptEval in a chart). */
export function numericWorkload(rows: number, rowsPerBundle: number): Workload {
  return build({
    name: `numeric ${rows} rows x 2 cols`,
    script: 'args[0] * 2 + args[1]',
    functionType: FunctionType.TENSOR,
    returnType: DataType.NUMERIC,
    params: [DataType.NUMERIC, DataType.NUMERIC],
    rows,
    rowsPerBundle,
    row: (i) => [{ numData: i }, { numData: second(i) }],
    rowsOut: rows,
    expected: (i) => i * 2 + second(i),
  });
}

/** `args[0] * 2` over one NUMERIC row, as Qlik calls ScriptEval in a regular LOAD: once per row. */
export function scalarWorkload(): Workload {
  return build({
    name: '1-row SCALAR',
    script: 'args[0] * 2',
    functionType: FunctionType.SCALAR,
    returnType: DataType.NUMERIC,
    params: [DataType.NUMERIC],
    rows: 1,
    rowsPerBundle: 1,
    row: () => [{ numData: 21 }],
    rowsOut: 1,
    expected: () => 42,
  });
}

const text = (i: number): string => `qlik row ${i} abc`;

/** `args[0].toUpperCase()` over one STRING column (ScriptEvalStr). ASCII: same length back. */
export function stringWorkload(rows: number, rowsPerBundle: number): Workload {
  return build({
    name: `string ${rows} rows x 1 col`,
    script: 'args[0].toUpperCase()',
    functionType: FunctionType.TENSOR,
    returnType: DataType.STRING,
    params: [DataType.STRING],
    rows,
    rowsPerBundle,
    row: (i) => [{ strData: text(i) }],
    rowsOut: rows,
    expected: (i) => text(i).toUpperCase(),
  });
}

/** ScriptAggr sum: the script runs once over every row of the call. */
export function aggregateWorkload(rows: number, rowsPerBundle: number): Workload {
  let sum = 0;
  for (let i = 0; i < rows; i++) sum += i % 1000;
  return build({
    name: `ScriptAggr sum ${rows} rows`,
    script: 'args[0].reduce((s, v) => s + v, 0)',
    functionType: FunctionType.AGGREGATION,
    returnType: DataType.NUMERIC,
    params: [DataType.NUMERIC],
    rows,
    rowsPerBundle,
    row: (i) => [{ numData: i % 1000 }],
    rowsOut: 1,
    expected: () => sum,
  });
}

/** A per-row loop of Math.sin: script time dominates, so it shows how work spreads over workers. */
export function cpuHeavyWorkload(rows: number, rowsPerBundle: number, sinesPerRow: number): Workload {
  const cost = (x: number): number => {
    let s = 0;
    for (let k = 0; k < sinesPerRow; k++) s += Math.sin(x + k);
    return s;
  };
  return build({
    name: `cpu-heavy ${rows} rows x ${sinesPerRow} Math.sin`,
    script: `let s = 0; for (let k = 0; k < ${sinesPerRow}; k++) s += Math.sin(args[0] + k); return s;`,
    functionType: FunctionType.TENSOR,
    returnType: DataType.NUMERIC,
    params: [DataType.NUMERIC],
    rows,
    rowsPerBundle,
    row: (i) => [{ numData: i }],
    rowsOut: rows,
    expected: cost,
  });
}

function sameValue(got: number | string | undefined, want: number | string): boolean {
  if (typeof want === 'string' || typeof got !== 'number') return got === want;
  return Math.abs(got - want) <= 1e-9 * Math.max(1, Math.abs(want));
}

/**
 * Checks a reply: its row count, and every value of its first, middle and last reply message,
 * decoded with protobufjs. Returns how many values were checked; throws on the first wrong one.
 */
export function verifyReplies(workload: Workload, replies: readonly Buffer[]): number {
  const firstRowOf: number[] = [];
  let rows = 0;
  for (const reply of replies) {
    firstRowOf.push(rows);
    rows += countRows(reply);
  }
  if (rows !== workload.rowsOut) throw new Error(`${workload.name}: ${rows} rows back, expected ${workload.rowsOut}`);
  let checked = 0;
  for (const index of new Set([0, Math.floor(replies.length / 2), replies.length - 1])) {
    const reply = replies[index];
    if (reply === undefined) continue;
    const decoded = decodeMessage(messages.BundledRows, reply) as { rows: { duals: Dual[] }[] };
    decoded.rows.forEach((row, i) => {
      const at = (firstRowOf[index] as number) + i;
      const dual = row.duals[0];
      const want = workload.expected(at);
      const got = typeof want === 'string' ? dual?.strData : dual?.numData;
      if (!sameValue(got, want)) throw new Error(`${workload.name}: row ${at} is ${String(got)}, expected ${String(want)}`);
      checked++;
    });
  }
  return checked;
}
