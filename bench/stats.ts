/** Small numeric helpers and formatting for the bench report. */

/** Nearest-rank percentile (p in 0..100) of unsorted values. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1] as number;
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

export interface Latency {
  readonly p50Ms: number;
  readonly p95Ms: number;
  readonly p99Ms: number;
}

export function latency(valuesMs: readonly number[]): Latency {
  return { p50Ms: percentile(valuesMs, 50), p95Ms: percentile(valuesMs, 95), p99Ms: percentile(valuesMs, 99) };
}

export function mb(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export function rate(rowsPerSec: number): string {
  return rowsPerSec >= 1e6 ? `${(rowsPerSec / 1e6).toFixed(2)} M rows/s` : `${(rowsPerSec / 1e3).toFixed(1)} k rows/s`;
}

export function ms(value: number): string {
  return `${value.toFixed(value < 10 ? 3 : 1)} ms`;
}

export function ratio(value: number): string {
  return value.toFixed(2);
}
