/** Workload sizes: the full ones by default, a tenth with BENCH_QUICK=1 for iterating. */

export interface Sizes {
  readonly quick: boolean;
  readonly rowsPerBundle: number;
  readonly reps: number;
  readonly numericRows: number;
  readonly stringRows: number;
  readonly aggregateRows: number;
  readonly smallCallRows: number;
  readonly smallCalls: number;
  readonly smallWarmupCalls: number;
  /** Sequential 1-row SCALAR calls (the LOAD pattern), and the same from several clients at once. */
  readonly scalarCalls: number;
  readonly scalarClients: number;
  readonly scalarCallsPerClient: number;
  readonly clients: number;
  readonly callsPerClient: number;
  readonly clientCallRows: number;
  readonly cpuRows: number;
  readonly sinesPerRow: number;
  readonly soakCalls: number;
  readonly soakRows: number;
  readonly soakWarmupCalls: number;
}

export function benchSizes(env: NodeJS.ProcessEnv = process.env): Sizes {
  const quick = env['BENCH_QUICK'] === '1';
  const full = (rows: number): number => (quick ? rows / 10 : rows);
  return {
    quick,
    // Qlik sends a few thousand rows per BundledRows message.
    rowsPerBundle: 2_000,
    reps: quick ? 1 : 5,
    numericRows: full(1_000_000),
    stringRows: full(500_000),
    aggregateRows: full(1_000_000),
    smallCallRows: 10,
    smallCalls: quick ? 100 : 500,
    smallWarmupCalls: 50,
    scalarCalls: quick ? 200 : 1_000,
    scalarClients: 4,
    scalarCallsPerClient: quick ? 100 : 500,
    clients: 16,
    callsPerClient: quick ? 3 : 20,
    clientCallRows: 10_000,
    cpuRows: quick ? 50_000 : 200_000,
    sinesPerRow: 500,
    soakCalls: quick ? 100 : 1_000,
    soakRows: 10_000,
    soakWarmupCalls: quick ? 20 : 100,
  };
}
